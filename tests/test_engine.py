"""The engine end to end: memory pressure, failures, no block leaks, scale, determinism."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simcore.api import simulate
from simcore.config import SimConfig
from simcore.costmodel import CostModel
from tests.simhelpers import Scripted, run_engine, run_script, small_cfg


def _pressure_cfg(**over) -> SimConfig:
    base = {
        "engine": {"block_size": 16, "kv_budget_gib": 0.1, "max_num_batched_tokens": 2048,
                   "max_model_len": 2048},
        "workload": {"kind": "chat", "users": 48, "turns": 3, "system_prompt_tokens": 300,
                     "user_tokens": 150, "output_tokens": {"kind": "lognormal", "mean": 300, "max": 900},
                     "think_time_s": 0.5},
        "run": {"num_requests": 400, "record_requests": True},
    }
    base.update(over)
    return small_cfg(**base)


def test_memory_pressure_preempts_and_every_request_ends():
    cfg = _pressure_cfg()
    engine = run_engine(cfg)
    assert engine.counters.preemptions > 0
    assert engine.counters.evictions == engine.pool.evictions > 0
    statuses = {r.status for r in engine.records}
    assert statuses <= {"completed", "failed"}
    assert len(engine.records) == 400
    # every block is free or cached once the last request is done: no leak
    assert engine.pool.num_used() == 0
    engine.pool.check_invariants()


def test_no_leak_with_tensor_parallel_and_failed_requests():
    cfg = small_cfg(
        model="Llama-3.1-8B",
        engine={"block_size": 16, "tensor_parallel": 2, "kv_budget_gib": 0.06},
        workload={"kind": "chat", "users": 16, "turns": 2, "system_prompt_tokens": 200,
                  "user_tokens": {"kind": "choice", "values": [100, 9000]}, "output_tokens": 200},
        run={"num_requests": 120},
    )
    engine = run_engine(cfg)
    failed = [r for r in engine.records if r.status == "failed"]
    assert failed, "some 9000-token prompts must not fit the tiny cache"
    assert all("KV blocks" in r.error for r in failed)
    assert sum(r.status == "completed" for r in engine.records) + len(failed) == 120
    assert engine.pool.num_used() == 0
    engine.pool.check_invariants()


def test_request_longer_than_context_fails_with_reason():
    cfg = small_cfg(model={"name": "Llama-3.2-1B", "max_context": 64})
    (r,) = run_script(cfg, 1000, [Scripted(0.0, [(1, 60)], output=10)]).records
    assert r.status == "failed" and "exceed max_model_len 64 (vLLM rejects the request)" in r.error


def test_infeasible_model_is_a_result_not_a_crash():
    res = simulate(small_cfg(model="Llama-3.1-70B", gpu="A100-40GB", engine={"block_size": 16}))
    assert res.status == "infeasible"
    assert "weights" in res.error and res.summary["ttft_p50_s"] is None


def test_thousand_concurrent_users_complete():
    cfg = small_cfg(
        engine={"block_size": 16, "max_num_seqs": 512},
        workload={"kind": "chat", "users": 1200, "turns": 2, "think_time_s": 2.0},
        run={"num_requests": 2500},
    )
    s = simulate(cfg).summary
    assert s["num_completed"] == 2500 and s["num_failed"] == 0
    assert s["mean_batch_size"] > 100


def test_bigger_model_is_slower_per_step_on_the_same_gpu():
    def model_cfg(name: str) -> SimConfig:
        return small_cfg(model=name, gpu="H100-SXM-80GB", engine={"block_size": 16})

    small, big = CostModel(model_cfg("Llama-3.2-1B")), CostModel(model_cfg("Llama-3.1-8B"))
    for tokens, ctx, seqs in [(1, 1000, 1), (64, 64 * 2000, 64), (4096, 4096 * 2048, 2)]:
        assert big.step_time(tokens, ctx, ctx, seqs) > small.step_time(tokens, ctx, ctx, seqs)
    wl = {"kind": "chat", "users": 16}
    tpot = [simulate(small_cfg(model=m, gpu="H100-SXM-80GB", engine={"block_size": 16},
                               workload=wl)).summary["tpot_p50_s"]
            for m in ("Llama-3.2-1B", "Llama-3.1-8B")]
    assert tpot[1] > tpot[0]


def test_same_config_and_seed_give_the_same_summary():
    cfg = _pressure_cfg()
    a, b = simulate(cfg), simulate(cfg)
    drop = {"sim_wall_s"}
    assert {k: v for k, v in a.summary.items() if k not in drop} == {
        k: v for k, v in b.summary.items() if k not in drop
    }
    assert a.requests == b.requests
    other = simulate(cfg.model_copy(update={"run": cfg.run.model_copy(update={"seed": 1})}))
    assert other.summary["ttft_p50_s"] != a.summary["ttft_p50_s"]


# ---- random request streams (hypothesis) -----------------------------------------------------
request = st.tuples(
    st.floats(0, 3, allow_nan=False),  # arrival
    st.lists(st.tuples(st.integers(1, 4), st.integers(1, 20)), min_size=1, max_size=4),  # segments
    st.integers(1, 30),  # output tokens
    st.integers(-1, 2),  # session
)


@settings(max_examples=int(os.environ.get("KVSWEEP_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(request, min_size=1, max_size=25),
    st.integers(4, 60),
    st.sampled_from([1, 2, 4]),
    st.sampled_from(["off", "session", "prefix"]),
    st.sampled_from([8, 32, 4096]),
    st.sampled_from([2, 256]),
)
def test_random_streams_keep_invariants_and_fast_equals_reference(
    reqs, num_blocks, block_size, mode, budget, max_seqs
):
    script = [Scripted(at, segs, out, session_id=s, root=max(s, 0) if mode == "session" else 0)
              for at, segs, out, s in reqs]
    results = {}
    for sim_mode in ("reference", "fast"):
        cfg = small_cfg(
            engine={"block_size": block_size, "prefix_caching": mode, "max_num_batched_tokens": budget,
                    "max_num_seqs": max_seqs},
            run={"mode": sim_mode},
        )
        res = run_script(cfg, num_blocks, script)
        pool = res.engine.pool
        pool.check_invariants()
        assert pool.num_used() == 0
        assert min(pool.ref_cnt) >= 0
        recs = res.records
        ended = sum(r.status == "completed" for r in recs) + sum(r.status == "failed" for r in recs)
        assert ended == len(script)
        for r in recs:
            assert r.cached_tokens <= max(r.prompt_tokens - 1, 0)
            if r.status == "failed":
                assert r.error
        results[sim_mode] = (recs, pool.evictions, res.engine.counters)
    (ref, ev_ref, c_ref), (fast, ev_fast, c_fast) = results["reference"], results["fast"]
    assert ev_ref == ev_fast
    assert (c_ref.steps, c_ref.preemptions, c_ref.peak_used_blocks) == (
        c_fast.steps, c_fast.preemptions, c_fast.peak_used_blocks)
    for a, b in zip(ref, fast, strict=True):
        assert (a.status, a.cached_tokens, a.preemptions, a.prefill_computed_tokens) == (
            b.status, b.cached_tokens, b.preemptions, b.prefill_computed_tokens)
        for key in ("admitted_s", "first_token_s", "finish_s"):
            assert abs(getattr(a, key) - getattr(b, key)) <= 1e-6


def test_wall_time_limit_stops_a_runaway_run():
    import pytest

    from simcore.engine import SimulationTimeout

    cfg = small_cfg(engine={"block_size": 16}, workload={"kind": "chat", "users": 64},
                    run={"num_requests": 10**6})
    with pytest.raises(SimulationTimeout, match="wall-time limit of 0.2 s"):
        simulate(cfg, wall_limit_s=0.2)


@pytest.mark.timeout(60)  # without the failure back-off this loops forever at one instant
def test_duration_only_run_with_requests_that_never_fit_still_ends():
    cfg = small_cfg(
        engine={"block_size": 16, "kv_budget_gib": 0.01, "max_model_len": 320},  # 20 blocks: 320 tokens
        workload={"kind": "chat", "users": 3, "system_prompt_tokens": 1000, "think_time_s": 0},
        run={"num_requests": None, "duration_s": 5.0},
    )
    s = simulate(cfg).summary
    assert s["num_requests"] == s["num_failed"] > 0
    assert s["num_completed"] == 0


@pytest.mark.timeout(60)  # turns were once capped at 2**30, drawing a billion message lengths
def test_absurd_turn_count_is_capped_by_what_the_context_can_hold():
    cfg = small_cfg(
        model={"name": "Llama-3.2-1B", "max_context": 2048},
        engine={"block_size": 16},
        workload={"kind": "chat", "users": 2, "turns": 10**12, "user_tokens": 50, "output_tokens": 20},
        run={"num_requests": 40, "record_requests": True},
    )
    res = simulate(cfg)
    assert res.summary["num_completed"] == 40
    assert res.requests is not None
    # sessions end when the context is full: 2048 // 70 tokens per turn -> at most 29 turns
    assert max(r["turn"] for r in res.requests) < 2048 // 70


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_completion_fires_after_the_clients_wait_while_the_engine_runs_on(mode):
    """A request's completion event fires its client's wait after the request finishes (the
    engine schedules it once the finish is known) while the engine keeps serving the others."""
    from simcore.engine import Engine
    from simcore.hashing import TokenSeq

    engine = Engine(small_cfg(run={"num_requests": 10, "mode": mode}), 1000)
    env = engine.env
    resumed: dict[str, tuple[bool, float]] = {}

    def client(name: str, content: int, output: int, wait: float):
        seq = TokenSeq(4)
        seq.append(content, 40)
        prompt = seq.num_tokens
        seq.append(content + 1, output)
        ok = yield engine.submit(seq, prompt, output, then_wait_s=wait)
        resumed[name] = (ok, env.now)

    env.process(client("short", 10, 5, 0.25))
    env.process(client("long", 20, 400, 0.0))
    engine.run()
    short, long = sorted(engine.records, key=lambda r: r.request_id)
    assert resumed["short"][0] is True and resumed["long"][0] is True
    assert resumed["short"][1] == pytest.approx(short.finish_s + 0.25, abs=1e-12)
    assert resumed["long"][1] == pytest.approx(long.finish_s, abs=1e-12)
    assert short.finish_s + 0.25 < long.finish_s  # the long one ran on past the short one's wait


def test_a_completion_cannot_be_scheduled_in_the_past():
    import simpy

    from simcore.engine import Completion

    with pytest.raises(ValueError, match="in the past"):
        Completion(simpy.Environment()).fire_after(-0.5, True)


@pytest.mark.parametrize(("caching", "recomputed", "cached"), [("off", 8, 0), ("prefix", 4, 0)])
def test_recomputation_after_preemption_is_counted_apart_from_prefill(caching, recomputed, cached):
    """Hand-worked: 5 usable blocks of 4 tokens; A and B (8-token prompts, 8 output tokens)
    prefill together (2 blocks each, one free). Next step A takes the free block for its 9th
    token and B, needing one too, is preempted after computing its 8 prompt tokens. B comes
    back once A finishes. Caching off: B computes its 8 prompt tokens again. Prefix caching:
    B's two full blocks were freed as cached, A's 4th block evicted the deeper one, so B hits
    1 block on re-admission and recomputes 4 tokens. Either way B's prefill (its prompt less
    its first-admission hit) stays 8 tokens and the run's prefill reduction is not negative."""
    cfg = small_cfg(engine={"block_size": 4, "prefix_caching": caching})
    script = [Scripted(0.0, [(1, 8)], output=8), Scripted(0.0, [(2, 8)], output=8)]
    a, b = run_script(cfg, 6, script).records
    assert (a.preemptions, a.recomputed_tokens, a.prefill_computed_tokens) == (0, 0, 8)
    assert (b.preemptions, b.recomputed_tokens, b.prefill_computed_tokens) == (1, recomputed, 8)
    assert b.cached_tokens == cached
