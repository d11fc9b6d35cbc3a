"""The cluster's shared KV pool (``cluster.shared_pool_gib``): a hand-worked two-replica case with
exact shared hits and copy times, the chain GPU -> CPU tier -> shared pool, blocks conserved,
the hit rate against the pool's size, fast mode equal to the reference, and no change without it."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from simcore.api import simulate
from simcore.cluster import Cluster
from simcore.hashing import TokenSeq
from simcore.metrics import RequestRecord
from sweep.cli import main as kvsweep
from tests.simhelpers import Scripted, small_cfg

# Llama-3.2-1B: 32,768 KV bytes per token, so a 4-token block is 128 KiB
BLOCK_BYTES = 4 * 32768
GPU_BLOCKS = 17  # per replica: 16 usable

# ---- a hand-worked case ------------------------------------------------------------------------
# Two replicas, round_robin (requests alternate 0, 1, 0, 1, 0), 16 usable GPU blocks each.
# A (replica 0) computes a 32-token prompt: 8 hashed blocks h1..h8. D (replica 1) is tiny.
# C (replica 0) needs 16 blocks and evicts all of A's, deepest first (h8 ... h1): with a shared
# pool they are stored there. B (replica 1) starts with A's prompt: replica 1 never saw it, but
# the shared pool holds all 8 blocks, copied over the network. E (replica 0) starts with A's
# prompt too: replica 0 lost it, the shared pool (touched by B) still has it.
SCRIPT = [
    Scripted(0.0, [(1, 32)], 2),  # A -> 0
    Scripted(1.0, [(5, 4)], 2),  # D -> 1
    Scripted(2.0, [(2, 60)], 2),  # C -> 0
    Scripted(3.0, [(1, 32), (3, 8)], 2),  # B -> 1
    Scripted(4.0, [(1, 32), (6, 8)], 2),  # E -> 0
]


def shared_cfg(shared_blocks: int, cpu_blocks: int = 0, network: float = 25e9, mode: str = "fast",
               policy: str | None = "on_eviction") -> Any:
    """The hand-worked cases' cluster; ``policy`` None leaves ``shared_pool_policy`` at its default."""
    cluster = {"replicas": 2, "router": "round_robin", "shared_pool_gib": shared_blocks * BLOCK_BYTES / 2**30,
               "network_bandwidth": network, **({"shared_pool_policy": policy} if policy else {})}
    return small_cfg(engine={"block_size": 4, "cpu_offload_gib": cpu_blocks * BLOCK_BYTES / 2**30},
                     cluster=cluster, run={"num_requests": 10, "mode": mode})


def run_cluster_script(cfg: Any, script: list[Scripted]) -> tuple[Cluster, list[RequestRecord]]:
    """Run a cluster on a fixed list of requests (no workload generator)."""
    c = Cluster(cfg, GPU_BLOCKS)

    def submitter(i: int, item: Scripted) -> Generator[Any, Any, None]:
        yield c.timeout(item.at)
        seq = TokenSeq(cfg.engine.block_size, item.root)
        for cid, length in item.segments:
            seq.append(cid, length)
        prompt = seq.num_tokens
        seq.append(10**9 + i, item.output)
        yield c.submit(seq, prompt, item.output)

    for i, item in enumerate(script):
        c.env.process(submitter(i, item))
    c.run()
    return c, sorted(c.records, key=lambda r: r.request_id)


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_a_block_one_replica_lost_is_found_by_another_in_the_shared_pool(mode):
    c, recs = run_cluster_script(shared_cfg(16, mode=mode), SCRIPT)
    assert [r.replica for r in recs] == [0, 1, 0, 1, 0]
    assert [r.cached_tokens for r in recs] == [0, 0, 0, 32, 32]
    assert [r.shared_cached_tokens for r in recs] == [0, 0, 0, 32, 32]
    assert [r.cpu_cached_tokens for r in recs] == [0] * 5
    assert c.shared is not None and c.shared.hit_blocks == 16
    assert sum(e.counters.shared_loaded_blocks for e in c.engines) == 16
    assert all(type(e.scheduler).__name__ == ("FastScheduler" if mode == "fast" else "Scheduler")
               for e in c.engines)
    # without the pool B and E compute everything
    c0, recs0 = run_cluster_script(shared_cfg(0, mode=mode), SCRIPT)
    assert c0.shared is None and [r.cached_tokens for r in recs0] == [0] * 5


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_written_through_the_pool_holds_what_replicas_computed_until_lru_drops_it(mode):
    # the default policy: every block is stored as it is computed (16-block pool). A: h1..h8;
    # D: d1; C: c1..c15, which pushes h1..h8 out (least recently used); B (replica 1) finds no h1
    # and computes h1..h8 b9 b10, pushing out d1 c1..c9; E (replica 0, whose GPU lost h1..h8 to C)
    # finds h1..h8 in the pool, written by B, and computes e9 e10
    c, recs = run_cluster_script(shared_cfg(16, mode=mode, policy=None), SCRIPT)
    assert c.cfg.cluster.shared_pool_policy == "write_through"
    assert [r.cached_tokens for r in recs] == [0, 0, 0, 0, 32]
    assert [r.shared_cached_tokens for r in recs] == [0, 0, 0, 0, 32]
    assert c.shared is not None and c.shared.hit_blocks == 8
    # stored: A 8, D 1, C 15, B 10, E 2 (its own 9th and 10th; the 8 it loaded are only touched)
    assert c.shared.stored == 8 + 1 + 15 + 10 + 2 and c.shared.evictions == 36 - 16
    assert c.shared.lru_order()[-10:] == recs_hashes(c, 4)  # E's: h1..h8 touched, then e9, e10
    c.shared.check_invariants()


