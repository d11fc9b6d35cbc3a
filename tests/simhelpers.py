"""Factories for simcore tests: small configs and scripted request streams."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from simcore.config import SimConfig
from simcore.engine import Engine
from simcore.hashing import TokenSeq
from simcore.metrics import RequestRecord

_INFEASIBLE_AXIS = "  gpu.memory_gib: [4, 40]          # 4 GiB: infeasible\n"


def tiny_sweep(name: str, users: str = "[2, 4, 8]", infeasible: bool = True, extra_axes: str = "") -> str:
    """A sweep spec of tiny runs (20 requests of Llama-3.2-1B on an A100-40GB) over users and
    caching mode, seeds 2; ``infeasible`` adds a 4 GiB GPU whose runs are infeasible."""
    return (
        f"name: {name}\n"
        "base:\n"
        "  model: Llama-3.2-1B\n"
        "  gpu: A100-40GB\n"
        "  workload: {kind: chat, users: 4, turns: 2}\n"
        "  run: {num_requests: 20}\n"
        "grid:\n"
        f"  workload.users: {users}\n"
        "  engine.prefix_caching: [off, prefix]\n"
        + (_INFEASIBLE_AXIS if infeasible else "")
        + extra_axes
        + "seeds: 2\n"
    )


def small_cfg(**over: Any) -> SimConfig:
    """Llama-3.2-1B on an A100-40GB with block size 4 unless overridden (dotted keys allowed)."""
    raw: dict[str, Any] = {
        "model": "Llama-3.2-1B",
        "gpu": "A100-40GB",
        "engine": {"block_size": 4},
        "workload": {"kind": "chat", "users": 2},
        "run": {"num_requests": 10},
    }
    for key, value in over.items():
        *parents, leaf = key.split("__")
        node = raw
        for p in parents:
            if isinstance(node.get(p), str):
                node[p] = {"name": node[p]}
            node = node.setdefault(p, {})
        node[leaf] = value
    return SimConfig.model_validate(raw)


@dataclass
class Scripted:
    """One request: submitted at ``at`` seconds with prompt ``segments`` and ``output`` tokens."""

    at: float
    segments: list[tuple[int, int]]
    output: int
    session_id: int = -1
    root: int = 0
    out_id: int | None = None  # content id of the reply (default: unique per request)


@dataclass
class ScriptResult:
    engine: Engine
    records: list[RequestRecord] = field(default_factory=list)


def run_script(cfg: SimConfig, num_blocks: int, script: list[Scripted]) -> ScriptResult:
    """Run the engine on a fixed list of requests (no workload generator)."""
    engine = Engine(cfg, num_blocks)
    env = engine.env

    def submitter(i: int, item: Scripted) -> Generator[Any, Any, None]:
        if item.at > 0:
            yield env.timeout(item.at)
        seq = TokenSeq(cfg.engine.block_size, item.root)
        for cid, length in item.segments:
            seq.append(cid, length)
        prompt = seq.num_tokens
        seq.append(item.out_id if item.out_id is not None else 10**9 + i, item.output)
        engine.submit(seq, prompt, item.output, session_id=item.session_id)

    for i, item in enumerate(script):
        env.process(submitter(i, item))
    engine.run()
    by_arrival = sorted(engine.records, key=lambda r: r.request_id)
    return ScriptResult(engine, by_arrival)


def run_engine(cfg: SimConfig) -> Engine:
    """Run a full simulation and return the engine, for inspecting its block pool afterwards."""
    from simcore.costmodel import kv_capacity_blocks
    from simcore.workload import Workload

    num_blocks, reason = kv_capacity_blocks(cfg)
    assert reason is None, reason
    engine = Engine(cfg, num_blocks)
    Workload(cfg).start(engine)
    engine.run()
    return engine
