"""The shared_prefix workload (a load generator's shared-prefix data under constant-rate stages)
and the client-side time offsets (front-end latency, first-token streaming lag)."""

from __future__ import annotations

import pytest

from simcore.api import simulate
from simcore.config import SimConfig
from simcore.engine import client_times


def sp_cfg(**cost: float) -> SimConfig:
    """Client-side offsets off unless given (the H100 profile has both)."""
    cost = {"frontend_latency_s": 0.0, "first_token_lag_steps": 0.0, **cost}
    return SimConfig.model_validate({
        "model": "Llama-3.2-1B", "gpu": "H100-SXM-80GB",
        "engine": {"block_size": 16, "cost": cost},
        "workload": {"kind": "shared_prefix", "groups": 3, "prompts_per_group": 4,
                     "system_prompt_tokens": 100, "question_tokens": 200, "output_tokens": 30,
                     "stages": [{"rate": 5, "duration_s": 10}, {"rate": 20, "duration_s": 5.5}]},
        "run": {"num_requests": 1000, "record_requests": True},
    })


def test_stages_send_exact_counts_with_exact_lengths_and_cycle_the_prompts() -> None:
    res = simulate(sp_cfg())
    rows = res.requests
    assert rows is not None and len(rows) == 50 + 110  # int(5 x 10) + int(20 x 5.5)
    # each stage's exponential gaps are rescaled to fill it: its last request comes at its end
    assert rows[49]["arrival_s"] == pytest.approx(10.0) and rows[-1]["arrival_s"] == pytest.approx(15.5)
    assert rows[48]["arrival_s"] < 10.0 < rows[50]["arrival_s"]
    assert {(r["prompt_tokens"], r["output_tokens"], r["status"]) for r in rows} == {(300, 30, "completed")}
    # 12 prompts: the first cycle meets each once; a group's later prompts hit its system prompt's
    # 6 full blocks (96 tokens); from the second cycle on every prompt hits all but its last
    # block: 299 tokens -> 18 full blocks = 288 (the last token is always computed)
    cycle = rows[:12]
    assert sorted(r["cached_tokens"] for r in cycle) == [0] * 3 + [96] * 9
    assert {r["cached_tokens"] for r in rows[12:]} == {288}


def test_same_config_same_requests() -> None:
    a, b = simulate(sp_cfg()), simulate(sp_cfg())
    assert a.requests == b.requests


def test_front_end_latency_moves_every_client_time_by_itself_and_nothing_else() -> None:
    """Open loop: the engine does exactly the same work; TTFT and E2E grow by d, exactly."""
    d = 0.0123
    base, moved = simulate(sp_cfg()), simulate(sp_cfg(frontend_latency_s=d))
    assert moved.summary["num_steps"] == base.summary["num_steps"]
    for a, b in zip(base.requests or [], moved.requests or [], strict=True):
        assert b["arrival_s"] == a["arrival_s"] and b["admitted_s"] == a["admitted_s"]
        assert b["first_token_s"] == pytest.approx(a["first_token_s"] + d, abs=1e-12)
        assert b["finish_s"] == pytest.approx(a["finish_s"] + d, abs=1e-12)
    assert moved.summary["ttft_mean_s"] == pytest.approx(base.summary["ttft_mean_s"] + d)


def test_first_token_lag_is_counted_in_the_requests_own_decode_steps() -> None:
    k = 1.5
    base, lagged = simulate(sp_cfg()), simulate(sp_cfg(first_token_lag_steps=k))
    for a, b in zip(base.requests or [], lagged.requests or [], strict=True):
        step = (a["finish_s"] - a["first_token_s"]) / (a["output_tokens"] - 1)
        assert b["first_token_s"] == pytest.approx(a["first_token_s"] + k * step, abs=1e-12)
        assert b["finish_s"] == a["finish_s"]
    assert client_times(1.0, 2.0, 3, 0.0, 10.0) == (2.0, 2.0)  # never after the last token
    assert client_times(1.0, 2.0, 1, 0.5, 10.0) == (1.5, 2.5)  # one token: nothing to lag behind


def test_closed_loop_users_wait_for_what_they_see() -> None:
    """A chat user sends its next turn its think time after the reply reached it, front-end
    latency included."""
    d, think = 0.05, 0.7
    cfg = SimConfig.model_validate({
        "model": "Llama-3.2-1B", "gpu": "H100-SXM-80GB",
        "engine": {"cost": {"frontend_latency_s": d, "first_token_lag_steps": 0.0}},
        "workload": {"kind": "chat", "users": 1, "turns": 5, "think_time_s": think, "output_tokens": 20},
        "run": {"num_requests": 5, "record_requests": True},
    })
    rows = simulate(cfg).requests or []
    assert [r["turn"] for r in rows] == [0, 1, 2, 3, 4]
    for prev, nxt in zip(rows, rows[1:], strict=False):
        assert nxt["arrival_s"] == pytest.approx(prev["finish_s"] + think, abs=1e-9)
