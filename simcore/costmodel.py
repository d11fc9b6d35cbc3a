"""Time of one engine step from the batch's composition (a roofline model).

    time = max(FLOPs / (peak FLOP/s x compute_eff), bytes / (HBM B/s x bandwidth_eff))
           + all-reduce time (tensor parallel) + step_overhead + per_seq_overhead x seqs

Per GPU, with tensor-parallel degree T:
    FLOPs = (2 x params x tokens + 4 x layers x q_heads x head_dim x attn) / T
    bytes = weights / T + kv_bytes_per_token_per_gpu x kv
where ``tokens`` are the tokens computed this step, ``attn`` the sum over those tokens of the
context each attends to (causal: a chunk of n tokens after c cached ones attends n*c + n(n+1)/2),
and ``kv`` the KV tokens read or written (c + n per sequence). Prefix hits shrink prefill FLOPs
(fewer tokens computed) but not the KV read of later decode steps. Two all-reduces per layer
move tokens x hidden x dtype bytes each, ring cost 2(T-1)/T. Seconds throughout.
"""

from __future__ import annotations

from simcore.config import SimConfig


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
        self.flop_per_token_s = 2.0 * m.num_params / tp / flops
        self.flop_per_attn_s = 4.0 * m.num_layers * m.num_attention_heads * m.head_dim / tp / flops
        self.weight_s = m.weight_bytes / tp / bw
        self.kv_per_token_s = kv_bytes_per_token_per_gpu(cfg) / bw
        if tp > 1:
            ring = 2.0 * (tp - 1) / tp
            link = g.interconnect_bandwidth * c.interconnect_efficiency
            per_token = ring * m.hidden_size * m.dtype_bytes / link
            calls = 2 * m.num_layers
            self.ar_fixed_s = calls * c.allreduce_latency_s
            self.ar_per_token_s = calls * per_token
        else:
            self.ar_fixed_s = 0.0
            self.ar_per_token_s = 0.0
        self.fixed_s = c.step_overhead_s + self.ar_fixed_s
        self.per_seq_s = c.per_seq_overhead_s
        # the coefficients of step_seconds, in its order (the decode window's loops take them)
        self.terms: tuple[float, float, float, float, float, float, float] = (
            self.flop_per_token_s, self.flop_per_attn_s, self.weight_s, self.kv_per_token_s,
            self.fixed_s, self.ar_per_token_s, self.per_seq_s,
        )

    def step_time(self, tokens: int, attn: int, kv: int, seqs: int) -> float:
        """Seconds for one step computing ``tokens`` tokens of ``seqs`` sequences."""
        return step_seconds(self.terms, tokens, attn, kv, seqs)


def step_seconds(
    terms: tuple[float, float, float, float, float, float, float], tokens: int, attn: int, kv: int,
    seqs: int,
) -> float:
    """The roofline step time from :attr:`CostModel.terms`: per token, per attention pair,
    weights, per KV token, fixed, all-reduce per token and per sequence, in seconds. The
    compiled window loop (``simcore/_native.pyx``) repeats these operations in this order."""
    fpt, fpa, weight, kvt, fixed, ar, per_seq = terms
    compute = tokens * fpt + attn * fpa
    memory = weight + kv * kvt
    return (compute if compute > memory else memory) + fixed + (ar * tokens + per_seq * seqs)


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
