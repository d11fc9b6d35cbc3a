"""Clusters of engine replicas behind a router: exact hand-worked cases, one replica against the
single engine, every request served once, routers ranked on shared-system-prompt chat."""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import pytest

from simcore.api import simulate
from simcore.cluster import Cluster
from simcore.costmodel import kv_capacity_blocks
from simcore.hashing import TokenSeq
from simcore.metrics import RequestRecord, summarize
from simcore.steady import Setting
from tests.simhelpers import run_engine, small_cfg

# ---- a hand-worked case ---------------------------------------------------------------------
# Block size 4. Three conversations A, B, C share a 16-token system prompt (4 blocks). Turn 1:
# system prompt + a 6-token message (22 tokens), 8 output tokens; A1, B1, C1 arrive 1 ms apart,
# so each is still running when the next arrives. Turn 2 (at t = 10 s, when all is done, 1 ms
# apart): turn 1's prompt + its reply + a new 6-token message (36 tokens).
#
# A turn 1 leaves 22 + 8 - 1 = 29 tokens of KV (the last output token's is never computed): 7
# full blocks, which turn 2's prompt starts with, so turn 2 at home hits 7 blocks = 28 tokens
# (its lookup cap, (36 - 1) // 4 = 8 blocks, does not bind). Away from home it finds only the
# system prompt: 16 tokens. A turn 1 on a replica that holds the system prompt hits 16 tokens.
SYS = (1, 16)
ORDER = "ABC"


def conversation(k: int) -> list[tuple[float, list[tuple[int, int]], int]]:
    """(arrival s, prompt segments, output tokens) of conversation k's two turns."""
    base = 100 * (k + 1)
    turn1 = [SYS, (base + 1, 6)]
    turn2 = [*turn1, (base + 2, 8), (base + 3, 6)]  # (base + 2) is turn 1's reply
    return [(0.001 * k, turn1, 8), (10.0 + 0.001 * k, turn2, 8)]


def run_chats(router: str, mode: str = "fast", **cluster: Any) -> list[RequestRecord]:
    cfg = small_cfg(cluster={"replicas": 2, "router": router, **cluster},
                    run={"num_requests": 100, "mode": mode})
    num_blocks, _ = kv_capacity_blocks(cfg)
    c = Cluster(cfg, num_blocks)

    def client(k: int) -> Generator[Any, Any, None]:
        for at, segments, out in conversation(k):
            yield c.timeout(at - c.env.now)
            seq = TokenSeq(cfg.engine.block_size)
            for cid, length in segments:
                seq.append(cid, length)
            prompt = seq.num_tokens
            seq.append(100 * (k + 1) + 2 if at < 10 else 10**6 + k, out)  # turn 1's reply id as above
            yield c.submit(seq, prompt, out, session_id=k)

    for k in range(len(ORDER)):
        c.env.process(client(k))
    c.run()
    return sorted(c.records, key=lambda r: r.arrival_s)  # A1 B1 C1 A2 B2 C2


@pytest.mark.parametrize("mode", ["reference", "fast"])
@pytest.mark.parametrize(
    ("router", "replicas", "cached"),
    [
        # A1->0, B1->1, C1->0, A2->1, B2->0, C2->1: every turn 2 lands away from its turn 1
        ("round_robin", [0, 1, 0, 1, 0, 1], [0, 0, 16, 16, 16, 16]),
        # new conversations to the least outstanding requests (ties to 0): A->0, B->1, C->0
        # (1 each); turn 2 goes home and finds its whole turn 1
        ("session_affinity", [0, 1, 0, 0, 1, 0], [0, 0, 16, 28, 28, 28]),
        # B1: replica 0 holds 16 of its 22 tokens, 2 x 16/22 + 0 (busiest) = 1.45 against 0 + 1
        # on the idle replica 1: replica 0, and so on; everything piles on replica 0
        ("prefix_aware", [0, 0, 0, 0, 0, 0], [0, 16, 16, 28, 28, 28]),
    ],
)
def test_two_replicas_by_hand(router, replicas, cached, mode):
    recs = run_chats(router, mode)
    assert [r.replica for r in recs] == replicas
    assert [r.cached_tokens for r in recs] == cached
    assert [r.session_id for r in recs] == [0, 1, 2, 0, 1, 2]
    assert all(r.status == "completed" for r in recs)


def test_a_stale_snapshot_hides_the_cache_from_prefix_aware():
    # snapshots every 1000 s: every routing sees the empty caches of t = 0, so only load counts
    # (as session affinity's first turns: A->0, B->1, C->0, then idle at t = 10: A2->0, B2->1
    # (replica 0 now busy with A2), C2->0): each turn 2 happens to land home
    recs = run_chats("prefix_aware", snapshot_interval_s=1000.0)
    assert [r.replica for r in recs] == [0, 1, 0, 0, 1, 0]
    assert [r.cached_tokens for r in recs] == [0, 0, 16, 28, 28, 28]
    # refreshed every millisecond, the router sees (nearly) exact state: as without snapshots
    fresh = run_chats("prefix_aware", snapshot_interval_s=0.0005)
    assert [r.replica for r in fresh] == [0, 0, 0, 0, 0, 0]


