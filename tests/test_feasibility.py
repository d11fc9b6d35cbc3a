"""Servers vLLM refuses to start are ``infeasible`` runs whose reason names the values and the fix."""

from __future__ import annotations

import pytest

from simcore.api import simulate
from simcore.costmodel import kv_capacity_blocks
from tests.simhelpers import Scripted, run_script, small_cfg


def _refused(**over: object) -> str:
    result = simulate(small_cfg(**over))
    assert result.status == "infeasible", result
    assert result.summary["num_requests"] is None  # nothing was simulated
    return str(result.error)


def test_tensor_parallel_must_divide_the_attention_heads():
    error = _refused(model="Llama-3.1-8B", gpu="H100-SXM-80GB", engine={"tensor_parallel": 3})
    assert error.startswith("engine.tensor_parallel 3 does not divide the 32 attention heads of Llama-3.1-8B")
    assert "(use 1, 2, 4, 8, 16 or 32)" in error


def test_kv_heads_split_evenly_or_replicate_evenly():
    model = {"name": "odd", "num_layers": 4, "hidden_size": 1536, "num_attention_heads": 24,
             "num_kv_heads": 6, "head_dim": 64, "num_params": 1e8, "max_context": 4096}
    error = _refused(model=model, engine={"tensor_parallel": 4, "block_size": 16})
    assert "tensor_parallel 4 neither divides the 6 KV heads of odd nor is a multiple of them" in error
    for tp in (2, 3, 6, 12, 24):  # divisors of 6, or multiples of 6 that divide the 24 heads
        cfg = small_cfg(model=model, engine={"tensor_parallel": tp, "block_size": 16})
        assert simulate(cfg).status == "ok"


def test_the_kv_cache_must_hold_one_request_of_max_model_len():
    """Llama-3.1-8B at 24 GiB: weights leave ~3.6 GiB, about 29k tokens of KV; the model's
    131,072-token context does not fit, as vLLM's start-up check finds."""
    base = {"model": "Llama-3.1-8B", "gpu": {"name": "H100-SXM-80GB", "memory_gib": 24},
            "engine": {"block_size": 16}}
    blocks, _ = kv_capacity_blocks(small_cfg(**base))
    error = _refused(**base)
    assert error.startswith(f"the KV cache holds {blocks * 16:,} tokens")
    assert "less than one request of max_model_len 131,072" in error
    assert f"set engine.max_model_len to {blocks * 16:,} or less" in error
    ok = simulate(small_cfg(**{**base, "engine": {"block_size": 16, "max_model_len": blocks * 16}}))
    assert ok.status == "ok"
    assert _refused(**{**base, "engine": {"block_size": 16, "max_model_len": blocks * 16 + 1}})


def test_max_num_batched_tokens_must_cover_max_num_seqs():
    error = _refused(engine={"max_num_batched_tokens": 16, "max_num_seqs": 256, "block_size": 16})
    assert error.startswith("engine.max_num_batched_tokens 16 is below engine.max_num_seqs 256")
    assert "raise max_num_batched_tokens to at least 256" in error


@pytest.mark.parametrize("size", [2, 4, 12, 24, 512])
def test_block_sizes_vllm_does_not_accept(size):
    assert f"engine.block_size {size} is not a size vLLM accepts" in _refused(engine={"block_size": size})


def test_max_model_len_beyond_the_model_context():
    error = _refused(engine={"max_model_len": 200_000, "block_size": 16})
    assert error.startswith("engine.max_model_len 200,000 exceeds the 131,072-token context of Llama-3.2-1B")


def test_requests_longer_than_max_model_len_fail_as_vllm_rejects_them():
    cfg = small_cfg(engine={"block_size": 16, "max_model_len": 512})
    script = [Scripted(0.0, [(1, 400)], output=112), Scripted(0.0, [(2, 400)], output=113)]
    fits, too_long = run_script(cfg, 1000, script).records
    assert fits.status == "completed"
    assert too_long.status == "failed"
    assert too_long.error == ("prompt 400 + output 113 tokens exceed max_model_len 512"
                              " (vLLM rejects the request)")


def test_chat_sessions_end_before_max_model_len():
    """Clients of a server with a shorter max_model_len keep their conversations within it."""
    cfg = small_cfg(engine={"block_size": 16, "max_model_len": 2048},
                    workload={"kind": "chat", "users": 4, "turns": 20, "user_tokens": 300},
                    run={"num_requests": 60, "record_requests": True})
    result = simulate(cfg)
    assert result.requests is not None
    assert all(r["status"] == "completed" for r in result.requests)
    assert max(r["prompt_tokens"] + r["output_tokens"] for r in result.requests) <= 2048
