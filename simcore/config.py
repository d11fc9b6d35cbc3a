"""The one validated input of a simulation: :class:`SimConfig` and its parts.

All models are frozen and forbid unknown keys. Models and GPUs are given by catalog name
(``model: Llama-3.1-8B``), by name with overrides (``gpu: {name: H100-SXM-80GB, memory_gib: 40}``)
or inline with every field. Derived values (KV bytes per token, weight bytes) are properties.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from simcore import catalog
from simcore.dists import Constant, Dist, LogNormal, coerce_dist
from simcore.router import RouterName

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
    """A decoder-only transformer. Units: counts; ``dtype_bytes`` per weight and KV element.

    ``intermediate_size`` (the MLP's hidden width), ``vocab_size`` and ``tie_word_embeddings``
    come from the model's Hugging Face ``config.json``; the cost model uses them to tell the
    transformer body (computed for every token) from the embedding table (a lookup) and the LM
    head (computed once per sequence per step). Without ``vocab_size`` every parameter counts as
    body; without ``intermediate_size`` it is derived from the parameter count.
    """

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
    intermediate_size: PositiveInt | None = Field(default=None, description="MLP width (HF config)")
    vocab_size: PositiveInt | None = Field(default=None, description="tokens in the vocabulary (HF config)")
    tie_word_embeddings: bool = Field(default=False, description="LM head shares the embedding table")

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, value: Any) -> Any:
        return _from_catalog(value, catalog.models(), "model")

    @model_validator(mode="after")
    def _body_left(self) -> ModelSpec:
        if self.body_params <= 0:
            raise ValueError(
                f"num_params {self.num_params:g} is not more than the embedding parameters "
                f"{self.embedding_params:g} (vocab_size x hidden_size): check num_params and vocab_size"
            )
        return self

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V for every layer and KV head, in bytes, on one GPU without tensor parallelism."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes

    @property
    def weight_bytes(self) -> float:
        return self.num_params * self.dtype_bytes

    @property
    def embedding_params(self) -> float:
        """Parameters of the embedding table and (untied) LM head: vocab x hidden each."""
        if self.vocab_size is None:
            return 0.0
        return float(self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2))

    @property
    def lm_head_params(self) -> float:
        """The LM head's vocab x hidden parameters (0 when ``vocab_size`` is unknown)."""
        return 0.0 if self.vocab_size is None else float(self.vocab_size * self.hidden_size)

    @property
    def body_params(self) -> float:
        """Parameters of the transformer layers (every token multiplies through all of them)."""
        return self.num_params - self.embedding_params

    @property
    def attention_params_per_layer(self) -> float:
        """Q, K, V and output projections of one layer."""
        q = self.num_attention_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        return float(self.hidden_size * (2 * q + 2 * kv))

    @property
    def ffn_size(self) -> float:
        """``intermediate_size``, or what a gated MLP (three hidden x width matrices) would need
        for the body's parameters: (body / layers - attention) / (3 x hidden)."""
        if self.intermediate_size is not None:
            return float(self.intermediate_size)
        per_layer = self.body_params / self.num_layers - self.attention_params_per_layer
        return max(per_layer, 0.0) / (3 * self.hidden_size)


class GpuSpec(BaseModel):
    """One accelerator. ``flops`` dense BF16 FLOP/s; bandwidths in bytes/s; memory in GiB."""

    model_config = _FROZEN
    name: str = "custom"
    flops: PositiveFloat
    hbm_bandwidth: PositiveFloat
    memory_gib: PositiveFloat
    interconnect_bandwidth: PositiveFloat = 900e9
    host_bandwidth: PositiveFloat = Field(
        default=25e9, description="effective host<->GPU copy bandwidth (PCIe), bytes/s per GPU"
    )

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, value: Any) -> Any:
        return _from_catalog(value, catalog.gpus(), "gpu")

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * 2**30


def _eff(default: float, what: str) -> Any:
    return Field(default=default, gt=0, le=1, description=what)


