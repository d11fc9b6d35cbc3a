"""The one validated input of a simulation: :class:`SimConfig` and its parts.

All models are frozen and forbid unknown keys. Models and GPUs are given by catalog name
(``model: Llama-3.1-8B``), by name with overrides (``gpu: {name: H100-SXM-80GB, memory_gib: 40}``)
or inline with every field. Derived values (KV bytes per token, weight bytes) are properties.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

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
            raise ValueError(f"unknown {what} {name!r}: use one of {known}, or give every field inline")
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
    max_model_len: PositiveInt | None = Field(
        default=None, description="vLLM's --max-model-len: longest request (prompt + output) served;"
        " default the model's context. The KV cache must hold one request of this length"
    )
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
        # YAML reads a bare `off` as False; accept it (and `on` / True as `prefix`).
        if value is False:
            return "off"
        if value is True:
            return "prefix"
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

    # whether arrivals come regardless of completions (so they can outrun the server)
    open_loop: ClassVar[bool] = False


class PoissonWorkload(Profile):
    """Open loop: sessions start as a Poisson process of ``session_rate`` per second."""

    kind: Literal["poisson"] = "poisson"
    session_rate: PositiveFloat = 1.0
    open_loop: ClassVar[bool] = True  # arrivals come regardless of completions


class ApiWorkload(BaseModel):
    """Open loop one-shot requests (no session) at ``request_rate`` per second."""

    model_config = _FROZEN
    kind: Literal["api"] = "api"
    request_rate: PositiveFloat = 1.0
    open_loop: ClassVar[bool] = True  # arrivals come regardless of completions
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

    @property
    def open_loop(self) -> bool:
        return self.session_rate is not None

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
    open_loop: ClassVar[bool] = True  # arrivals come regardless of completions


Workload = Annotated[
    Union[ChatWorkload, PoissonWorkload, ApiWorkload, MixWorkload, TraceWorkload],
    Field(discriminator="kind"),
]


DEFAULT_MAX_REQUESTS = 100_000  # the maximum of a run that gives neither num_requests nor duration_s
CI_METRICS = {  # run.steady.metrics -> the summary column whose 95% CI (``<column>_ci95_run``) counts
    "ttft_mean": "ttft_mean_s",
    "ttft_p99": "ttft_p99_s",
    "tpot_mean": "tpot_mean_s",
    "throughput": "throughput_rps",
}


class SteadyTarget(BaseModel):
    """When ``run.until: steady`` stops a run: once the run is steady (see ``metrics.py``) and
    every listed metric's within-run 95% confidence interval is narrower than ``ci_rel`` of its
    value, on either side."""

    model_config = _FROZEN
    ci_rel: float = Field(default=0.1, gt=0, lt=1, description="95% CI half-width / value, at most")
    metrics: tuple[Literal["ttft_mean", "ttft_p99", "tpot_mean", "throughput"], ...] = Field(
        default=("ttft_mean", "ttft_p99", "throughput"), min_length=1
    )


class SloConfig(BaseModel):
    """A per-request service-level objective: a request meets it when it meets every threshold
    given (seconds). Gives the summary columns ``slo_attainment`` and ``goodput_rps``."""

    model_config = _FROZEN
    ttft_s: PositiveFloat | None = Field(default=None, description="time to first token, at most")
    tpot_s: PositiveFloat | None = Field(default=None, description="time per output token, at most")
    e2e_s: PositiveFloat | None = Field(default=None, description="end-to-end latency, at most")

    @model_validator(mode="after")
    def _some_threshold(self) -> SloConfig:
        if self.ttft_s is None and self.tpot_s is None and self.e2e_s is None:
            raise ValueError("give at least one of ttft_s, tpot_s, e2e_s (or drop slo)")
        return self


class RunConfig(BaseModel):
    """How long to run and what to record.

    ``until: limits`` (the default when ``num_requests`` or ``duration_s`` is given): arrivals
    stop at ``num_requests`` submitted or at ``duration_s``, whichever comes first. ``until:
    steady`` (the default when neither is given): arrivals stop once the run is steady with every
    CI of ``steady`` met, or overloaded beyond doubt; ``num_requests`` and ``duration_s`` are then
    maxima, and with neither the maximum is ``DEFAULT_MAX_REQUESTS`` requests. Either way the
    requests in flight then drain to completion, and the summary's ``stop_reason`` says what
    stopped the arrivals.
    """

    model_config = _FROZEN
    seed: int = Field(default=0, ge=0, lt=2**63)
    num_requests: PositiveInt | None = Field(default=None, le=10**9)
    duration_s: PositiveFloat | None = None
    until: Literal["limits", "steady"] | None = Field(
        default=None, description="limits: run to num_requests / duration_s; steady: stop when steady"
    )
    steady: SteadyTarget = SteadyTarget()
    warmup_s: NonNegativeFloat | None = Field(
        default=None, description="requests arriving earlier are left out of the measured figures;"
        " default: found from the run's own data (MSER-5)"
    )
    slo: SloConfig | None = None
    record_requests: bool = False
    mode: Literal["fast", "reference"] = Field(
        default="fast", description="fast: closed-form decode runs; reference: one engine step at a time"
    )

    @model_validator(mode="after")
    def _some_end(self) -> RunConfig:
        if self.until == "limits" and self.num_requests is None and self.duration_s is None:
            raise ValueError("until: limits needs num_requests or duration_s (or use until: steady)")
        return self

    @property
    def until_steady(self) -> bool:
        """Whether the run stops when steady (``until``, or by default when no limit is given)."""
        if self.until is not None:
            return self.until == "steady"
        return self.num_requests is None and self.duration_s is None

    @property
    def max_requests(self) -> int | None:
        """Most requests the run submits (None: no count limit)."""
        if self.num_requests is None and self.duration_s is None:
            return DEFAULT_MAX_REQUESTS
        return self.num_requests


class SimConfig(BaseModel):
    """Everything one simulation needs. ``simulate(cfg)`` is a pure function of it."""

    model_config = _FROZEN
    model: ModelSpec
    gpu: GpuSpec
    engine: EngineConfig = EngineConfig()
    workload: Workload = ChatWorkload()
    run: RunConfig = RunConfig()

    @property
    def max_model_len(self) -> int:
        """Longest request the server accepts, in tokens (``engine.max_model_len`` or the
        model's context)."""
        return self.engine.max_model_len or self.model.max_context
