"""Time of one engine step from the batch's composition: the one place step time is computed.

A step computes ``tokens`` tokens of ``seqs`` sequences. Per GPU, with tensor-parallel degree T::

    step  = step_overhead + per_seq_overhead x seqs + max(launch, gpu)
    gpu   = body + head + attention + elementwise + all-reduce + layers x layer_overhead
    body  = max(body weights / (HBM B/s x bandwidth_eff),                 memory-bound end
                2 x body params / T x (tokens + matmul_half_tokens)
                / (peak FLOP/s x compute_eff))                            compute-bound end
    head  = the same for the LM head, with seqs in place of tokens (one logit row per sequence)
    attention   = attn x 4 x layers x heads/T x head_dim / (peak FLOP/s x attention_compute_eff)
                + kv x KV bytes per token per GPU / (HBM B/s x kv_bandwidth_eff)
    elementwise = tokens x layers x (8 x hidden + (2 x (q + kv width) + 3 x ffn) / T) x dtype
                / (HBM B/s x elementwise_eff)                 norms, residual adds, rotary, SiLU
    all-reduce  = 2 x layers x (latency(T) + tokens x hidden x dtype x 2(T-1)/T
                / (interconnect B/s x interconnect_eff))           T > 1; latency(T) = a + b(T-2)
    launch = layers x (launch_per_layer if tokens <= cuda_graph_max_tokens else eager_launch_per_layer)

Matmul efficiency is a smooth function of the tokens in the step: compute_eff x n / (n +
matmul_half_tokens), which is what ``(tokens + matmul_half_tokens)`` above expresses; with the
weight-streaming floor this bends from memory- to compute-bound as real GEMMs do (fitted to
Vidur's per-operator H100 profile). ``attn`` is the sum over computed tokens of the context each
attends to (a chunk of n tokens after c cached ones attends n*c + n(n+1)/2) and ``kv`` the KV
tokens read or written (c + n per sequence): prefix hits shrink prefill FLOPs, not the KV reads
of later decode steps. The CPU launches kernels ahead of the GPU, so launch time and GPU time
overlap (``max``); the scheduler's per-step work does not. The embedding table is a gather, not
a matmul: it is neither read whole nor computed. Seconds throughout; the parameters, their
units and sources are :class:`simcore.config.CostParams` and ``catalog/profiles.yaml``.

The front-end latency (``CostParams.frontend_latency_s``) is not step time: the engine adds it
to every request's first token and finish (see ``engine.py``).
"""

from __future__ import annotations

from typing import TypeAlias

from simcore.config import SimConfig

#: :attr:`CostModel.terms`: the coefficients :func:`step_seconds` takes, in its order
Terms: TypeAlias = tuple[
    float, float, float, float, float, float, float, float, float, float, float, float, int, float, float
]


def chunk_terms(computed: int, n: int) -> tuple[int, int]:
    """(attn, kv) of computing ``n`` tokens after ``computed`` cached ones in one sequence."""
    return n * computed + n * (n + 1) // 2, computed + n


class CostModel:
    """Constants are folded once at construction; :meth:`step_time` is then a few flops."""

    def __init__(self, cfg: SimConfig) -> None:
        m, g, e = cfg.model, cfg.gpu, cfg.engine
        c = e.cost
        tp = e.tensor_parallel
        flops = g.flops * c.compute_efficiency
        bw = g.hbm_bandwidth * c.bandwidth_efficiency
        layers = m.num_layers
        self.flop_per_token_s = 2.0 * m.body_params / tp / flops
        self.knee_s = self.flop_per_token_s * c.matmul_half_tokens
        self.weight_s = m.body_params * m.dtype_bytes / tp / bw
        self.head_per_seq_s = 2.0 * m.lm_head_params / tp / flops
        self.head_knee_s = self.head_per_seq_s * c.matmul_half_tokens
        self.head_weight_s = m.lm_head_params * m.dtype_bytes / tp / bw
        attn_flops = g.flops * c.attention_compute_efficiency
        self.flop_per_attn_s = 4.0 * layers * m.num_attention_heads * m.head_dim / tp / attn_flops
        kv_bw = g.hbm_bandwidth * c.kv_bandwidth_efficiency
        self.kv_per_token_s = kv_bytes_per_token_per_gpu(cfg) / kv_bw
        elem_bw = g.hbm_bandwidth * c.elementwise_efficiency
        self.elementwise_per_token_s = elementwise_bytes_per_token(cfg) / elem_bw
        self.allreduce_s = 0.0
        self.allreduce_per_token_s = 0.0
        if tp > 1:
            ring = 2.0 * (tp - 1) / tp
            link = g.interconnect_bandwidth * c.interconnect_efficiency
            calls = 2 * layers
            self.allreduce_s = calls * (c.allreduce_latency_s + c.allreduce_latency_per_gpu_s * (tp - 2))
            self.allreduce_per_token_s = calls * ring * m.hidden_size * m.dtype_bytes / link
        self.per_token_s = self.elementwise_per_token_s + self.allreduce_per_token_s
        self.gpu_fixed_s = layers * c.layer_overhead_s + self.allreduce_s
        self.terms: Terms = (
            self.flop_per_token_s, self.knee_s, self.weight_s,
            self.head_per_seq_s, self.head_knee_s, self.head_weight_s,
            self.flop_per_attn_s, self.kv_per_token_s, self.per_token_s, self.gpu_fixed_s,
            layers * c.launch_per_layer_s, layers * c.eager_launch_per_layer_s, c.cuda_graph_max_tokens,
            c.step_overhead_s, c.per_seq_overhead_s,
        )

    def step_time(self, tokens: int, attn: int, kv: int, seqs: int) -> float:
        """Seconds for one step computing ``tokens`` tokens of ``seqs`` sequences."""
        return step_seconds(self.terms, tokens, attn, kv, seqs)