def _secs(default: float, what: str) -> Any:
    return Field(default=default, ge=0, description=what)


class CostParams(BaseModel):
    """Named parameters of the step-time model (``costmodel.py`` has the formula).

    Values come from a calibrated profile in ``simcore/catalog/profiles.yaml`` (each GPU names
    its default profile; ``profile`` selects another, or a YAML file written by ``kvsweep
    calibrate``) and any field given here overrides the profile's. The class defaults are the
    ``generic`` profile: physically plausible, not fitted to any measurement. Efficiencies are
    achieved / peak (dimensionless); times are seconds; ``cuda_graph_max_tokens`` is tokens.
    """

    model_config = _FROZEN
    profile: str = Field(default="generic", description="profile the values came from (name or YAML path)")
    compute_efficiency: float = _eff(0.75, "large matmuls: achieved / peak FLOP/s (the asymptote)")
    matmul_half_tokens: NonNegativeFloat = Field(
        default=180.0, description="tokens per step at which matmul efficiency is half its maximum"
    )
    bandwidth_efficiency: float = _eff(0.85, "weight streaming: achieved / peak HBM bytes/s")
    attention_compute_efficiency: float = _eff(0.5, "prefill attention: achieved / peak FLOP/s")
    kv_bandwidth_efficiency: float = _eff(0.7, "attention's KV-cache reads: achieved / peak HBM bytes/s")
    elementwise_efficiency: float = _eff(0.6, "norms, rotary, activation, residual adds: achieved / peak B/s")
    interconnect_efficiency: float = _eff(0.7, "all-reduce bus bandwidth / interconnect_bandwidth")
    allreduce_latency_s: NonNegativeFloat = _secs(1.0e-5, "latency of one all-reduce call at TP 2")
    allreduce_latency_per_gpu_s: NonNegativeFloat = _secs(2.0e-6, "added to it per GPU beyond 2")
    layer_overhead_s: NonNegativeFloat = _secs(
        1.5e-5, "GPU time per layer per step beyond the terms above (small kernels' fixed latency)"
    )
    launch_per_layer_s: NonNegativeFloat = _secs(
        5.0e-6, "CPU time to launch one layer's work in a CUDA-graph step (overlaps GPU time)"
    )
    eager_launch_per_layer_s: NonNegativeFloat = _secs(
        1.0e-4, "CPU time to launch one layer's kernels in an eager step (overlaps GPU time)"
    )
    cuda_graph_max_tokens: NonNegativeInt = Field(
        default=512, description="steps of at most this many tokens run from CUDA graphs (vLLM's capture)"
    )
    step_overhead_s: NonNegativeFloat = _secs(
        7.0e-4, "CPU per step: scheduling, input preparation, sampling, output processing"
    )
    per_seq_overhead_s: NonNegativeFloat = _secs(1.0e-5, "CPU per sequence in the step")
    frontend_latency_s: NonNegativeFloat = _secs(
        0.0, "API server path outside the engine (HTTP, tokenising, IPC, streaming), added to TTFT and E2E"
    )
    first_token_lag_steps: NonNegativeFloat = Field(
        default=0.0,
        description="decode steps (the request's own mean step) between the engine's first token and the "
        "client's: streaming holds back text until it decodes to whole characters",
    )


    @model_validator(mode="before")
    @classmethod
    def _known_profile(cls, value: Any) -> Any:
        # values resolved from a profile carry every field: the profile is then only a label
        # (a resolved config read back on another machine need not find the profile's file)
        if isinstance(value, dict) and "profile" in value and not all(f in value for f in COST_FIELDS):
            catalog.load_profile(value["profile"])  # raises ValueError naming the known profiles
        return value


