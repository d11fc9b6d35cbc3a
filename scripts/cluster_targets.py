"""The cluster issue's closing-note targets, measured and printed as tables.

1. ``configs/runs/chat.yaml`` on 4 replicas with 4x the users (the same load per replica) for
   each router, against one engine with the scenario's own users: prefix_aware should keep the
   prefix-cache hit rate within 2 points of the single engine, round_robin lose at least 20.
2. The Mooncake conversation trace, cache only, on 10 replicas of 3M tokens each: the hit rate
   of per-replica caches behind each router against one global pool of 30M tokens (Mooncake's
   local-versus-global question).

    python scripts/cluster_targets.py                  # both (about a minute on 2 cores)
    python scripts/cluster_targets.py --requests 5000  # a quicker first table
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simcore.api import simulate  # noqa: E402
from simcore.replay import replay_cluster, replay_hashes, request_block_hashes  # noqa: E402
from simcore.router import ROUTERS, make_router  # noqa: E402
from simcore.traces import infer_conversations, load_trace  # noqa: E402
from sweep.cmd_simulate import load_config  # noqa: E402

CHAT = ROOT / "configs/runs/chat.yaml"
TRACE = ROOT.parent / "shared/data/traces/conversation_trace.jsonl"


def chat_table(requests: int, replicas: int) -> bool:
    """Table 1; returns whether both targets hold."""
    users = load_config(str(CHAT), []).workload.users  # type: ignore[union-attr]
    assert users is not None, "configs/runs/chat.yaml must be a chat workload with users"
    one = simulate(load_config(str(CHAT), [f"run.num_requests={requests}"])).summary
    print(f"configs/runs/chat.yaml: one engine with {users} users ({requests:,} requests) against "
          f"{replicas} replicas with {replicas * users} users ({replicas * requests:,} requests); "
          "hit rate over each run's measured window")
    print(f"{'':<24}{'hit rate':>9}{'vs one':>9}{'TTFT p99':>10}{'req max/mean':>14}  replica hit rates")
    print(f"{'one engine':<24}{one['prefix_hit_rate']:>9.4f}{'':>9}{one['ttft_p99_s'] * 1e3:>8.1f}ms"
          f"{1.0:>14.3f}")
    delta = {}
    for router in ROUTERS:
        t0 = time.perf_counter()
        s = simulate(load_config(str(CHAT), [
            f"run.num_requests={replicas * requests}", f"workload.users={replicas * users}",
            f"cluster.replicas={replicas}", f"cluster.router={router}",
        ])).summary
        delta[router] = 100 * (s["prefix_hit_rate"] - one["prefix_hit_rate"])
        print(f"{replicas} x {router:<20}{s['prefix_hit_rate']:>9.4f}{delta[router]:>+8.2f}p"
              f"{s['ttft_p99_s'] * 1e3:>8.1f}ms{s['request_imbalance']:>14.3f}  {s['replica_hit_rates']}"
              f"  ({time.perf_counter() - t0:.1f} s)")
    ok_prefix = abs(delta["prefix_aware"]) <= 2.0
    ok_rr = delta["round_robin"] <= -20.0
    print(f"target: prefix_aware within 2 points of one engine: {delta['prefix_aware']:+.2f} points -> "
          f"{'met' if ok_prefix else 'NOT met'}; round_robin loses at least 20 points: "
          f"{delta['round_robin']:+.2f} points -> {'met' if ok_rr else 'NOT met'}")
    return ok_prefix and ok_rr


def mooncake_table(replicas: int, capacity: float) -> None:
    """Table 2: per-replica caches behind each router against one global pool."""
    requests = load_trace(TRACE)
    hashes = request_block_hashes(requests, 512)
    sessions = infer_conversations(requests)
    tokens = sum(r.prompt_tokens for r in requests)
    pooled = replay_hashes(hashes, tokens, replicas * capacity, 512)
    alone = replay_hashes(hashes, tokens, capacity, 512)
    print(f"\nMooncake conversation trace ({len(requests):,} requests, {len(set(sessions)):,} conversations "
          f"inferred), cache only, block 512: {replicas} replicas of {capacity:,.0f} tokens against one "
          f"pool of {replicas * capacity:,.0f}")
    print(f"{'':<24}{'hit rate':>9}{'global pool':>13}{'points lost':>13}{'req max/mean':>14}")
    print(f"{'one replica alone':<24}{alone.hit_rate:>9.4f}")
    for router in ROUTERS:
        r = replay_cluster(requests, hashes, sessions, capacity, replicas, make_router(router), 512,
                           global_hit_tokens=pooled.hit_tokens)
        print(f"{router:<24}{r.hit_rate:>9.4f}{r.global_hit_rate:>13.4f}"
              f"{100 * (r.global_hit_rate - r.hit_rate):>13.2f}{r.request_imbalance:>14.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20_000, help="requests per replica (table 1)")
    ap.add_argument("--replicas", type=int, default=4, help="replicas (table 1)")
    ap.add_argument("--skip-trace", action="store_true", help="leave out table 2")
    args = ap.parse_args()
    met = chat_table(args.requests, args.replicas)
    if not args.skip_trace:
        mooncake_table(10, 3e6)
    print(f"RESULT chat_targets={'met' if met else 'not met'}")


if __name__ == "__main__":
    main()