def step_seconds(terms: Terms, tokens: int, attn: int, kv: int, seqs: int) -> float:
    """The step time from :attr:`CostModel.terms` (see the module notes for each term). The
    compiled window loop (``simcore._native.decode_steps``) repeats these operations in this
    order, so both give the same bits."""
    (fpt, knee, weight, hps, hknee, hweight, fpa, kvt, tok, gpu_fixed,
     graph, eager, graph_max, fixed, per_seq) = terms
    body = tokens * fpt + knee
    if body < weight:
        body = weight
    head = seqs * hps + hknee
    if head < hweight:
        head = hweight
    gpu = body + head + attn * fpa + kv * kvt + tokens * tok + gpu_fixed
    launch = graph if tokens <= graph_max else eager
    if gpu < launch:
        gpu = launch
    return fixed + seqs * per_seq + gpu


def elementwise_bytes_per_token(cfg: SimConfig) -> float:
    """HBM bytes one token moves per GPU through the layers' elementwise kernels: two fused
    residual-add + RMSNorm (read x and residual, write both: 8 x hidden, on every GPU), rotary
    embedding (read and write q and k) and SiLU-and-multiply (read 2 x ffn, write ffn), the last
    two split over the tensor-parallel GPUs."""
    m, tp = cfg.model, cfg.engine.tensor_parallel
    q = m.num_attention_heads * m.head_dim
    kv = m.num_kv_heads * m.head_dim
    split = 2 * (q + kv) + 3 * m.ffn_size
    return m.num_layers * (8 * m.hidden_size + split / tp) * m.dtype_bytes


def kv_bytes_per_token_per_gpu(cfg: SimConfig) -> float:
    """KV heads split across tensor-parallel GPUs (replicated when fewer heads than GPUs)."""
    m, tp = cfg.model, cfg.engine.tensor_parallel
    heads_per_gpu = -(-m.num_kv_heads // tp)
    return 2.0 * m.num_layers * heads_per_gpu * m.head_dim * m.dtype_bytes


def kv_capacity_blocks(cfg: SimConfig) -> tuple[int, str | None]:
    """(blocks including the null block, None) or (0, reason the model does not fit)."""
    m, g, e = cfg.model, cfg.gpu, cfg.engine
    gib = 2**30
    usable = g.memory_bytes * e.gpu_memory_utilization
    weights = m.weight_bytes / e.tensor_parallel
    reserve = e.activation_reserve_gib * gib
    free = usable - weights - reserve
    if free <= 0:
        return 0, (
            f"{m.name} needs {weights / gib:.1f} GiB of weights + {e.activation_reserve_gib:g} GiB"
            f" reserve per GPU but {g.name} x TP{e.tensor_parallel} has {usable / gib:.1f} GiB usable per GPU"
        )
    if e.kv_budget_gib is not None:
        budget = e.kv_budget_gib * gib / e.tensor_parallel
        if budget > free:
            return 0, (
                f"kv_budget_gib={e.kv_budget_gib:g} needs {budget / gib:.1f} GiB per GPU but only "
                f"{free / gib:.1f} GiB remain after weights and reserve"
            )
        free = budget
    blocks = int(free // (e.block_size * kv_bytes_per_token_per_gpu(cfg)))
    if blocks < 2:
        return 0, f"KV cache of {free / gib:.3f} GiB per GPU holds fewer than one block"
    return blocks, None


def tier_blocks(cfg: SimConfig, gib: float) -> int:
    """Blocks that ``gib`` GiB of memory outside the GPUs holds (every GPU's share of a block
    together, as vLLM's ``cpu_bytes_to_use`` counts them)."""
    e = cfg.engine
    per_block = e.block_size * kv_bytes_per_token_per_gpu(cfg) * e.tensor_parallel
    return int(gib * 2**30 // per_block)


def cpu_tier_blocks(cfg: SimConfig) -> int:
    """Blocks that ``engine.cpu_offload_gib`` of CPU memory holds; 0 without a CPU tier."""
    return tier_blocks(cfg, cfg.engine.cpu_offload_gib)


def shared_pool_blocks(cfg: SimConfig) -> int:
    """Blocks that the cluster's shared pool (``cluster.shared_pool_gib``, all replicas together)
    holds; 0 without one, or without prefix caching (nothing to look up)."""
    if cfg.engine.prefix_caching == "off":
        return 0
    return tier_blocks(cfg, cfg.cluster.shared_pool_gib)


def host_load_seconds(cfg: SimConfig, blocks: int) -> float:
    """Seconds to copy ``blocks`` KV blocks from CPU memory to the GPUs: each GPU copies its
    share of every block over its own PCIe link, at ``gpu.host_bandwidth``, all at once."""
    return blocks * cfg.engine.block_size * kv_bytes_per_token_per_gpu(cfg) / cfg.gpu.host_bandwidth


def shared_load_seconds(cfg: SimConfig, blocks: int) -> float:
    """Seconds to copy ``blocks`` KV blocks from the cluster's shared pool to a replica's GPUs:
    each GPU reads its share of every block over its own network link (GPUDirect RDMA, as
    Mooncake's transfer engine does), which lands through the GPU's PCIe link, so the copy
    streams at the slower of the two, ``min(cluster.network_bandwidth, gpu.host_bandwidth)``."""
    bw = min(cfg.cluster.network_bandwidth, cfg.gpu.host_bandwidth)
    return blocks * cfg.engine.block_size * kv_bytes_per_token_per_gpu(cfg) / bw