# ---- one replica is the single engine ------------------------------------------------------
CHAT = {"model": "Llama-3.1-8B", "gpu": "H100-SXM-80GB", "engine": {"block_size": 16},
        "workload": {"kind": "chat", "users": 24, "turns": 3, "system_prompts": 4,
                     "think_time_s": {"kind": "exponential", "mean": 1.0}},
        "run": {"num_requests": 300, "record_requests": True}}


@pytest.mark.parametrize("router", ["round_robin", "prefix_aware"])
@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_one_replica_equals_the_single_engine_field_by_field(router, mode):
    case = {**CHAT, "run": {**CHAT["run"], "mode": mode}}
    one = simulate(small_cfg(**case, cluster={"replicas": 1, "router": router}))
    cfg = small_cfg(**case)
    engine = run_engine(cfg)  # a plain Engine, no cluster around it, summarised as simulate() does
    num_blocks, _ = kv_capacity_blocks(cfg)
    alone = summarize(engine.records, engine.counters, Setting.of(cfg), stop_s=engine.stop_s,
                      stop_reason=engine.stop_reason or "workload ended",
                      cache_full_s=engine.scheduler.cache_full_s, capacity_blocks=num_blocks - 1,
                      block_size=cfg.engine.block_size, wall_s=0.0, sim_mode=mode)
    for rec in engine.records:
        rec.warmup = rec.arrival_s < alone["warmup_end_s"]
    got = {k: v for k, v in one.summary.items() if k != "sim_wall_s"}
    assert got == {k: v for k, v in alone.items() if k != "sim_wall_s"}
    assert one.requests == [r.as_row() for r in engine.records]
    assert got["replicas"] == 1 and got["request_imbalance"] == got["busy_imbalance"] == 1.0
    assert json.loads(got["replica_hit_rates"]) == [round(got["prefix_hit_rate"], 6)]


# ---- every request served once -------------------------------------------------------------
@pytest.mark.parametrize("router", ["round_robin", "random", "least_loaded", "session_affinity",
                                    "prefix_aware"])
def test_every_request_is_served_exactly_once(router):
    cfg = small_cfg(**{**CHAT, "cluster": {"replicas": 3, "router": router}})
    num_blocks, _ = kv_capacity_blocks(cfg)
    from simcore.workload import Workload

    c = Cluster(cfg, num_blocks)
    Workload(cfg).start(c)
    c.run()
    recs = c.records
    assert [r.request_id for r in recs] == list(range(len(recs))) and len(recs) == 300
    assert all(r.status == "completed" for r in recs)
    served = [sum(1 for r in recs if r.replica == i) for i in range(3)]
    assert sum(served) == 300 and min(served) > 0
    for e in c.engines:  # nothing left behind: no request outstanding, every block released
        assert e.outstanding_requests == 0 and e.outstanding_tokens == 0
        assert e.pool.num_used() == 0
        assert not e.scheduler.has_work()
        e.pool.check_invariants()
    # a conversation's turns all land where session affinity first put it
    if router == "session_affinity":
        homes: dict[int, set[int]] = {}
        for r in recs:
            homes.setdefault(r.session_id, set()).add(r.replica)
        assert all(len(h) == 1 for h in homes.values())


def test_cluster_metrics_add_up():
    res = simulate(small_cfg(**{**CHAT, "cluster": {"replicas": 3, "router": "random"}}))
    s, rows = res.summary, res.requests
    assert rows is not None and s["replicas"] == 3
    served = [sum(1 for r in rows if r["replica"] == i) for i in range(3)]
    assert s["request_imbalance"] == pytest.approx(max(served) / (sum(served) / 3))
    rates = json.loads(s["replica_hit_rates"])
    for i in range(3):
        mine = [r for r in rows if r["replica"] == i]
        hit = sum(r["cached_tokens"] for r in mine)
        assert rates[i] == round(hit / sum(r["prompt_tokens"] for r in mine), 6)
    assert s["replica_hit_rate_min"] == pytest.approx(min(rates), abs=1e-6)
    assert s["replica_hit_rate_max"] == pytest.approx(max(rates), abs=1e-6)
    assert s["busy_imbalance"] >= 1.0 and 0 < s["engine_busy_fraction"] <= 1.0


# ---- routers ranked on shared-system-prompt chat --------------------------------------------
def test_prefix_aware_beats_session_affinity_beats_round_robin():
    """32 system prompts of 2,000 tokens, 1 GiB of KV per replica (32k tokens): no replica holds
    them all. round_robin scatters every conversation; session_affinity keeps conversations home
    but sends new ones to any replica, where their system prompt is often missing; prefix_aware
    sends them where it is cached."""
    case = {"engine": {"block_size": 16, "kv_budget_gib": 1.0, "max_model_len": 8192},
            "workload": {"kind": "chat", "users": 64, "system_prompts": 32, "system_prompt_tokens": 2000,
                         "turns": {"kind": "geometric", "mean": 3},
                         "think_time_s": {"kind": "exponential", "mean": 3.0}},
            "run": {"num_requests": 1500, "warmup_s": 15}}
    rate = {}
    for router in ("round_robin", "session_affinity", "prefix_aware"):
        s = simulate(small_cfg(**case, cluster={"replicas": 4, "router": router})).summary
        assert s["num_measured"] > 1000
        rate[router] = s["prefix_hit_rate"]
    assert rate["prefix_aware"] > rate["session_affinity"] + 0.1 > rate["round_robin"] + 0.2, rate
