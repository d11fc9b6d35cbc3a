"""Physics sanity of the step-time model (with every GPU's calibrated profile), and KV capacity
from GPU memory."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcore.catalog import gpus, models
from simcore.config import SimConfig
from simcore.costmodel import CostModel, kv_capacity_blocks


def cfg(model: str, gpu: str, tp: int = 1, **engine) -> SimConfig:
    return SimConfig(model=model, gpu=gpu, engine={"tensor_parallel": tp, **engine})


@pytest.mark.parametrize("model", sorted(models()))
@pytest.mark.parametrize("gpu", sorted(gpus()))
def test_decode_at_batch_one_is_never_faster_than_reading_the_weights_once(model, gpu):
    """Every weight a token multiplies (the layers and the LM head; the embedding table is a
    gather) crosses HBM once per decode step, at best at peak bandwidth; its KV too."""
    c = cfg(model, gpu)
    m = c.model
    weights = (m.body_params + m.lm_head_params) * m.dtype_bytes
    for ctx in (1, 1000, 100_000):
        floor = (weights + ctx * m.kv_bytes_per_token) / c.gpu.hbm_bandwidth  # no efficiency
        assert CostModel(c).step_time(1, ctx, ctx, 1) >= floor


def test_prefill_time_per_token_falls_with_batch_until_compute_bound():
    m = CostModel(cfg("Llama-3.1-8B", "H100-SXM-80GB"))
    per_token = [m.step_time(n, n * 512, n * 512, n // 512 + 1) / n for n in (1, 8, 64, 512, 2048, 8192)]
    assert all(a > b for a, b in zip(per_token, per_token[1:4], strict=False))
    # once compute-bound the per-token time flattens: within 15% from 2048 to 8192 tokens
    assert per_token[-1] == pytest.approx(per_token[-2], rel=0.15)
    assert per_token[0] / per_token[-1] > 50


def test_tensor_parallel_two_is_faster_for_70b_but_less_than_twice():
    one = CostModel(cfg("Llama-3.1-70B", "H200", tp=1))
    two = CostModel(cfg("Llama-3.1-70B", "H200", tp=2))
    for tokens, ctx, seqs in [(1, 2000, 1), (64, 64 * 2000, 64), (4096, 4096 * 1024, 2)]:
        t1, t2 = one.step_time(tokens, ctx, ctx, seqs), two.step_time(tokens, ctx, ctx, seqs)
        assert t2 < t1 < 2 * t2


def test_kv_capacity_from_memory_and_explicit_budget():
    c = cfg("Llama-3.1-8B", "H100-SXM-80GB")
    blocks, reason = kv_capacity_blocks(c)
    assert reason is None
    usable = 79.65 * 2**30 * 0.9 - 8.03e9 * 2 - 2 * 2**30
    per_block = 16 * 2 * 32 * 8 * 128 * 2  # tokens x (K,V) x layers x kv heads x head dim x bytes
    assert blocks == int(usable // per_block)
    budget, _ = kv_capacity_blocks(cfg("Llama-3.1-8B", "H100-SXM-80GB", kv_budget_gib=1.0))
    assert budget == 2**30 // per_block
    # TP-2 halves weights and KV heads per GPU: more than twice the tokens fit
    tp2, _ = kv_capacity_blocks(cfg("Llama-3.1-8B", "H100-SXM-80GB", tp=2))
    assert tp2 > 2 * blocks


def test_model_that_does_not_fit_is_infeasible_with_reason():
    blocks, reason = kv_capacity_blocks(cfg("Llama-3.1-70B", "A100-80GB"))
    assert blocks == 0 and "131.5 GiB of weights" in reason
    _, reason = kv_capacity_blocks(cfg("Llama-3.1-8B", "A100-40GB", kv_budget_gib=100))
    assert "kv_budget_gib=100" in reason


def test_matmul_efficiency_rises_smoothly_with_tokens_to_its_maximum():
    """Achieved FLOP/s of the layers' matmuls, 2 x params x n / body time, climbs with the
    tokens in the step and is compute_eff x n / (n + half) once past the weight-streaming floor."""
    c = cfg("Llama-3.1-8B", "H100-SXM-80GB")
    m = CostModel(c)
    eff = c.engine.cost.compute_efficiency
    half = c.engine.cost.matmul_half_tokens
    achieved = []
    for n in (1, 16, 64, 256, 1024, 4096, 16384):
        body = max(m.weight_s, n * m.flop_per_token_s + m.knee_s)
        achieved.append(2 * c.model.body_params * n / body / c.gpu.flops)
        if body > m.weight_s:
            assert achieved[-1] == pytest.approx(eff * n / (n + half))
    assert achieved == sorted(achieved) and achieved[-1] < eff
    assert achieved[-1] > 0.9 * eff and achieved[0] < 0.01


def test_tensor_parallel_speed_up_saturates():
    """Weights and KV split over the GPUs, the all-reduces do not shrink: decode speeds up less
    and less with TP, and the all-reduce's share of the step grows."""
    times, shares = [], []
    for tp in (1, 2, 4, 8):
        m = CostModel(cfg("Llama-3.1-70B", "H100-SXM-80GB", tp=tp))
        t = m.step_time(32, 32 * 2001, 32 * 2001, 32)
        times.append(t)
        shares.append((m.allreduce_s + 32 * m.allreduce_per_token_s) / t)
    gains = [a / b for a, b in zip(times, times[1:], strict=False)]
    assert all(1 < g < 2 for g in gains) and gains == sorted(gains, reverse=True)
    assert shares == sorted(shares) and shares[0] == 0


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(gpus())), st.sampled_from([1, 2, 4, 8]), st.integers(1, 8192),
       st.integers(0, 10**8), st.integers(0, 10**6), st.integers(1, 256),
       st.sampled_from(["tokens", "attn", "kv", "seqs"]))
def test_more_work_never_takes_less_time(gpu, tp, tokens, attn, kv, seqs, grow):
    m = CostModel(cfg("Llama-3.1-70B", gpu, tp=tp))
    args = {"tokens": tokens, "attn": attn, "kv": kv, "seqs": seqs}
    more = {**args, grow: args[grow] + 1 + args[grow] // 3}
    assert m.step_time(**more) >= m.step_time(**args)


def test_steps_beyond_the_cuda_graph_size_pay_the_eager_launch():
    """The CPU launches kernels ahead of the GPU: launch time counts only where it exceeds the
    GPU's, and a step of more tokens than the CUDA graphs cover launches every kernel itself."""
    c = cfg("Llama-3.2-1B", "H100-SXM-80GB", cost={"eager_launch_per_layer_s": 2e-3,
                                                   "cuda_graph_max_tokens": 64})
    m = CostModel(c)
    graph, eager = m.step_time(64, 64, 64, 64), m.step_time(65, 65, 65, 65)
    assert eager == pytest.approx(c.engine.cost.step_overhead_s + 65 * c.engine.cost.per_seq_overhead_s
                                  + 16 * 2e-3)
    assert graph < eager / 3