def recs_hashes(c: Cluster, request_id: int) -> list[int]:
    """The hashes of a scripted request's full blocks, as the engine that served it computed them
    (rebuilt from the script: the same content gives the same hashes)."""
    item = SCRIPT[request_id]
    seq = TokenSeq(c.cfg.engine.block_size, item.root)
    for cid, length in item.segments:
        seq.append(cid, length)
    return list(seq.ensure_hashes(seq.num_tokens))


def test_a_shared_hit_costs_its_copy_over_the_slower_of_network_and_host_link():
    # A100-40GB's host link: 25 GB/s. At 100 GB/s the network is not the bottleneck (the copy
    # streams at 25); at 1 GB/s it is. B's first token is late by exactly the difference.
    ttft = {}
    for net in (100e9, 25e9, 1e9):
        _, recs = run_cluster_script(shared_cfg(16, network=net), SCRIPT)
        b = recs[3]
        assert b.shared_cached_tokens == 32 and b.admitted_s == 3.0
        ttft[net] = b.first_token_s - b.arrival_s
    copy = 8 * BLOCK_BYTES
    assert ttft[100e9] == ttft[25e9]
    assert ttft[1e9] - ttft[25e9] == pytest.approx(copy / 1e9 - copy / 25e9, rel=1e-9)


def test_the_shared_pool_is_fed_by_the_cpu_tier_and_a_prefix_needs_its_head():
    # a 3-block CPU tier per replica: C's evictions h8 ... h1 enter replica 0's CPU tier, which
    # keeps the last three (h3, h2, h1) and passes h8 ... h4 on to the shared pool. B (replica 1)
    # finds nothing: its prefix starts with h1, which the shared pool does not hold. E (replica
    # 0) finds h1..h3 in its CPU tier and h4..h8 in the shared pool: one copy of both.
    c, recs = run_cluster_script(shared_cfg(16, cpu_blocks=3), SCRIPT)
    b, e = recs[3], recs[4]
    assert (b.cached_tokens, b.cpu_cached_tokens, b.shared_cached_tokens) == (0, 0, 0)
    assert (e.cached_tokens, e.cpu_cached_tokens, e.shared_cached_tokens) == (32, 12, 20)
    r0 = c.engines[0].counters
    assert (r0.cpu_loaded_blocks, r0.shared_loaded_blocks) == (3, 5)
    # the copy of 3 CPU blocks and 5 shared ones, both at 25 GB/s here, then E's prefill: against
    # a network of 1 GB/s, only the 5 shared blocks are slower
    _, slow = run_cluster_script(shared_cfg(16, cpu_blocks=3, network=1e9), SCRIPT)
    late = (slow[4].first_token_s - e.first_token_s)
    assert late == pytest.approx(5 * BLOCK_BYTES / 1e9 - 5 * BLOCK_BYTES / 25e9, rel=1e-9)
    for eng in c.engines:
        eng.kv.drain()
        eng.pool.check_invariants()
        assert eng.cpu is not None
        eng.cpu.check_invariants()
    assert c.shared is not None
    c.shared.check_invariants()


# ---- whole runs ------------------------------------------------------------------------------
def chat(shared_gib: float, mode: str = "fast", network: float = 25e9, cpu_gib: float = 0.0,
         policy: str = "write_through", **run: Any) -> Any:
    """4 replicas, round_robin (which scatters every conversation), small GPU pools."""
    return small_cfg(engine={"block_size": 16, "kv_budget_gib": 0.05, "max_model_len": 1600,
                             "cpu_offload_gib": cpu_gib},
                     workload={"kind": "chat", "users": 48, "turns": 4,
                               "think_time_s": {"kind": "exponential", "mean": 4.0}},
                     cluster={"replicas": 4, "router": "round_robin", "shared_pool_gib": shared_gib,
                              "network_bandwidth": network, "shared_pool_policy": policy},
                     run={"num_requests": 400, "mode": mode, "warmup_s": 0, **run})


