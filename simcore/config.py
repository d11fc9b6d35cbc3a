"""The one validated input of a simulation: :class:`SimConfig` and its parts.

All models are frozen and forbid unknown keys. Models and GPUs are given by catalog name
(``model: Llama-3.1-8B``), by name with overrides (``gpu: {name: H100-SXM-80GB, memory_gib: 40}``)
or inline with every field. Derived values (KV bytes per token, weight bytes) are properties.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from simcore import catalog
from simcore.dists import Constant, Dist, LogNormal, coerce_dist

_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def _from_catalog(value: Any, table: dict[str, dict[str, Any]], what: str) -> Any:
    """Resolve ``"name"`` or ``{"name": ..., overrides}`` against a catalog table."""
    if isinstance(value, str):
        value = {"name": value}
    if isinstance(value, dict) and "name" in value:
        name = value["name"]
        if name in table:
            return {"name": name, **table[name], **value}
        if len(value) == 1:
            known = ", ".join(sorted(table))
            lower = {known_name.lower(): known_name for known_name in table}
            close = difflib.get_close_matches(str(name).lower(), list(lower), n=1, cutoff=0.85)
            hint = f"did you mean {lower[close[0]]}? Or " if close else ""
            raise ValueError(f"unknown {what} {name!r}: {hint}use one of {known}, or give every field inline")
    return value


class ModelSpec(BaseModel):
    """A decoder-only transformer. Units: counts; ``dtype_bytes`` per weight and KV element."""

    model_config = _FROZEN
    name: str = "custom"
    num_layers: PositiveInt
    hidden_size: PositiveInt
    num_attention_heads: PositiveInt
    num_kv_heads: PositiveInt
    head_dim: PositiveInt
    num_params: PositiveFloat
    max_context: PositiveInt
    dtype_bytes: PositiveInt = 2

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, value: Any) -> Any:
        return _from_catalog(value, catalog.models(), "model")

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V for every layer and KV head, in bytes, on one GPU without tensor parallelism."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes

    @property
    def weight_bytes(self) -> float:
        return self.num_params * self.dtype_bytes


class GpuSpec(BaseModel):
    """One accelerator. ``flops`` dense BF16 FLOP/s; bandwidths in bytes/s; memory in GiB."""

    model_config = _FROZEN
    name: str = "custom"
    flops: PositiveFloat
    hbm_bandwidth: PositiveFloat
    memory_gib: PositiveFloat
    interconnect_bandwidth: PositiveFloat = 900e9

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, value: Any) -> Any:
        return _from_catalog(value, catalog.gpus(), "gpu")

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * 2**30


class CostParams(BaseModel):
    """Named knobs of the roofline step-time model (see ``costmodel.py``)."""

    model_config = _FROZEN
    compute_efficiency: float = Field(default=0.6, gt=0, le=1, description="achieved / peak FLOP/s")
    bandwidth_efficiency: float = Field(default=0.8, gt=0, le=1, description="achieved / peak HBM B/s")
    interconnect_efficiency: float = Field(default=0.7, gt=0, le=1)
    step_overhead_s: NonNegativeFloat = Field(default=0.003, description="scheduler + launch, per step")
    per_seq_overhead_s: NonNegativeFloat = Field(default=2e-5, description="per sequence per step")
    allreduce_latency_s: NonNegativeFloat = Field(default=8e-6, description="per all-reduce call")


class EngineConfig(BaseModel):
    """vLLM-style serving engine settings."""

    model_config = _FROZEN
    tensor_parallel: PositiveInt = 1
    block_size: PositiveInt = 16
    max_num_seqs: PositiveInt = 256
    max_num_batched_tokens: PositiveInt = 8192
    prefix_caching: Literal["off", "session", "prefix"] = "prefix"
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    activation_reserve_gib: NonNegativeFloat = Field(default=2.0, description="per GPU, not for KV")
    kv_budget_gib: PositiveFloat | None = Field(
        default=None, description="explicit KV cache size (all GPUs together); overrides the derivation"
    )
    cost: CostParams = CostParams()

    @field_validator("prefix_caching", mode="before")
    @classmethod
    def _bool_alias(cls, value: Any) -> Any:
        # YAML reads a bare `off` as False: accept it. A bare `on` (True) is refused: it could
        # mean `session` or `prefix`, and a silent choice would answer another question.
        if value is False:
            return "off"
        if value is True or (isinstance(value, str) and value.lower() in ("on", "true", "yes")):
            raise ValueError("ambiguous (session or prefix?): use one of 'off', 'session', 'prefix'"
                             " (prefix: vLLM's automatic prefix caching)")
        return value


TokenDist = Annotated[Dist, Field()]


class Profile(BaseModel):
    """The shape of one kind of conversation (or of one-shot requests when ``sessionless``)."""

    model_config = _FROZEN
    system_prompts: PositiveInt = Field(default=8, description="size of the shared system-prompt pool")
    system_prompt_tokens: Dist = Constant(value=1000)
    turns: Dist = Constant(value=1)
    user_tokens: Dist = LogNormal(mean=200)
    output_tokens: Dist = LogNormal(mean=250, max=1024)
    think_time_s: Dist = Constant(value=0)
    sessionless: bool = Field(default=False, description="requests carry no session id (API calls)")

    @field_validator(
        "system_prompt_tokens", "turns", "user_tokens", "output_tokens", "think_time_s", mode="before"
    )
    @classmethod
    def _coerce(cls, value: Any) -> Any:
        return coerce_dist(value)

    @field_validator("user_tokens", "output_tokens", "turns")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if value.lower_bound() <= 0:
            raise ValueError(
                f"can produce {value.lower_bound():g}; lengths must be positive: raise it or set min: 1"
            )
        return value

    @field_validator("system_prompt_tokens", "think_time_s")
    @classmethod
    def _non_negative(cls, value: Any) -> Any:
        if value.lower_bound() < 0:
            raise ValueError(f"can produce {value.lower_bound():g}; must be >= 0: set min: 0")
        return value


class ChatWorkload(Profile):
    """Closed loop: ``users`` concurrent users, each running sessions back to back."""

    kind: Literal["chat"] = "chat"
    users: PositiveInt = Field(default=64, le=1_000_000, description="concurrent users (SimPy processes)")


class PoissonWorkload(Profile):
    """Open loop: sessions start as a Poisson process of ``session_rate`` per second."""

    kind: Literal["poisson"] = "poisson"
    session_rate: PositiveFloat = 1.0


class ApiWorkload(BaseModel):
    """Open loop one-shot requests (no session) at ``request_rate`` per second."""

    model_config = _FROZEN
    kind: Literal["api"] = "api"
    request_rate: PositiveFloat = 1.0
    system_prompts: PositiveInt = 8
    system_prompt_tokens: Dist = Constant(value=0)
    prompt_tokens: Dist = LogNormal(mean=500)
    output_tokens: Dist = LogNormal(mean=250, max=1024)

    _coerce = field_validator("system_prompt_tokens", "prompt_tokens", "output_tokens", mode="before")(
        Profile._coerce.__func__  # type: ignore[attr-defined]
    )

    def as_profile(self) -> Profile:
        return Profile(
            system_prompts=self.system_prompts,
            system_prompt_tokens=self.system_prompt_tokens,
            turns=Constant(value=1),
            user_tokens=self.prompt_tokens,
            output_tokens=self.output_tokens,
            sessionless=True,
        )


class WeightedProfile(Profile):
    weight: PositiveFloat = 1.0
    name: str = ""


class MixWorkload(BaseModel):
    """Weighted profiles under one arrival process: ``users`` (closed) or ``session_rate`` (open)."""

    model_config = _FROZEN
    kind: Literal["mix"] = "mix"
    users: PositiveInt | None = Field(default=None, le=1_000_000)
    session_rate: PositiveFloat | None = None
    profiles: list[WeightedProfile] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_arrival(self) -> MixWorkload:
        if (self.users is None) == (self.session_rate is None):
            raise ValueError("give exactly one of users (closed loop) or session_rate (open loop)")
        return self


class TraceWorkload(BaseModel):
    """Replay a request trace (Mooncake JSONL or Azure CSV) with its arrival times."""

    model_config = _FROZEN
    kind: Literal["trace"] = "trace"
    path: str
    format: Literal["auto", "mooncake", "azure"] = "auto"
    time_scale: PositiveFloat = Field(default=1.0, description="multiply trace timestamps by this")
    limit: PositiveInt | None = Field(default=None, description="use only the first N requests")
    trace_block_tokens: PositiveInt = Field(default=512, description="tokens per Mooncake hash id")


Workload = Annotated[
    Union[ChatWorkload, PoissonWorkload, ApiWorkload, MixWorkload, TraceWorkload],
    Field(discriminator="kind"),
]


class RunConfig(BaseModel):
    """How long to run and what to record. Arrivals stop at ``num_requests`` submitted or at
    ``duration_s``, whichever comes first; requests in flight then drain to completion."""

    model_config = _FROZEN
    seed: int = Field(default=0, ge=0, lt=2**63)
    num_requests: PositiveInt | None = Field(default=2000, le=10**9)
    duration_s: PositiveFloat | None = None
    warmup_s: NonNegativeFloat = Field(
        default=0.0, description="requests arriving earlier are left out of latency figures"
    )
    record_requests: bool = False
    mode: Literal["fast", "reference"] = Field(
        default="fast", description="fast: closed-form decode runs; reference: one engine step at a time"
    )

    @model_validator(mode="after")
    def _some_end(self) -> RunConfig:
        if self.num_requests is None and self.duration_s is None:
            raise ValueError("give num_requests or duration_s (or both) so the run ends")
        return self


class SimConfig(BaseModel):
    """Everything one simulation needs. ``simulate(cfg)`` is a pure function of it."""

    model_config = _FROZEN
    model: ModelSpec
    gpu: GpuSpec
    engine: EngineConfig = EngineConfig()
    workload: Workload = ChatWorkload()
    run: RunConfig = RunConfig()

    @field_validator("workload", mode="before")
    @classmethod
    def _chat_by_default(cls, value: Any) -> Any:
        # The default workload is chat, so `workload: {users: 32}` means a chat workload too.
        if isinstance(value, dict) and "kind" not in value:
            return {"kind": "chat", **value}
        return value
