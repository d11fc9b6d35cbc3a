"""Steady state: the measured window, the verdict, within-run CIs, SLO figures, no_data and
``run.until: steady`` (simcore/steady.py, metrics.py, engine.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from simcore.api import simulate
from simcore.config import RunConfig, SimConfig, SloConfig
from simcore.metrics import Counters, RequestRecord, summarize
from simcore.steady import Setting
from tests.simhelpers import small_cfg


def _records(n: int, *, admitted=None, ttft=None, e2e=None, cached=None) -> list[RequestRecord]:
    """``n`` completed requests arriving one per second (prompt 100, output 3 tokens). Defaults:
    admitted on arrival, first token 0.5 s and finish 2 s after it, nothing cached."""
    out = []
    for i in range(n):
        a = float(i)
        adm = admitted(i) if admitted else a
        first = adm + (ttft(i) if ttft else 0.5)
        out.append(RequestRecord(
            request_id=i, session_id=-1, turn=0, profile=0, arrival_s=a, admitted_s=adm,
            first_token_s=first, finish_s=first + (e2e(i) if e2e else 1.5), prompt_tokens=100,
            cached_tokens=cached(i) if cached else 0, output_tokens=3, status="completed"))
    return out


def _summary(records: list[RequestRecord], setting: Setting, stop_s: float,
             cache_full_s: float | None = None) -> dict:
    return summarize(records, Counters(), setting, stop_s=stop_s, stop_reason="num_requests",
                     cache_full_s=cache_full_s, capacity_blocks=100, block_size=16, wall_s=0.0)


def test_the_window_measures_arrivals_and_counts_completions_by_hand():
    """Arrivals at 0..299 s, each done 2 s later; warm-up 50 s, arrivals stop at 299 s. Measured:
    the 250 arrivals in [50, 299]; throughput: the 250 completions in it (arrivals 48..297) over
    249 s. Every TTFT is 0.5 s and every TPOT 0.75 s: zero-width intervals, steady."""
    s = _summary(_records(300), Setting(50.0, None, SloConfig(ttft_s=1.0)), stop_s=299.0)
    window = (s["warmup_rule"], s["warmup_end_s"], s["measured_s"], s["num_measured"])
    assert window == ("explicit", 50.0, 249.0, 250)
    assert s["throughput_rps"] == 250 / 249
    assert s["output_tokens_per_s"] == 750 / 249
    assert (s["ttft_mean_s"], s["ttft_p99_s"], s["tpot_mean_s"]) == (0.5, 0.5, 0.75)
    assert (s["ttft_mean_s_ci95_run"], s["tpot_mean_s_ci95_run"]) == (0.0, 0.0)
    assert s["ttft_p99_s_ci95_run"] is None  # 250 requests: fewer than 10 sections of 100
    assert s["throughput_rps_ci95_run"] is not None
    assert (s["steady"], s["steady_reason"], s["capacity_rps"]) == (True, "", None)
    assert (s["slo_attainment"], s["goodput_rps"]) == (1.0, 250 / 249)
    strict = _summary(_records(300), Setting(50.0, None, SloConfig(ttft_s=0.4)), stop_s=299.0)
    assert (strict["slo_attainment"], strict["goodput_rps"]) == (0.0, 0.0)
    tpot = _summary(_records(300), Setting(50.0, None, SloConfig(ttft_s=1.0, tpot_s=0.7)), stop_s=299.0)
    assert tpot["slo_attainment"] == 0.0
    assert _summary(_records(300), Setting(50.0, None, None), stop_s=299.0)["slo_attainment"] is None


def test_an_open_loop_whose_queue_grows_is_overloaded_and_its_throughput_is_the_capacity():
    """One request a second, admitted one every 2 s: at t the queue holds about t / 2 requests.
    Over [0, 299]: 300 arrivals, 150 admitted, growth 150 / 299 req/s; completions (2i + 2.5 s)
    inside the window: 149."""
    recs = _records(300, admitted=lambda i: 2.0 * i, e2e=lambda i: 2.0)
    s = _summary(recs, Setting(0.0, None, None), stop_s=299.0)
    assert s["steady_reason"] == f"overloaded: queue grows {150 / 299:.3g} req/s"
    assert s["steady"] is False
    assert s["capacity_rps"] == s["throughput_rps"] == 149 / 299
    closed = _summary(recs, Setting(0.0, 10, None), stop_s=299.0)
    assert not closed["steady_reason"].startswith("overloaded")  # chat users cannot outrun it


def test_a_hit_rate_that_falls_across_the_window_is_a_filling_cache():
    recs = _records(300, cached=lambda i: 80 if i < 150 else 40)
    s = _summary(recs, Setting(0.0, None, None), stop_s=299.0)
    assert s["steady_reason"] == "cache still filling: hit rate 0.80 -> 0.40 across the measured window"


def test_a_cache_that_first_fills_inside_an_explicit_window_is_still_filling():
    s = _summary(_records(300), Setting(0.0, None, None), stop_s=299.0, cache_full_s=120.0)
    assert s["steady_reason"].startswith("cache still filling: the KV cache first filled at 120 s")
    auto = _summary(_records(300), Setting(None, None, None), stop_s=299.0, cache_full_s=120.0)
    assert auto["warmup_end_s"] == 120.0 and auto["warmup_rule"] == "mser5"  # the warm-up waits for it


def test_rising_latency_is_drift_and_mser5_cuts_a_transient():
    rising = _summary(_records(300, ttft=lambda i: 0.1 + i / 100), Setting(0.0, None, None), stop_s=299.0)
    assert rising["steady_reason"].startswith("latency still drifting: TTFT mean")
    # a slow start (TTFT 5 s for the first 100 requests) then steady: MSER-5 cuts it exactly
    start = _summary(_records(400, ttft=lambda i: 5.0 if i < 100 else 0.5), Setting(None, None, None), 399.0)
    assert (start["warmup_end_s"], start["num_measured"], start["ttft_mean_s"]) == (100.0, 300, 0.5)


def test_too_few_measured_requests_per_closed_loop_user():
    s = _summary(_records(300), Setting(0.0, 100, None), stop_s=299.0)
    assert s["steady_reason"] == ("too few measured requests (300; a verdict needs 500: 5 per user):"
                                  " run longer")
    tiny = _summary(_records(50), Setting(0.0, 2, None), stop_s=49.0)
    assert tiny["steady_reason"].startswith("too few measured requests (50; a verdict needs 100)")


# ---- whole simulations ---------------------------------------------------------------------------

def _chat(**run: object) -> SimConfig:
    return small_cfg(engine={"block_size": 16},
                     workload={"kind": "chat", "users": 32, "turns": 4,
                               "think_time_s": {"kind": "exponential", "mean": 1.0}},
                     run=run)


def test_a_duration_only_run_has_no_hidden_request_cap_and_measures_requests():
    s = simulate(_chat(duration_s=300.0)).summary
    assert s["num_requests"] > 2000  # the old hidden default capped it at 2000
    assert s["stop_reason"] == "duration_s" and s["num_measured"] > 0
    assert s["warmup_end_s"] + s["measured_s"] == 300.0


def test_a_run_that_ends_inside_its_warm_up_is_no_data():
    res = simulate(_chat(duration_s=50.0, warmup_s=100.0))
    assert res.status == "no_data"
    assert res.error == ("no request arrived in the measured window: warm-up ends at 100 s but arrivals"
                         " stopped at 50 s (lengthen the run or lower run.warmup_s)")
    assert res.summary["num_requests"] > 0 and res.summary["num_measured"] == 0
    assert res.summary["steady"] is False


def test_a_run_whose_every_request_fails_is_no_data():
    cfg = small_cfg(engine={"block_size": 16, "max_model_len": 256},
                    workload={"kind": "chat", "users": 2, "system_prompt_tokens": 1000},
                    run={"duration_s": 5.0})
    res = simulate(cfg)
    assert res.status == "no_data"
    n = res.summary["num_requests"]
    assert res.error.startswith(f"no request completed: all {n} failed (first: prompt")


def test_warmup_flags_in_the_request_table_follow_the_cut():
    res = simulate(_chat(num_requests=1500, record_requests=True))
    cut = res.summary["warmup_end_s"]
    assert res.summary["warmup_rule"] == "mser5" and cut > 0
    assert res.requests is not None
    assert all(r["warmup"] == (r["arrival_s"] < cut) for r in res.requests)
    assert sum(not r["warmup"] for r in res.requests) == res.summary["num_measured"]
    explicit = simulate(_chat(num_requests=1500, warmup_s=7.5)).summary
    assert (explicit["warmup_rule"], explicit["warmup_end_s"]) == ("explicit", 7.5)


def test_until_steady_stops_when_the_intervals_are_met_and_is_the_same_in_both_modes():
    out = {mode: simulate(_chat(mode=mode, steady={"ci_rel": 0.1}, record_requests=True))
           for mode in ("fast", "reference")}
    fast, ref = out["fast"].summary, out["reference"].summary
    assert fast["stop_reason"] == "steady" and fast["steady"] is True
    assert 1000 < fast["num_requests"] < 100_000
    for col in ("ttft_mean_s", "ttft_p99_s", "throughput_rps"):  # what the stopping check saw
        assert fast[f"{col}_ci95_run"] <= 0.1 * fast[col]
    assert fast["num_measured"] < fast["num_completed"]  # those in flight at the stop are left out
    assert fast["num_requests"] == ref["num_requests"]
    assert fast["warmup_end_s"] + fast["measured_s"] == ref["warmup_end_s"] + ref["measured_s"]  # same stop
    assert fast["ttft_p99_s"] == pytest.approx(ref["ttft_p99_s"], rel=1e-9)
    tighter = simulate(_chat(steady={"ci_rel": 0.05})).summary
    assert tighter["num_requests"] > fast["num_requests"]


def test_until_steady_stops_an_overloaded_open_loop_and_reports_its_capacity():
    cfg = small_cfg(engine={"block_size": 16, "max_num_seqs": 16},
                    workload={"kind": "api", "request_rate": 40.0, "system_prompt_tokens": 0,
                              "prompt_tokens": 500, "output_tokens": 200},
                    run={"until": "steady", "num_requests": 50_000})
    s = simulate(cfg).summary
    assert s["stop_reason"] == "overloaded" and s["num_requests"] < 50_000
    assert s["steady_reason"].startswith("overloaded: queue grows")
    assert s["capacity_rps"] == s["throughput_rps"] < 40.0


def test_how_runs_end():
    def cfg(run: dict, workload: dict | None = None) -> SimConfig:
        return small_cfg(run=run, **({"workload": workload} if workload else {}))

    assert cfg({}).until_steady and cfg({}).max_requests == 100_000  # stated, not hidden: see README
    assert not cfg({"duration_s": 10}).until_steady and cfg({"duration_s": 10}).max_requests is None
    assert cfg({"until": "steady", "num_requests": 500}).max_requests == 500
    trace = {"kind": "trace", "path": "t.jsonl"}
    assert not cfg({}, trace).until_steady and cfg({}, trace).max_requests is None  # the whole trace
    assert cfg({"until": "steady"}, trace).until_steady
    with pytest.raises(ValidationError, match="until: limits needs num_requests or duration_s"):
        RunConfig(until="limits")
    with pytest.raises(ValidationError, match="give at least one of ttft_s, tpot_s, e2e_s"):
        SloConfig()
