"""scripts/bench_ops.py counts the bytecodes a run executes, per simulated request: exact
counts, so their invariants hold exactly (every request is submitted once, to one engine)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_ops  # noqa: E402

CHAT = str(ROOT / "configs/runs/chat.yaml")


def test_one_replica_submits_each_request_once_and_counts_are_exact():
    first = bench_ops.count_child(CHAT, 60, "one", None)  # each in a fresh interpreter, as the script runs
    assert first["functions"]["engine.py:submit"][1] == 1.0  # calls per simulated request
    assert "cluster.py:submit" not in first["functions"]  # one replica: no cluster code traced
    assert first == bench_ops.count_child(CHAT, 60, "one", None)  # deterministic, to the bytecode


def test_a_cluster_routes_each_request_once_and_differs_from_the_floor_in_its_machinery():
    floor = bench_ops.count(CHAT, 40, "floor")
    cluster = bench_ops.count(CHAT, 40, "session_affinity")
    assert floor["functions"]["engine.py:submit"][1] == 1.0  # 4 engines, 160 requests, each once
    assert cluster["functions"]["cluster.py:submit"][1] == 1.0
    assert cluster["functions"]["engine.py:submit"][1] == 1.0
    assert "cluster.py:submit" not in floor["functions"]
    rows = bench_ops.differences(floor, cluster, 3)
    assert len(rows) == 3 and all("bytecodes" in r for r in rows)
    assert cluster["total"] > floor["total"]  # the router and the cuts are extra work