COST_FIELDS: tuple[str, ...] = tuple(f for f in CostParams.model_fields if f != "profile")


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
    cpu_offload_gib: NonNegativeFloat = Field(
        default=0.0, description="CPU memory for KV blocks evicted from the GPU (all GPUs together); 0: none"
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


class LoadStage(BaseModel):
    """``rate`` requests per second for ``duration_s`` seconds."""

    model_config = _FROZEN
    rate: PositiveFloat
    duration_s: PositiveFloat


class SharedPrefixWorkload(BaseModel):
    """A benchmark load generator's shared-prefix data (inference-perf's ``shared_prefix``)
    under stages of constant-rate load, as used to measure real vLLM servers.

    ``groups`` x ``prompts_per_group`` distinct prompts: the prompts of a group share a system
    prompt of ``system_prompt_tokens`` tokens, then a question of ``question_tokens`` of their
    own. Requests cycle through the prompts in one fixed shuffled order (so after the first cycle
    every prompt has been seen before) and carry no context between them. Every request
    generates exactly ``output_tokens`` tokens. Each stage sends int(rate x duration) requests
    with exponential gaps rescaled to fill the stage exactly, stages one after the other.
    """

    model_config = _FROZEN
    kind: Literal["shared_prefix"] = "shared_prefix"
    groups: PositiveInt = 10
    prompts_per_group: PositiveInt = 10
    system_prompt_tokens: NonNegativeInt = 100
    question_tokens: PositiveInt = 447
    output_tokens: PositiveInt = 248
    stages: list[LoadStage] = Field(min_length=1)
    open_loop: ClassVar[bool] = True  # arrivals come regardless of completions

    @property
    def num_requests(self) -> int:
        """Requests over all stages."""
        return sum(int(s.rate * s.duration_s) for s in self.stages)


Workload = Annotated[
    Union[ChatWorkload, PoissonWorkload, ApiWorkload, MixWorkload, TraceWorkload, SharedPrefixWorkload],
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

    ``until: limits`` (the default when ``num_requests`` or ``duration_s`` is given, and for a
    trace or shared-prefix workload, which ends by itself): arrivals stop at ``num_requests``
    submitted or at ``duration_s``, whichever comes first (or when the workload ends). ``until:
    steady`` (the default otherwise): arrivals stop once the run is steady with every CI of
    ``steady`` met, or overloaded beyond doubt; ``num_requests`` and ``duration_s`` are then
    maxima, and with neither the maximum is ``DEFAULT_MAX_REQUESTS`` requests. Either way the
    requests in flight then drain to completion, and the summary's ``stop_reason`` says what
    stopped the arrivals (see :attr:`SimConfig.until_steady`).
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
    def limited(self) -> bool:
        """Whether a request count or a duration is given."""
        return self.num_requests is not None or self.duration_s is not None


class ClusterConfig(BaseModel):
    """Data-parallel replicas of the engine behind a router (see ``simcore/router.py``).

    Every replica has the model, GPU and engine settings of the run (its own block pool,
    scheduler and cost model). With one replica the router steps aside.
    """

    model_config = _FROZEN
    replicas: PositiveInt = Field(default=1, le=4096, description="engine replicas")
    router: RouterName = "round_robin"
    load_metric: Literal["requests", "tokens"] = Field(
        default="requests", description="a replica's load: outstanding requests or their prompt tokens"
    )
    prefix_weight: NonNegativeFloat = Field(default=2.0, description="prefix_aware: cached-share weight")
    load_weight: NonNegativeFloat = Field(default=1.0, description="prefix_aware: load-score weight")
    cpu_hit_weight: NonNegativeFloat = Field(
        default=0.5, le=1.0, description="prefix_aware: what a cached token found only in a replica's CPU"
        " tier counts, against 1 for one in its GPU memory (0.5: llm-d's tiered prefix-cache guide)"
    )
    snapshot_interval_s: PositiveFloat | None = Field(
        default=None, description="prefix_aware sees cache state refreshed this often; None: exact"
    )
    shared_pool_gib: NonNegativeFloat = Field(
        default=0.0, description="a KV pool shared by all replicas (Mooncake-style; what enters it:"
        " shared_pool_policy); 0: none"
    )
    shared_pool_policy: Literal["write_through", "on_eviction"] = Field(
        default="write_through", description="what enters the shared pool: every block a replica"
        " computes, as it is computed (Mooncake Store, LMCache), or what leaves a replica's last"
        " local tier (as the CPU tier)"
    )
    network_bandwidth: PositiveFloat = Field(
        default=25e9, description="effective bandwidth of each GPU's network link to the shared pool,"
        " bytes/s (25e9: a 200 Gb/s RDMA NIC per GPU)"
    )


class SimConfig(BaseModel):
    """Everything one simulation needs. ``simulate(cfg)`` is a pure function of it.

    ``engine.cost`` is resolved here, once: the GPU's calibrated profile (or the one
    ``engine.cost.profile`` names), then every field the config gives explicitly on top. The
    validated config holds every value, so a run's identity covers the cost model it used.
    """

    model_config = _FROZEN
    model: ModelSpec
    gpu: GpuSpec
    engine: EngineConfig = EngineConfig()
    workload: Workload = ChatWorkload()
    run: RunConfig = RunConfig()
    cluster: ClusterConfig = ClusterConfig()

    @property
    def until_steady(self) -> bool:
        """Whether arrivals stop once the run is steady: ``run.until``, else by default when no
        limit is given and the workload does not end by itself (see :class:`RunConfig`)."""
        if self.run.until is not None:
            return self.run.until == "steady"
        return not self.run.limited and not isinstance(self.workload, (TraceWorkload, SharedPrefixWorkload))

    @property
    def max_requests(self) -> int | None:
        """Most requests the run submits (None: no count limit)."""
        if self.until_steady and not self.run.limited:
            return DEFAULT_MAX_REQUESTS
        return self.run.num_requests

    @property
    def max_model_len(self) -> int:
        """Longest request the server accepts, in tokens (``engine.max_model_len`` or the
        model's context)."""
        return self.engine.max_model_len or self.model.max_context

    @field_validator("workload", mode="before")
    @classmethod
    def _chat_by_default(cls, value: Any) -> Any:
        # The default workload is chat, so `workload: {users: 32}` means a chat workload too.
        if isinstance(value, dict) and "kind" not in value:
            return {"kind": "chat", **value}
        return value

    @model_validator(mode="before")
    @classmethod
    def _resolve_cost(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        engine = data.get("engine", {})
        if isinstance(engine, BaseModel):
            engine = {k: getattr(engine, k) for k in engine.model_fields_set}
        if not isinstance(engine, dict):
            return data
        cost = resolve_cost(engine.get("cost"), _gpu_name(data.get("gpu")))
        return {**data, "engine": {**engine, "cost": cost}}


def _gpu_name(gpu: Any) -> str | None:
    if isinstance(gpu, str):
        return gpu
    if isinstance(gpu, dict):
        name = gpu.get("name")
        return name if isinstance(name, str) else None
    return gpu.name if isinstance(gpu, GpuSpec) else None


def resolve_cost(given: Any, gpu_name: str | None) -> Any:
    """``engine.cost`` as given (None, a profile name or path, a mapping or a CostParams) ->
    a mapping with every field: the named profile's values (else the GPU's default profile,
    else ``generic``) with the given fields on top. Anything else is returned for pydantic to
    reject."""
    if isinstance(given, CostParams):
        given = {k: getattr(given, k) for k in given.model_fields_set}
    elif given is None:
        given = {}
    elif isinstance(given, str):
        given = {"profile": given}
    if not isinstance(given, dict):
        return given
    if all(f in given for f in COST_FIELDS):
        return given  # fully specified (a resolved config read back): nothing to look up
    name = given.get("profile") or catalog.default_profile(gpu_name)
    try:
        base = catalog.load_profile(name)
    except ValueError:
        return given  # CostParams' own check reports it, at engine.cost.profile
    return {**base, **given, "profile": name}
