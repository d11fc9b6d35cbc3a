"""The fast scheduler against the one-step-at-a-time reference on whole workloads."""

from __future__ import annotations

import pytest

from simcore.api import simulate
from tests.simhelpers import small_cfg

CASES = {
    "standard-chat": {"model": "Llama-3.1-8B", "gpu": "H100-SXM-80GB", "engine": {"block_size": 16},
                      "workload": {"kind": "chat", "users": 64, "turns": {"kind": "geometric", "mean": 4},
                                   "think_time_s": {"kind": "exponential", "mean": 3.0}},
                      "run": {"num_requests": 800}},
    "memory-pressure": {"engine": {"block_size": 16, "kv_budget_gib": 0.1, "max_model_len": 2048},
                        "workload": {"kind": "chat", "users": 40, "turns": 3, "output_tokens": 400},
                        "run": {"num_requests": 300}},
    "tight-budget": {"engine": {"block_size": 16, "max_num_batched_tokens": 48, "max_num_seqs": 48},
                     "workload": {"kind": "chat", "users": 80, "turns": 2}, "run": {"num_requests": 250}},
    "few-seqs": {"engine": {"block_size": 8, "max_num_seqs": 4},
                 "workload": {"kind": "chat", "users": 12, "turns": 2}, "run": {"num_requests": 120}},
    "tp2-session": {"model": "Llama-3.1-8B", "engine": {"tensor_parallel": 2, "prefix_caching": "session"},
                    "workload": {"kind": "poisson", "session_rate": 3.0, "turns": 3, "think_time_s": 1.0},
                    "run": {"num_requests": 300}},
    "off-api": {"engine": {"prefix_caching": "off"},
                "workload": {"kind": "api", "request_rate": 20.0, "system_prompt_tokens": 200},
                "run": {"num_requests": 300}},
    "cpu-offload": {"engine": {"block_size": 16, "kv_budget_gib": 0.05, "max_model_len": 1600,
                               "cpu_offload_gib": 0.1},
                    "workload": {"kind": "chat", "users": 30, "turns": 4,
                                 "think_time_s": {"kind": "exponential", "mean": 2.0}},
                    "run": {"num_requests": 300, "warmup_s": 0}},
    # a request whose CPU hits landed holds its whole prompt's blocks: when chunking leaves it
    # one prompt token that starts a block, that token needs no new block (found by
    # scripts/fuzz_fast_vs_reference.py: the decode group allocated one)
    "cpu-offload-chunked": {"engine": {"block_size": 8, "kv_budget_gib": 0.05, "max_model_len": 1600,
                                       "cpu_offload_gib": 0.1, "max_num_batched_tokens": 64,
                                       "max_num_seqs": 64},
                            "workload": {"kind": "chat", "users": 12, "turns": 4,
                                         "think_time_s": {"kind": "exponential", "mean": 1.0}},
                            "run": {"num_requests": 200, "warmup_s": 0}},
    # until: steady stops the arrivals at a check: both modes must take it at the same completion
    "until-steady": {"engine": {"block_size": 16},
                     "workload": {"kind": "chat", "users": 24, "turns": 3, "think_time_s": 0.5},
                     "run": {"until": "steady", "steady": {"ci_rel": 0.2}, "num_requests": 20_000}},
    # ... and an open loop it stops as overloaded
    "until-overloaded": {"engine": {"block_size": 16, "max_num_seqs": 4},
                         "workload": {"kind": "api", "request_rate": 30.0, "system_prompt_tokens": 0,
                                      "prompt_tokens": 200, "output_tokens": 100},
                         "run": {"until": "steady", "num_requests": 50_000}},
    "mix": {"engine": {"block_size": 8}, "workload": {"kind": "mix", "users": 30, "profiles": [
        {"weight": 3, "turns": 4, "think_time_s": 1.0},
        {"weight": 1, "sessionless": True, "user_tokens": 800, "system_prompts": 2}]},
        "run": {"num_requests": 300}},
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_matches_reference(name):
    out = {}
    for mode in ("reference", "fast"):
        case = dict(CASES[name])
        case["run"] = {**case["run"], "mode": mode, "record_requests": True}
        out[mode] = simulate(small_cfg(**case))
    ref, fast = out["reference"], out["fast"]
    exact = [
        "num_requests", "stop_reason", "steady", "num_completed", "num_failed", "prefix_hit_rate",
        "hit_request_share", "prefill_tokens_computed", "recomputed_tokens", "preemptions", "evictions",
        "kv_peak_blocks", "num_steps"
    ]
    assert {k: ref.summary[k] for k in exact} == {k: fast.summary[k] for k in exact}
    for key in ("ttft_p99_s", "tpot_p50_s", "kv_mean_util", "mean_batch_size", "warmup_end_s", "measured_s"):
        assert fast.summary[key] == pytest.approx(ref.summary[key], rel=1e-9, abs=1e-12)
    assert ref.requests is not None and fast.requests is not None
    for a, b in zip(ref.requests, fast.requests, strict=True):
        assert (a["cached_tokens"], a["preemptions"], a["recomputed_tokens"], a["status"]) == (
            b["cached_tokens"], b["preemptions"], b["recomputed_tokens"], b["status"])
        for key in ("arrival_s", "admitted_s", "first_token_s", "finish_s"):
            assert abs(a[key] - b[key]) <= 1e-6, (key, a, b)
    if name == "until-steady":
        assert ref.summary["stop_reason"] == "steady" and ref.summary["num_requests"] < 20_000
    if name == "until-overloaded":
        assert ref.summary["stop_reason"] == "overloaded" and ref.summary["num_requests"] < 50_000
        assert fast.summary["capacity_rps"] == pytest.approx(ref.summary["capacity_rps"], rel=1e-9)
    if name == "memory-pressure":
        assert ref.summary["preemptions"] > 0 and ref.summary["recomputed_tokens"] > 0
        assert ref.summary["prefill_reduction"] >= 0  # recomputation is not prefill


@pytest.mark.parametrize("impl", ["native", "pure"])
@pytest.mark.parametrize("name", ["standard-chat", "memory-pressure", "mix", "tp2-session", "cpu-offload"])
def test_fast_leaves_the_pool_block_for_block_as_reference(name, impl, monkeypatch):
    """Beyond the metrics: both modes end with the same free queue, block id for block id, and
    the same hash -> block map (so the fast path hands out and evicts exactly the same blocks).
    ``pure``: fast mode on its pure-Python twins (what runs where the compiled module is not
    built); ``native``: on the compiled ones."""
    from simcore import native
    from simcore.costmodel import kv_capacity_blocks
    from simcore.engine import Engine
    from simcore.workload import Workload

    if impl == "pure":
        monkeypatch.setattr(native, "NATIVE", None)
    elif native.NATIVE is None:
        pytest.skip("compiled module not built")
    pools = {}
    tiers = {}
    for mode in ("reference", "fast"):
        case = dict(CASES[name])
        case["run"] = {**case["run"], "mode": mode}
        cfg = small_cfg(**case)
        engine = Engine(cfg, kv_capacity_blocks(cfg)[0])
        Workload(cfg).start(engine)
        engine.run()
        pools[mode] = engine.pool
        tiers[mode] = engine.cpu.lru_order() if engine.cpu is not None else None
    assert tiers["reference"] == tiers["fast"]
    ref, fast = pools["reference"], pools["fast"]
    assert type(ref).__name__ == "BlockPool"
    assert type(fast).__name__ == ("BlockPool" if impl == "pure" else "CBlockPool")
    assert fast.free_queue() == ref.free_queue()
    assert fast.num_cached() == ref.num_cached() > 0
    assert fast.evictions == ref.evictions
    queued = ref.free_queue()[-500:]
    assert [fast.hash_of(b) for b in queued] == [ref.hash_of(b) for b in queued]


CLUSTER_CASES = {
    "rr-chat": {"model": "Llama-3.1-8B", "gpu": "H100-SXM-80GB", "engine": {"block_size": 16},
                "workload": {"kind": "chat", "users": 48, "turns": {"kind": "geometric", "mean": 3},
                             "think_time_s": {"kind": "exponential", "mean": 2.0}},
                "run": {"num_requests": 500}, "cluster": {"replicas": 3, "router": "round_robin"}},
    "prefix-pressure": {"engine": {"block_size": 16, "kv_budget_gib": 0.1},
                        "workload": {"kind": "chat", "users": 40, "turns": 3, "output_tokens": 300,
                                     "think_time_s": {"kind": "exponential", "mean": 1.0}},
                        "run": {"num_requests": 300}, "cluster": {"replicas": 3, "router": "prefix_aware"}},
    # a prefix-aware router asks about prompts while the replicas' planned windows evict blocks
    # (16 system prompts, little KV): the answers must count those evictions
    "prefix-evicting": {"engine": {"block_size": 16, "kv_budget_gib": 0.1},
                        "workload": {"kind": "chat", "users": 12, "turns": 3, "output_tokens": 100,
                                     "system_prompts": 16,
                                     "think_time_s": {"kind": "exponential", "mean": 1.0}},
                        "run": {"num_requests": 200}, "cluster": {"replicas": 3, "router": "prefix_aware"}},
    "session-tokens-poisson": {"workload": {"kind": "poisson", "session_rate": 6.0, "turns": 3,
                                            "think_time_s": 0.5},
                               "run": {"num_requests": 300},
                               "cluster": {"replicas": 2, "router": "session_affinity",
                                           "load_metric": "tokens"}},
    "offload-affinity": {"engine": {"block_size": 16, "kv_budget_gib": 0.05, "max_model_len": 1600,
                                    "cpu_offload_gib": 0.1},
                         "workload": {"kind": "chat", "users": 40, "turns": 4,
                                      "think_time_s": {"kind": "exponential", "mean": 2.0}},
                         "run": {"num_requests": 300}, "cluster": {"replicas": 2, "router": "prefix_aware"}},
    # little KV, a CPU tier: requests whose copies landed wait holding their prompts' blocks
    # while the running ones preempt one another (once: nothing left to run, a crash)
    "offload-preempt": {"engine": {"block_size": 16, "cpu_offload_gib": 0.05, "kv_budget_gib": 0.1,
                                   "max_model_len": 1600},
                        "workload": {"kind": "chat", "users": 48, "turns": 4, "system_prompts": 4},
                        "run": {"num_requests": 200}, "cluster": {"replicas": 3, "router": "prefix_aware"}},
    "affinity-until-steady": {"engine": {"block_size": 16},
                              "workload": {"kind": "chat", "users": 36, "turns": 3, "think_time_s": 0.5},
                              "run": {"until": "steady", "steady": {"ci_rel": 0.2}, "num_requests": 20_000},
                              "cluster": {"replicas": 3, "router": "session_affinity"}},
    "prefix-snapshot": {"workload": {"kind": "chat", "users": 40, "turns": 3,
                                     "think_time_s": {"kind": "exponential", "mean": 1.0}},
                        "run": {"num_requests": 300},
                        "cluster": {"replicas": 4, "router": "prefix_aware", "snapshot_interval_s": 0.5}},
    "random-mix": {"workload": {"kind": "mix", "users": 30, "profiles": [
        {"weight": 3, "turns": 4, "think_time_s": 1.0},
        {"weight": 1, "sessionless": True, "user_tokens": 800, "system_prompts": 2}]},
        "run": {"num_requests": 300}, "cluster": {"replicas": 3, "router": "random"}},
    "least-think0": {"engine": {"block_size": 8, "max_num_seqs": 8},
                     "workload": {"kind": "chat", "users": 24, "turns": 2},
                     "run": {"num_requests": 200}, "cluster": {"replicas": 2, "router": "least_loaded"}},
    # a replica's loop wakes at its lookahead (a window's end + the least client wait) and SimPy's
    # clock lands an ulp past that sum: a completion due exactly then is due now, not an error
    # (found by scripts/fuzz_fast_vs_reference.py, seed 195)
    "rounding-wake": {"model": "Llama-3.2-1B", "gpu": "H100-SXM-80GB",
                      "engine": {"tensor_parallel": 2, "block_size": 4, "max_num_seqs": 64,
                                 "max_num_batched_tokens": 256, "max_model_len": 1600, "kv_budget_gib": 0.3,
                                 "cost": {"frontend_latency_s": 0.004, "first_token_lag_steps": 0}},
                      "workload": {"kind": "chat", "users": 24, "system_prompts": 1,
                                   "system_prompt_tokens": 0,
                                   "user_tokens": {"kind": "lognormal", "mean": 399, "sigma": 0.8},
                                   "output_tokens": {"kind": "lognormal", "mean": 211, "sigma": 0.8,
                                                     "max": 600}},
                      "run": {"num_requests": 108, "seed": 195},
                      "cluster": {"replicas": 3, "router": "round_robin"}},
    # no think time: a replica deferred to its lookahead wakes exactly when a finished request's
    # client acts; the completion due then must run (its client's request is read and routed)
    # before the replica's next steps, not after steps it ran past it (found by
    # scripts/fuzz_fast_vs_reference.py, seed 371: a load read counted a later step's finisher)
    "due-at-wake": {"engine": {"block_size": 16, "max_num_seqs": 4, "max_num_batched_tokens": 256},
                    "workload": {"kind": "chat", "users": 20, "system_prompt_tokens": 100,
                                 "user_tokens": {"kind": "lognormal", "mean": 363, "sigma": 0.8},
                                 "output_tokens": {"kind": "lognormal", "mean": 248, "sigma": 0.8,
                                                   "max": 600}},
                    "run": {"num_requests": 1118, "seed": 371},
                    "cluster": {"replicas": 2, "router": "session_affinity", "load_metric": "tokens"}},
    # ... and with a client wait that every request shares: the completion due at the wake sends
    # its client's next request to the same replica, whose cut leaves its next step after now
    # (the loop must wait for it, not run it at once; scripts/fuzz_fast_vs_reference.py, seed 553)
    "due-then-cut": {"model": "Llama-3.1-8B", "gpu": "A100-40GB",
                     "engine": {"block_size": 16, "max_num_seqs": 16, "max_num_batched_tokens": 2048,
                                "cost": {"frontend_latency_s": 0.004, "first_token_lag_steps": 0}},
                     "workload": {"kind": "chat", "users": 15, "system_prompts": 2, "system_prompt_tokens": 0,
                                  "turns": {"kind": "geometric", "mean": 4}, "think_time_s": 0.2,
                                  "user_tokens": {"kind": "lognormal", "mean": 176, "sigma": 0.8},
                                  "output_tokens": {"kind": "lognormal", "mean": 71, "sigma": 0.8,
                                                    "max": 600}},
                     "run": {"num_requests": 200, "seed": 553},
                     "cluster": {"replicas": 3, "router": "random"}},
    # a shared pool (eager replicas): every replica's stores and lookups in the reference's order
    "shared-write-through": {"engine": {"block_size": 16, "kv_budget_gib": 0.05, "max_model_len": 1600},
                             "workload": {"kind": "chat", "users": 48, "turns": 4,
                                          "think_time_s": {"kind": "exponential", "mean": 2.0}},
                             "run": {"num_requests": 400},
                             "cluster": {"replicas": 4, "router": "round_robin", "shared_pool_gib": 0.1}},
    "shared-on-eviction-cpu": {"engine": {"block_size": 16, "kv_budget_gib": 0.05, "max_model_len": 1600,
                                          "cpu_offload_gib": 0.02},
                               "workload": {"kind": "chat", "users": 48, "turns": 4,
                                            "think_time_s": {"kind": "exponential", "mean": 2.0}},
                               "run": {"num_requests": 400},
                               "cluster": {"replicas": 3, "router": "random", "shared_pool_gib": 0.1,
                                           "shared_pool_policy": "on_eviction"}},
    "shared-until-steady": {"engine": {"block_size": 16, "kv_budget_gib": 0.05, "max_model_len": 1600},
                            "workload": {"kind": "chat", "users": 48, "turns": 4,
                                         "think_time_s": {"kind": "exponential", "mean": 2.0}},
                            "run": {"until": "steady", "steady": {"ci_rel": 0.2}, "num_requests": 20_000},
                            "cluster": {"replicas": 3, "router": "session_affinity", "shared_pool_gib": 0.1}},
    # long prompts chunked beside decoding members: one step's stores from both, in admission order
    "shared-chunked-prefix": {"engine": {"block_size": 16, "kv_budget_gib": 0.5,
                                         "max_num_batched_tokens": 256},
                              "workload": {"kind": "chat", "users": 48, "turns": 3, "user_tokens": 900,
                                           "output_tokens": 150,
                                           "think_time_s": {"kind": "exponential", "mean": 1.0}},
                              "run": {"num_requests": 300},
                              "cluster": {"replicas": 3, "router": "prefix_aware", "shared_pool_gib": 0.05,
                                          "snapshot_interval_s": 0.5}},
}


@pytest.mark.parametrize("name", sorted(CLUSTER_CASES))
def test_cluster_fast_matches_reference(name):
    """Clusters: the same routing (each request's replica), per-request times and cache figures,
    and every replica's block pool, block id for block id."""
    from simcore.cluster import Cluster
    from simcore.costmodel import kv_capacity_blocks
    from simcore.workload import Workload

    out = {}
    for mode in ("reference", "fast"):
        case = dict(CLUSTER_CASES[name])
        case["run"] = {**case["run"], "mode": mode, "record_requests": True}
        cfg = small_cfg(**case)
        cluster = Cluster(cfg, kv_capacity_blocks(cfg)[0])
        Workload(cfg).start(cluster)
        cluster.run()
        out[mode] = cluster
    ref, fast = out["reference"], out["fast"]
    assert len(ref.records) == len(fast.records)
    assert (ref.stop_reason, ref.stop_s) == (fast.stop_reason, fast.stop_s)
    if name.endswith("until-steady"):
        assert ref.stop_reason == "steady" and len(ref.records) < 20_000
    else:
        assert len(ref.records) == CLUSTER_CASES[name]["run"]["num_requests"]
    for a, b in zip(ref.records, fast.records, strict=True):
        assert (a.replica, a.cached_tokens, a.preemptions, a.status) == (b.replica, b.cached_tokens,
                                                                         b.preemptions, b.status), (a, b)
        for key in ("arrival_s", "admitted_s", "first_token_s", "finish_s"):
            assert abs(getattr(a, key) - getattr(b, key)) <= 1e-6, (key, a, b)
    assert len({r.replica for r in ref.records}) == len(ref.engines)  # every replica served some
    for e_ref, e_fast in zip(ref.engines, fast.engines, strict=True):
        assert e_fast.pool.free_queue() == e_ref.pool.free_queue()
        assert e_fast.pool.evictions == e_ref.pool.evictions
        assert e_fast.counters.steps == e_ref.counters.steps
        assert e_fast.counters.preemptions == e_ref.counters.preemptions
    if name == "prefix-pressure":
        assert sum(e.counters.preemptions for e in ref.engines) > 0
    if ref.shared is not None:
        assert fast.shared is not None and ref.shared.evictions > 0 and ref.shared.hit_blocks > 0
        assert fast.shared.lru_order() == ref.shared.lru_order()
        assert (fast.shared.evictions, fast.shared.hit_blocks) == (ref.shared.evictions,
                                                                   ref.shared.hit_blocks)
        assert type(fast.engines[0].scheduler).__name__ == "FastScheduler"  # it ran fast, in fewer events
        assert sum(e.counters.events for e in fast.engines) < sum(e.counters.events for e in ref.engines)
