"""Cache-only replay of a trace over several replicas behind a router (``kvsweep replay --replicas``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from simcore.errors import ConfigError
from simcore.replay import ClusterReplayResult, replay_cluster, request_block_hashes
from simcore.router import make_router
from simcore.traces import TraceRequest, infer_conversations, load_trace
from tests.test_replay import run_cli

BS = 512
CONVERSATION = Path(__file__).parents[1].parent / "shared/data/traces/conversation_trace.jsonl"


def req(*ids: int, at: float = 0.0) -> TraceRequest:
    return TraceRequest(at, BS * len(ids), 1, ids)


def run(requests: list[TraceRequest], router: str, replicas: int = 2, capacity: float = math.inf,
        snapshot: float | None = None) -> ClusterReplayResult:
    hashes = request_block_hashes(requests, BS)
    return replay_cluster(requests, hashes, infer_conversations(requests), capacity, replicas,
                          make_router(router), BS, snapshot)


# Three two-turn conversations A, B, C that share a system block (id 1), interleaved as
# A1 B1 C1 A2 B2 C2; turn 2 extends turn 1 by two blocks. Infinite caches.
THREE_CHATS = [req(1, 2), req(1, 5), req(1, 8), req(1, 2, 3, 4), req(1, 5, 6, 7), req(1, 8, 9, 10)]
INPUT = 3 * 2 * BS + 3 * 4 * BS  # 9,216 tokens


def test_two_replicas_round_robin_by_hand() -> None:
    # A1->0, B1->1, C1->0, A2->1, B2->0, C2->1: every second turn lands away from its first turn,
    # so only the system block hits: C1 (on 0, after A1), A2 (on 1, after B1), B2, C2 -> 4 blocks
    r = run(THREE_CHATS, "round_robin")
    assert (r.hit_tokens, r.input_tokens) == (4 * BS, INPUT)
    assert r.replica_requests == (3, 3)
    assert r.replica_hit_tokens == (2 * BS, 2 * BS)
    assert r.hit_rate == 4 * BS / INPUT
    # one global pool: B1, C1 hit the system block, each turn 2 hits its turn 1 (2 blocks)
    assert r.global_hit_tokens == 8 * BS


def test_two_replicas_session_affinity_by_hand() -> None:
    # new conversations go to the least loaded (requests sent so far; ties to 0): A->0, B->1,
    # C->0 (loads 1, 1); C1 hits the system block on 0; each turn 2 finds its turn 1 at home:
    # 2 blocks each -> 1 + 3 x 2 = 7 blocks
    r = run(THREE_CHATS, "session_affinity")
    assert r.hit_tokens == 7 * BS
    assert r.replica_requests == (4, 2)
    assert r.replica_hit_tokens == (5 * BS, 2 * BS)
    assert r.request_imbalance == 4 / 3
    assert r.replica_hit_rates == (5 * BS / (2 * 2 * BS + 2 * 4 * BS), 2 * BS / (2 * BS + 4 * BS))


def test_two_replicas_prefix_aware_by_hand() -> None:
    # B1: replica 0 holds 1 of its 2 blocks: 2 x 0.5 + (1 - 1)/1 = 1.0 against 0 + 1 = 1.0 on the
    # idle replica 1: a tie, so replica 0; so it goes on: every request scores a tie (half the
    # prompt cached against a full load term) and lands on 0, where the cache is the global one
    r = run(THREE_CHATS, "prefix_aware")
    assert r.replica_requests == (6, 0)
    assert r.hit_tokens == r.global_hit_tokens == 8 * BS


def test_a_stale_snapshot_hides_the_cache_from_prefix_aware() -> None:
    reqs = [req(1, 2, 3, at=0.0), req(1, 2, 3, 4, at=1.0)]
    exact = run(reqs, "prefix_aware")
    assert exact.replica_requests == (2, 0) and exact.hit_tokens == 3 * BS
    # snapshots every 10 s: the second request is routed on the snapshot of t = 0 (empty caches),
    # so only load counts and it goes to the idle replica 1
    stale = run(reqs, "prefix_aware", snapshot=10.0)
    assert stale.replica_requests == (1, 1) and stale.hit_tokens == 0
    # a snapshot taken at t = 1 (interval 0.5) already holds the first request's blocks
    fresh = run(reqs, "prefix_aware", snapshot=0.5)
    assert fresh.replica_requests == (2, 0) and fresh.hit_tokens == 3 * BS


def test_finite_capacity_per_replica() -> None:
    # two blocks per replica. Replica 0 gets A1, C1, B2: C1 hits the system block and evicts
    # A1's second block; B2 hits the system block and keeps one more block of its four (the
    # head of its chain), evicting C1's. Replica 1 (B1, A2, C2) likewise, with A2 and C2
    # truncated: 2 hits and 2 evictions per replica, 3 truncated requests.
    r = run(THREE_CHATS, "round_robin", capacity=2 * BS)
    assert r.capacity_tokens == 2 * BS
    assert (r.hit_tokens, r.evictions, r.truncated_requests) == (4 * BS, 4, 3)
    # one pool of 4 blocks: A2 still finds A1 (2 blocks) but evicts B1's and C1's second blocks,
    # so B2 and C2 hit only the system block: 0 + 1 + 1 + 2 + 1 + 1
    assert r.global_hit_tokens == 6 * BS


def test_one_replica_is_the_single_cache() -> None:
    from simcore.replay import replay

    r = run(THREE_CHATS, "random", replicas=1, capacity=3 * BS)
    (single,) = replay(THREE_CHATS, [3 * BS], block_size=BS)
    assert (r.hit_tokens, r.evictions) == (single.hit_tokens, single.evictions)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match=r"replicas = 0: must be a positive integer"):
        run(THREE_CHATS, "round_robin", replicas=0)
    with pytest.raises(ConfigError, match=r"snapshot_interval_s = -1"):
        run(THREE_CHATS, "round_robin", snapshot=-1.0)


@pytest.mark.skipif(not CONVERSATION.is_file(), reason="public traces not found")
def test_mooncake_routers_order_on_hit_rate() -> None:
    requests = load_trace(CONVERSATION, limit=4000)
    hashes = request_block_hashes(requests, BS)
    sessions = infer_conversations(requests)
    rates = {}
    for name in ("round_robin", "session_affinity", "prefix_aware"):
        r = replay_cluster(requests, hashes, sessions, 1e6, 10, make_router(name), BS)
        rates[name] = r.hit_rate
        glob = r.global_hit_rate
    assert rates["prefix_aware"] > rates["session_affinity"] > rates["round_robin"] + 0.1
    assert rates["prefix_aware"] <= glob + 0.01


# ---- the command --------------------------------------------------------------------------
@pytest.fixture
def chats(tmp_path: Path) -> Path:
    p = tmp_path / "chats.jsonl"
    lines = [{"timestamp": 1000 * i, "input_length": BS * len(r.hash_ids or ()), "output_length": 1,
              "hash_ids": list(r.hash_ids or ())} for i, r in enumerate(THREE_CHATS)]
    p.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return p


def test_cli_cluster_table_and_json(chats: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.json"
    assert run_cli([str(chats), "--capacity-tokens", "inf", "--replicas", "2",
                    "--router", "round_robin,session_affinity", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 replicas, one cache each" in text and "3 conversations inferred" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines()
            if line.strip().startswith(("round_robin", "session_affinity"))}
    # hit rate, global pool, points lost (4 and 7 of 18 blocks against 8)
    assert rows["round_robin"][3:6] == [f"{4 / 18:.4f}", f"{8 / 18:.4f}", f"{100 * 4 / 18:.2f}"]
    assert rows["session_affinity"][3:6] == [f"{7 / 18:.4f}", f"{8 / 18:.4f}", f"{100 * 1 / 18:.2f}"]
    doc = json.loads(out.read_text())
    assert doc["cluster"]["replicas"] == 2
    assert [(r["router"], r["hit_tokens"]) for r in doc["cluster"]["results"]] == [
        ("round_robin", 4 * BS), ("session_affinity", 7 * BS)]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--replicas", "0"], r"--replicas = 0: must be a positive integer"),
        (["--replicas", "2", "--router", "round_robin,sticky"], r"--router item 'sticky': unknown router"),
        (["--replicas", "2", "--snapshot-interval-s", "0"], r"--snapshot-interval-s = 0: must be > 0"),
    ],
)
def test_cli_bad_cluster_input(chats: Path, extra: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        run_cli([str(chats), *extra])
