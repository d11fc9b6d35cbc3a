"""Fast mode against the reference mode on random configurations (a differential fuzzer).

The tests hold fast mode to the one-step-at-a-time reference on a fixed set of hand-picked
cases (``tests/test_fast_vs_reference.py``). This draws many more: random clusters (1-5
replicas, every router, load metric, snapshots), KV tiers (CPU offload, a shared pool under
both policies), engine limits (block size, max_num_seqs, token budget, memory pressure, tensor
parallelism, caching mode, front-end latency) and workloads (closed and open loops, mixes,
think times from none to long, ``until: steady`` and ``duration_s``), each one simulate() would
run (not refuse as infeasible). It runs each in both modes and compares them request for
request (replica, status, cached tokens per tier, preemptions, prefill and recomputed tokens,
the four times) and replica for replica (the free queue block for block, evictions, steps,
preemptions, peak blocks, tier loads, busy time and the other integrals, the shared pool's LRU
order). A crash in either mode counts as a mismatch, and so does a run, in either mode, that
breaks a rule every run keeps (every request served once, its times in order, its cache figures
within its prompt, every block freed at the end, each pool's and tier's bookkeeping consistent):
those checks reach the reference mode too.

    python scripts/fuzz_fast_vs_reference.py --cases 200           # seeds 0..199, a few minutes
    python scripts/fuzz_fast_vs_reference.py --cases 1 --first 37 --show   # replay one case

It prints one line per mismatching case (its seed: replay it with ``--first SEED --cases 1
--show``) and a total; the exit code is 1 if any case mismatched.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simcore import native  # noqa: E402
from simcore.api import run_cluster  # noqa: E402
from simcore.cluster import Cluster  # noqa: E402
from simcore.config import SimConfig  # noqa: E402
from simcore.costmodel import kv_capacity_blocks  # noqa: E402
from simcore.errors import ConfigError  # noqa: E402
from simcore.feasibility import config_refusal, memory_refusal  # noqa: E402

ROUTERS = ("round_robin", "random", "least_loaded", "session_affinity", "prefix_aware")
_TRACE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
TRACES = sorted(_TRACE_DIR.glob("*_trace.jsonl")) + sorted(_TRACE_DIR.glob("*conv*.csv"))  # (none: not drawn)
TIMES = ("arrival_s", "admitted_s", "first_token_s", "finish_s")
FIELDS = ("replica", "status", "cached_tokens", "cpu_cached_tokens", "shared_cached_tokens", "preemptions",
          "prefill_computed_tokens", "recomputed_tokens")  # a request's, exactly
# a replica's, exactly
COUNTS = ("steps", "preemptions", "peak_used_blocks", "cpu_loaded_blocks", "shared_loaded_blocks")
INTEGRALS = ("busy_s", "batch_seq_s", "used_block_s")  # a replica's, up to rounding
FRONTEND_S = 0.004  # a drawn front-end latency (else the cost profile's)


def _lognormal(rng: random.Random, low: float, high: float, cap: int | None = None) -> dict[str, Any]:
    dist: dict[str, Any] = {"kind": "lognormal", "mean": round(rng.uniform(low, high)), "sigma": 0.8}
    if cap is not None:
        dist["max"] = cap
    return dist


def _think(rng: random.Random) -> Any:
    return rng.choice([0, 0.2, {"kind": "exponential", "mean": round(rng.uniform(0.1, 3.0), 2)}])


def _profile(rng: random.Random) -> dict[str, Any]:
    return {
        "system_prompts": rng.choice([1, 2, 8]),
        "system_prompt_tokens": rng.choice([0, 100, 500, 1000]),
        "turns": rng.choice([1, 3, {"kind": "geometric", "mean": rng.choice([2, 4])}]),
        "user_tokens": _lognormal(rng, 30, 600),
        "output_tokens": _lognormal(rng, 10, 300, cap=600),
        "think_time_s": _think(rng),
    }


def _workload(rng: random.Random, replicas: int) -> dict[str, Any]:
    kinds = ["chat", "mix", "poisson", "api", "trace", "shared_prefix"]
    kind = rng.choices(kinds, weights=[12, 4, 2, 2, 2, 1])[0]
    if kind == "trace" and TRACES:  # a real trace's first requests (Mooncake's, or Azure's)
        return {"kind": "trace", "path": str(rng.choice(TRACES)), "limit": rng.randint(80, 300),
                "time_scale": rng.choice([0.5, 1.0, 3.0]) / replicas}
    if kind == "shared_prefix":
        stages = [{"rate": rng.uniform(2, 20) * replicas, "duration_s": rng.uniform(2, 10)}
                  for _ in range(rng.randint(1, 2))]
        return {"kind": "shared_prefix", "groups": rng.randint(1, 8), "prompts_per_group": rng.randint(1, 8),
                "system_prompt_tokens": rng.choice([0, 100, 600]), "question_tokens": rng.randint(20, 500),
                "output_tokens": rng.randint(5, 300), "stages": stages}
    if kind == "chat":
        return {"kind": "chat", "users": rng.randint(2, 40) * replicas, **_profile(rng)}
    if kind == "mix":
        profiles = [{"weight": rng.choice([1, 3]), **_profile(rng)} for _ in range(2)]
        profiles[1]["sessionless"] = rng.random() < 0.5
        return {"kind": "mix", "users": rng.randint(4, 40) * replicas, "profiles": profiles}
    if kind == "poisson":
        rate = round(rng.uniform(0.5, 6.0) * replicas, 2)
        return {"kind": "poisson", "session_rate": rate, **_profile(rng)}
    return {"kind": "api", "request_rate": round(rng.uniform(2, 30) * replicas, 1),
            "system_prompt_tokens": rng.choice([0, 200]), "prompt_tokens": _lognormal(rng, 100, 800),
            "output_tokens": _lognormal(rng, 10, 300, cap=600)}


def _engine(rng: random.Random) -> dict[str, Any]:
    engine: dict[str, Any] = {
        "block_size": rng.choice([4, 8, 16, 32]),
        "max_num_seqs": rng.choice([4, 16, 64, 256]),
        "max_num_batched_tokens": rng.choice([64, 256, 2048, 8192]),
        "prefix_caching": rng.choices(["prefix", "session", "off"], weights=[6, 1, 1])[0],
        "tensor_parallel": rng.choices([1, 2], weights=[5, 1])[0],
    }
    if rng.random() < 0.6:  # memory pressure: evictions, preemptions
        engine["kv_budget_gib"] = rng.choice([0.03, 0.05, 0.1, 0.3])
        engine["max_model_len"] = 1600
    if rng.random() < 0.3:
        engine["cpu_offload_gib"] = rng.choice([0.01, 0.05, 0.2])
    if rng.random() < 0.3:
        engine["cost"] = {"frontend_latency_s": FRONTEND_S, "first_token_lag_steps": rng.choice([0, 2])}
    return engine


def _cluster(rng: random.Random) -> dict[str, Any]:
    cluster: dict[str, Any] = {"replicas": rng.choices([1, 2, 3, 4, 5], weights=[2, 3, 3, 3, 1])[0],
                               "router": rng.choice(ROUTERS),
                               "load_metric": rng.choice(["requests", "tokens"])}
    if cluster["router"] == "prefix_aware" and rng.random() < 0.3:
        cluster["snapshot_interval_s"] = rng.choice([0.1, 0.5, 2.0])
    if rng.random() < 0.2:
        cluster["shared_pool_gib"] = rng.choice([0.02, 0.1, 0.5])
        cluster["shared_pool_policy"] = rng.choice(["write_through", "on_eviction"])
    return cluster


def _run(rng: random.Random) -> dict[str, Any]:
    how = rng.choices(["requests", "steady", "duration"], weights=[7, 2, 1])[0]
    if how == "steady":
        return {"until": "steady", "steady": {"ci_rel": 0.25}, "num_requests": 3000}
    if how == "duration":
        return {"duration_s": round(rng.uniform(3, 20), 1), "num_requests": 1500}
    return {"num_requests": rng.randint(100, 500)}


def draw(seed: int) -> SimConfig:
    """A random valid configuration (redrawn from the same stream until one validates)."""
    rng = random.Random(seed)
    while True:
        cluster = _cluster(rng)
        raw: dict[str, Any] = {
            "model": rng.choice(["Llama-3.2-1B", "Llama-3.1-8B"]),
            "gpu": rng.choice(["A100-40GB", "H100-SXM-80GB"]), "engine": _engine(rng),
            "workload": _workload(rng, cluster["replicas"]), "cluster": cluster,
            "run": {**_run(rng), "seed": seed},
        }
        if raw["workload"]["kind"] == "trace":  # prompts of thousands of tokens: room for a few
            raw["engine"].pop("max_model_len", None)
            if "kv_budget_gib" in raw["engine"]:
                raw["engine"]["kv_budget_gib"] = rng.choice([1.0, 3.0])
        if raw["workload"]["kind"] in ("trace", "shared_prefix") and raw["run"].get("until") == "steady":
            raw["run"] = {"seed": seed}  # (they end by themselves)
        try:
            cfg = SimConfig.model_validate(raw)
        except (ValidationError, ConfigError, ValueError):
            continue
        if config_refusal(cfg) is None:  # what simulate() would run, not refuse as infeasible
            num_blocks, reason = kv_capacity_blocks(cfg)
            if reason is None and memory_refusal(cfg, num_blocks) is None:
                return cfg


def shown(cfg: SimConfig) -> dict[str, Any]:
    """A case's configuration as drawn: the catalog entries by name, the cost profile left out
    unless its front-end terms were set."""
    out = cfg.model_dump(mode="json", exclude_defaults=True)
    out["model"], out["gpu"] = cfg.model.name, cfg.gpu.name
    cost = out.get("engine", {}).pop("cost", {})
    if cfg.engine.cost.frontend_latency_s == FRONTEND_S:
        out["engine"]["cost"] = {k: v for k, v in cost.items()
                                 if k in ("frontend_latency_s", "first_token_lag_steps")}
    return out


def simulate_cluster(cfg: SimConfig, mode: str) -> Cluster:
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"mode": mode})})
    return run_cluster(cfg, kv_capacity_blocks(cfg)[0])


def differences(ref: Cluster, fast: Cluster) -> list[str]:
    """What differs between the two runs (empty: the same)."""
    out: list[str] = []
    if len(ref.records) != len(fast.records):
        out.append(f"requests {len(ref.records)} vs {len(fast.records)}")
    if ref.stop_reason != fast.stop_reason or abs(ref.stop_s - fast.stop_s) > 1e-6:  # (rounding apart)
        out.append(f"stop {ref.stop_reason, ref.stop_s} vs {fast.stop_reason, fast.stop_s}")
    for a, b in zip(ref.records, fast.records, strict=False):  # (their counts are compared above)
        if [getattr(a, k) for k in FIELDS] != [getattr(b, k) for k in FIELDS]:
            out.append(f"request {a.request_id}: {a} vs {b}")
        elif any(abs(getattr(a, k) - getattr(b, k)) > 1e-6 for k in TIMES):
            out.append(f"request {a.request_id} times: {a} vs {b}")
        if len(out) >= 3:
            return out
    for i, (e, f) in enumerate(zip(ref.engines, fast.engines, strict=True)):
        if f.pool.free_queue() != e.pool.free_queue():
            out.append(f"replica {i}: free queues differ")
        got = [f.pool.evictions] + [getattr(f.counters, k) for k in COUNTS]
        want = [e.pool.evictions] + [getattr(e.counters, k) for k in COUNTS]
        if got != want:
            out.append(f"replica {i}: evictions, {', '.join(COUNTS)} {want} vs {got}")
        for k in INTEGRALS:
            x, y = getattr(e.counters, k), getattr(f.counters, k)
            if abs(x - y) > 1e-9 * max(1.0, abs(x)):
                out.append(f"replica {i}: {k} {x} vs {y}")
    shared = ref.shared, fast.shared
    if shared[0] is not None and shared[1] is not None and shared[0].lru_order() != shared[1].lru_order():
        out.append("shared pool LRU order differs")
    return out


def broken_invariants(cluster: Cluster) -> list[str]:
    """What a finished run (either mode) breaks of the rules every run keeps: every request
    served once (completed, or failed with a reason), its times in order and its cache figures
    within its prompt; every block back in the free queue, each pool's and tier's bookkeeping
    consistent. (These check the reference mode as well, which the comparison cannot.)"""
    out: list[str] = []
    for r in cluster.records:
        if r.status == "failed" and r.error:
            continue
        times = (r.arrival_s, r.admitted_s, r.first_token_s, r.finish_s)
        tiers = r.cpu_cached_tokens + r.shared_cached_tokens
        if (r.status != "completed" or list(times) != sorted(times) or not 0 <= tiers <= r.cached_tokens
                or r.cached_tokens >= r.prompt_tokens and r.prompt_tokens > 0
                or r.prefill_computed_tokens != r.prompt_tokens - r.cached_tokens):
            out.append(f"request {r.request_id} breaks a rule: {r}")
            break
    for i, e in enumerate(cluster.engines):
        if e.pool.num_used():
            out.append(f"replica {i}: {e.pool.num_used()} blocks still in use at the end")
        for tier in (e.pool, e.cpu):
            try:
                if tier is not None:
                    tier.check_invariants()
            except RuntimeError as exc:
                out.append(f"replica {i}: {exc}")
    if cluster.shared is not None:
        try:
            cluster.shared.check_invariants()
        except RuntimeError as exc:
            out.append(f"shared pool: {exc}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100, help="random configurations to compare")
    ap.add_argument("--first", type=int, default=0, help="seed of the first (case k uses seed first + k)")
    ap.add_argument("--show", action="store_true", help="print each case's configuration")
    args = ap.parse_args(argv)
    if args.cases < 1 or args.first < 0:
        print("fuzz_fast_vs_reference: --cases must be >= 1 and --first >= 0", file=sys.stderr)
        return 2
    bad, requests, t0 = 0, 0, time.perf_counter()
    for seed in range(args.first, args.first + args.cases):
        cfg = draw(seed)
        if args.show:
            print(json.dumps(shown(cfg)))
        try:
            ref = simulate_cluster(cfg, "reference")
            fast = simulate_cluster(cfg, "fast")
            diff = differences(ref, fast) + [f"reference: {x}" for x in broken_invariants(ref)]
            diff += [f"fast: {x}" for x in broken_invariants(fast)]
            requests += len(ref.records)
        except Exception as exc:  # a crash in either mode is a finding too
            diff = [f"{type(exc).__name__}: {exc}"]
        if diff:
            bad += 1
            c = cfg.cluster
            what = f"{c.replicas} x {c.router}, {cfg.workload.kind}"
            print(f"case {seed}: MISMATCH ({what}): " + "; ".join(diff))
    paths = "the pure-Python twins" if native.NATIVE is None else "the compiled paths"
    print(f"{args.cases} random configurations (seeds {args.first}..{args.first + args.cases - 1}), "
          f"{requests:,} requests, fast mode on {paths}: {bad} mismatched, {time.perf_counter() - t0:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
