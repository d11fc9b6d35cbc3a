"""Timed simulation of real traces through the full engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from simcore.api import simulate
from simcore.errors import ConfigError
from simcore.replay import replay
from simcore.traces import load_trace
from tests.simhelpers import small_cfg

TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"


def trace_cfg(name: str, caching: str = "prefix", limit: int = 300, **run):
    return small_cfg(
        model="Llama-3.1-8B", gpu="H100-SXM-80GB",
        engine={"block_size": 16, "prefix_caching": caching},
        workload={"kind": "trace", "path": str(TRACES / name), "limit": limit, "time_scale": 4.0},
        run={"num_requests": None, "duration_s": 1e6, "record_requests": True, **run},
    )


def test_mooncake_trace_runs_and_prefix_caching_cuts_prefill():
    name = "conversation_trace.jsonl"
    on, off = simulate(trace_cfg(name)), simulate(trace_cfg(name, "off"))
    assert on.summary["num_requests"] == off.summary["num_requests"] == 300
    assert on.summary["num_completed"] + on.summary["num_failed"] == 300
    assert off.summary["prefix_hit_rate"] == 0
    # bounded above by an infinite cache replayed in arrival order, with the same block size
    (bound,) = replay(load_trace(TRACES / name, limit=300), [float("inf")], block_size=16)
    assert 0.02 < on.summary["prefix_hit_rate"] <= bound.hit_rate
    assert on.summary["prefill_tokens_computed"] < off.summary["prefill_tokens_computed"]
    assert on.summary["ttft_p50_s"] <= off.summary["ttft_p50_s"]


def test_trace_arrivals_and_lengths_come_from_the_trace():
    res = simulate(trace_cfg("AzureLLMInferenceTrace_conv_2023.csv", limit=50))
    rows = res.requests
    assert rows is not None and len(rows) == 50
    first = (TRACES / "AzureLLMInferenceTrace_conv_2023.csv").read_text().splitlines()[1].split(",")
    assert rows[0]["prompt_tokens"] == int(first[1]) and rows[0]["output_tokens"] == int(first[2])
    assert rows[0]["arrival_s"] == 0.0
    assert all(a["arrival_s"] <= b["arrival_s"] for a, b in zip(rows, rows[1:], strict=False))
    assert res.summary["prefix_hit_rate"] == 0  # Azure traces carry no prefix identity


def test_fast_and_reference_agree_on_a_trace():
    fast = trace_cfg("synthetic_trace.jsonl", limit=150)
    ref = trace_cfg("synthetic_trace.jsonl", limit=150, mode="reference")
    a, b = simulate(fast), simulate(ref)
    assert a.summary["prefix_hit_rate"] == b.summary["prefix_hit_rate"]
    assert a.summary["num_steps"] == b.summary["num_steps"]
    assert a.requests is not None and b.requests is not None
    for x, y in zip(a.requests, b.requests, strict=True):
        assert abs(x["finish_s"] - y["finish_s"]) <= 1e-6


def test_missing_trace_is_a_config_error():
    cfg = small_cfg(engine={"block_size": 16}, workload={"kind": "trace", "path": "/nonexistent/trace.jsonl"})
    with pytest.raises(ConfigError, match="no such file"):
        simulate(cfg)