def test_the_hit_rate_rises_with_the_shared_pool_and_splits_by_tier():
    rates = []
    for gib in (0.0, 0.1, 1.0):
        s = simulate(chat(gib)).summary
        tiers = s["hit_rate_gpu"] + s["hit_rate_cpu"] + s["hit_rate_shared"]
        assert s["prefix_hit_rate"] == pytest.approx(tiers)
        assert (s["hit_rate_shared"] == 0) == (gib == 0)
        assert s["sim_mode"] == "fast"
        rates.append(s["prefix_hit_rate"])
    assert rates == sorted(rates) and rates[-1] > rates[0] + 0.3, rates


def test_a_slower_network_raises_ttft():
    fast_net = simulate(chat(1.0)).summary
    slow_net = simulate(chat(1.0, network=0.5e9)).summary
    # shared hits are paid for in time: the copies hold their requests back longer
    assert slow_net["ttft_mean_s"] > fast_net["ttft_mean_s"]
    assert slow_net["shared_loaded_blocks"] > 0


def test_blocks_are_conserved_in_every_tier_after_a_run():
    from simcore.costmodel import kv_capacity_blocks
    from simcore.workload import Workload

    cfg = chat(0.1, cpu_gib=0.02)
    c = Cluster(cfg, kv_capacity_blocks(cfg)[0])
    Workload(cfg).start(c)
    c.run()
    assert c.shared is not None and c.shared.num_used() == c.shared.capacity_blocks  # full
    for e in c.engines:
        e.pool.check_invariants()
        assert e.pool.num_used() == 0  # every request released its blocks
        e.kv.drain()
        assert e.cpu is not None
        e.cpu.check_invariants()
    c.shared.check_invariants()
    assert c.shared.evictions > 0 and c.shared.hit_blocks > 0


@pytest.mark.parametrize("policy", ["write_through", "on_eviction"])
def test_fast_mode_equals_the_reference_and_the_result_is_deterministic(policy: str):
    runs = [simulate(chat(0.1, mode=mode, record_requests=True, cpu_gib=0.02, policy=policy))
            for mode in ("fast", "reference", "fast")]
    first, ref, again = ({k: v for k, v in r.summary.items() if k != "sim_wall_s"} for r in runs)
    assert again == first and runs[2].requests == runs[0].requests  # deterministic
    how = {"sim_mode", "sim_events"}  # how it ran; every figure of the simulation is the same
    assert (first["sim_mode"], ref["sim_mode"]) == ("fast", "reference")
    assert first["sim_events"] < ref["sim_events"]
    assert {k: v for k, v in first.items() if k not in how} == {k: v for k, v in ref.items() if k not in how}
    assert runs[1].requests == runs[0].requests
    assert first["hit_rate_shared"] > 0 and first["hit_rate_cpu"] > 0


def test_without_a_shared_pool_nothing_changes():
    # shared_pool_gib 0 (the default) runs as before, in fast mode; the network does not matter
    base = simulate(chat(0.0, record_requests=True))
    other = simulate(chat(0.0, network=1e9, record_requests=True))
    drop = {"sim_wall_s"}
    assert {k: v for k, v in base.summary.items() if k not in drop} == {
        k: v for k, v in other.summary.items() if k not in drop}
    assert base.requests == other.requests
    s = base.summary
    assert (s["sim_mode"], s["hit_rate_shared"], s["shared_capacity_blocks"], s["shared_loaded_blocks"]) == (
        "fast", 0.0, 0, 0)
    assert all(r["shared_cached_tokens"] == 0 for r in base.requests)


@pytest.mark.parametrize(
    ("setting", "message"),
    [("shared_pool_gib: -1", "cluster.shared_pool_gib = -1: must be >= 0 (raise it)"),
     ("network_bandwidth: 0", "cluster.network_bandwidth = 0: must be > 0 (raise it)")],
)
def test_bad_values_are_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            setting: str, message: str) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("model: Llama-3.2-1B\ngpu: A100-40GB\nrun: {num_requests: 20}\n"
                      f"cluster: {{replicas: 2, {setting}}}\n")
    out = tmp_path / "result.json"
    assert kvsweep(["simulate", str(config), "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"kvsweep simulate: error: {config}: invalid config: {message}"
    assert not out.exists()
