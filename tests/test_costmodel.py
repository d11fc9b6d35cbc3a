"""Physics sanity of the roofline cost model, and KV capacity from GPU memory."""

from __future__ import annotations

import pytest

from simcore.catalog import gpus, models
from simcore.config import SimConfig
from simcore.costmodel import CostModel, kv_capacity_blocks


def cfg(model: str, gpu: str, tp: int = 1, **engine) -> SimConfig:
    return SimConfig(model=model, gpu=gpu, engine={"tensor_parallel": tp, **engine})


@pytest.mark.parametrize("model", sorted(models()))
@pytest.mark.parametrize("gpu", sorted(gpus()))
def test_decode_at_batch_one_is_never_faster_than_reading_the_weights_once(model, gpu):
    c = cfg(model, gpu)
    floor = c.model.weight_bytes / c.gpu.hbm_bandwidth  # peak bandwidth, no efficiency
    for ctx in (1, 1000, 100_000):
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
