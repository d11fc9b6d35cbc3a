"""Latencies measured on real servers, in the formats ``kvsweep calibrate`` and ``validate`` read.

Three formats (examples in ``shared/data/measured/``; its README says where each came from):

- **stages** (JSON, as ``vllm_h100_experiments.json``): serving experiments end to end. Each
  experiment gives the model's dimensions (``model_dims``), ``tp``, ``max_num_seqs``,
  ``max_num_batched_tokens``, optionally ``vllm_total_kv_blocks`` (16-token blocks), the
  shared-prefix workload (``prompt_groups``, ``prompts_per_group``, ``system_prompt_tokens``,
  ``prompt_tokens``: the mean prompt length the server saw, ``output_tokens``), the load
  ``stages`` (``rate_per_s``, ``duration_s``) and per stage the ``measured`` means ``ttft_ms``
  and ``e2e_ms``. The GPU is the file's or the command line's.
- **steps** (CSV, as ``splitwise_perf_model.csv``): step times of one model. Columns
  ``tensor_parallel``, ``prompt_size``, ``batch_size``, ``token_size``, ``prompt_time`` (ms: the
  prefill of ``batch_size`` prompts of ``prompt_size`` tokens) and ``token_time`` (ms: one decode
  step of that batch, averaged over generating ``token_size`` tokens, so at a mean context of
  ``prompt_size + token_size / 2``); other columns (``model``, ``hardware``) can select rows.
- **operators** (CSV, as Vidur's ``profiling/compute/<gpu>/<model>/mlp.csv``): per-operator GPU
  times of one transformer layer against ``num_tokens`` and ``num_tensor_parallel_workers``,
  columns ``time_stats.<op>.median`` in ms, and the layer's shape (``n_head``, ``n_kv_head``,
  ``n_embd``, ``n_expanded_embd``, ``vocab_size``).

A stage experiment becomes a kvsweep run (:func:`experiment_config`): the model inline, the
engine as the server ran it (the KV cache as large as the server reported), and a
``shared_prefix`` workload with the experiment's stages. Its figures per stage are means over
the requests that arrived in the stage (:func:`stage_means`), as the load generator reports
them; the time per output token is (E2E - TTFT) / (output tokens - 1) of the means, on both
sides (the recorded ITL of the file is not used: see the data README).

Every reader raises :class:`simcore.errors.ConfigError` naming the file, the entry and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simcore.config import SimConfig
from simcore.costmodel import kv_bytes_per_token_per_gpu
from simcore.engine import client_times
from simcore.errors import ConfigError

BLOCK_TOKENS = 16  # vLLM's default block size, which the stage experiments ran with


@dataclass(frozen=True)
class Stage:
    """One load stage of an experiment and what was measured in it (ms)."""

    rate: float
    duration_s: float
    ttft_ms: float
    e2e_ms: float


@dataclass(frozen=True)
class Experiment:
    """One serving experiment of a stages file (see the module notes)."""

    name: str
    model: dict[str, Any]
    tp: int
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_blocks: int | None
    groups: int
    prompts_per_group: int
    system_prompt_tokens: int
    prompt_tokens: int
    output_tokens: int
    stages: tuple[Stage, ...]

    @property
    def num_requests(self) -> int:
        return sum(int(s.rate * s.duration_s) for s in self.stages)


def itl_ms(ttft_ms: float, e2e_ms: float, output_tokens: int) -> float:
    """Time per output token after the first, from the means: (E2E - TTFT) / (output - 1)."""
    return (e2e_ms - ttft_ms) / max(output_tokens - 1, 1)


def _need(entry: dict[str, Any], key: str, where: str) -> Any:
    if key not in entry:
        raise ConfigError(f"{where}: missing {key!r} (see the stages format in sweep/measured.py)")
    return entry[key]


def _experiment(entry: dict[str, Any], where: str) -> Experiment:
    measured = {int(m["stage"]): m for m in _need(entry, "measured", where)}
    stages = []
    for i, st in enumerate(_need(entry, "stages", where)):
        if i not in measured:
            raise ConfigError(f"{where}: stage {i} has no 'measured' entry (give its ttft_ms and e2e_ms)")
        m = measured[i]
        stages.append(
            Stage(float(st["rate_per_s"]), float(st["duration_s"]), float(m["ttft_ms"]), float(m["e2e_ms"]))
        )
    dims = dict(_need(entry, "model_dims", where))
    sys_tokens = int(_need(entry, "system_prompt_tokens", where))
    prompt = int(round(float(_need(entry, "prompt_tokens", where))))
    if prompt <= sys_tokens:
        raise ConfigError(f"{where}: prompt_tokens {prompt} must exceed system_prompt_tokens {sys_tokens}")
    blocks = entry.get("vllm_total_kv_blocks")
    return Experiment(
        name=str(_need(entry, "name", where)),
        model=dims,
        tp=int(_need(entry, "tp", where)),
        max_num_seqs=int(_need(entry, "max_num_seqs", where)),
        max_num_batched_tokens=int(_need(entry, "max_num_batched_tokens", where)),
        kv_blocks=None if blocks is None else int(blocks),
        groups=int(_need(entry, "prompt_groups", where)),
        prompts_per_group=int(_need(entry, "prompts_per_group", where)),
        system_prompt_tokens=sys_tokens,
        prompt_tokens=prompt,
        output_tokens=int(_need(entry, "output_tokens", where)),
        stages=tuple(stages),
    )


def load_experiments(path: str | Path) -> list[Experiment]:
    """Read a stages file (JSON object with an ``experiments`` list)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read it ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: not JSON (line {exc.lineno}: {exc.msg})") from None
    entries = doc.get("experiments") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{p}: no 'experiments' list (see the stages format in sweep/measured.py)")
    out = []
    for i, entry in enumerate(entries):
        where = f"{p}: experiments[{i}]"
        try:
            out.append(_experiment(entry, where))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"{where}: malformed entry ({exc!r}); see sweep/measured.py") from None
    return out


def experiment_config(
    exp: Experiment,
    gpu: str | dict[str, Any],
    cost: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    max_stage_s: float | None = None,
) -> SimConfig:
    """The kvsweep run that rebuilds ``exp`` on ``gpu`` with cost parameters ``cost`` (a
    mapping for ``engine.cost``; None: the GPU's profile). ``max_stage_s`` shortens every stage
    to at most that long (calibration runs)."""
    stages = [{"rate": s.rate, "duration_s": _shortened(s.duration_s, max_stage_s)} for s in exp.stages]
    engine: dict[str, Any] = {
        "tensor_parallel": exp.tp,
        "block_size": BLOCK_TOKENS,
        "max_num_seqs": exp.max_num_seqs,
        "max_num_batched_tokens": exp.max_num_batched_tokens,
        "prefix_caching": "prefix",
    }
    if cost is not None:
        engine["cost"] = cost
    workload = {
        "kind": "shared_prefix",
        "groups": exp.groups,
        "prompts_per_group": exp.prompts_per_group,
        "system_prompt_tokens": exp.system_prompt_tokens,
        "question_tokens": exp.prompt_tokens - exp.system_prompt_tokens,
        "output_tokens": exp.output_tokens,
        "stages": stages,
    }
    n = sum(int(s["rate"] * s["duration_s"]) for s in stages)
    raw = {
        "model": dict(exp.model),
        "gpu": gpu,
        "engine": engine,
        "workload": workload,
        "run": {"seed": seed, "num_requests": n, "record_requests": True},
    }
    cfg = SimConfig.model_validate(raw)
    if exp.kv_blocks is None:
        return cfg
    # the KV cache the server reported: blocks x 16 tokens x bytes per token, over all GPUs
    per_gpu = kv_bytes_per_token_per_gpu(cfg)
    budget = (exp.kv_blocks + 1.5) * BLOCK_TOKENS * per_gpu * exp.tp / 2**30
    # vLLM sized it from its own memory profile: take it as given (no reserve to subtract)
    raw["engine"] = {
        **engine,
        "kv_budget_gib": budget,
        "activation_reserve_gib": 0.0,
        "gpu_memory_utilization": 1.0,
    }
    return SimConfig.model_validate(raw)


def _shortened(duration_s: float, max_stage_s: float | None) -> float:
    return duration_s if max_stage_s is None else min(duration_s, max_stage_s)


@dataclass(frozen=True)
class StageResult:
    """Simulated means of one stage (ms) and whether the simulated server kept up."""

    ttft_ms: float
    e2e_ms: float
    itl_ms: float
    saturated: bool


def stage_means(rows: Sequence[dict[str, Any]], exp: Experiment, max_stage_s: float | None = None, *,
                frontend_s: float = 0.0, lag_steps: float = 0.0) -> list[StageResult]:
    """Per stage, means over the completed requests the stage sent (rows in submission order;
    stage i sent int(rate x duration) of them). ``frontend_s`` and ``lag_steps`` move engine
    times to client times as the engine would (:func:`simcore.engine.client_times`): rows
    simulated without them give exactly what rows simulated with them would, as the workload is
    open loop. A stage is *saturated* when its requests' queueing grows: the last quarter's mean
    TTFT is over 3x the first quarter's and over half a second."""
    out = []
    start = 0
    for s in exp.stages:
        count = int(s.rate * _shortened(s.duration_s, max_stage_s))
        sent = rows[start:start + count]
        start += count
        done = [client_times(r["first_token_s"], r["finish_s"], r["output_tokens"], frontend_s, lag_steps)
                + (r["arrival_s"],) for r in sent if r["status"] == "completed"]
        if not done:
            out.append(StageResult(float("nan"), float("nan"), float("nan"), True))
            continue
        first, finish, arrival = (np.array(col) for col in zip(*done, strict=True))
        ttft = (first - arrival) * 1e3
        e2e = (finish - arrival) * 1e3
        q = max(ttft.size // 4, 1)
        head, tail = float(np.mean(ttft[:q])), float(np.mean(ttft[-q:]))
        t, e = float(ttft.mean()), float(e2e.mean())
        out.append(StageResult(t, e, itl_ms(t, e, exp.output_tokens), tail > 3 * head and tail > 500))
    return out


def read_csv(path: str | Path) -> pd.DataFrame:
    """A CSV file, or a ConfigError naming it."""
    p = Path(path)
    try:
        return pd.read_csv(p)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read it ({exc.strerror})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not a CSV file ({exc.__class__.__name__}: check the file)") from None


def filter_rows(
    frame: pd.DataFrame, where: dict[str, str], drop: list[dict[str, str]], source: str
) -> pd.DataFrame:
    """Rows matching every ``where`` column=value pair, minus those matching all pairs of any
    ``drop`` entry. Values compare as text, so ``tensor_parallel=2`` matches the number 2."""
    for conds in [where, *drop]:
        missing = [c for c in conds if c not in frame.columns]
        if missing:
            raise ConfigError(
                f"{source}: no column {missing[0]!r} to filter on (columns: {', '.join(frame.columns)})"
            )

    def match(conds: dict[str, str]) -> pd.Series:
        ok = pd.Series(True, index=frame.index)
        for col, value in conds.items():
            ok &= frame[col].astype(str) == value
        return ok

    keep = match(where)
    for conds in drop:
        keep &= ~match(conds)
    return frame[keep]


#: Vidur's linear operators of one layer (the dense matmuls) and its elementwise ones
LINEAR_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
ELEMENTWISE_OPS = ("input_layernorm", "attn_rope", "post_attention_layernorm", "mlp_act", "add")


def load_operator_profile(path: str | Path) -> pd.DataFrame:
    """Read an operators file: per (tensor parallel, num_tokens) the summed median times (ms)
    of one layer's linear operators (``linear_ms``) and elementwise ones (``elementwise_ms``),
    with the layer shape columns."""
    p = Path(path)
    frame = read_csv(p)
    cols = [f"time_stats.{op}.median" for op in (*LINEAR_OPS, *ELEMENTWISE_OPS)]
    shape = ["n_head", "n_kv_head", "n_embd", "n_expanded_embd", "num_tokens", "num_tensor_parallel_workers"]
    missing = [c for c in cols + shape if c not in frame.columns]
    if missing:
        raise ConfigError(f"{p}: missing columns {missing[:3]} (see the operators format in measured.py)")
    frame = frame.drop_duplicates(["num_tensor_parallel_workers", "num_tokens"]).copy()
    frame["linear_ms"] = _sum(frame, LINEAR_OPS)
    frame["elementwise_ms"] = _sum(frame, ELEMENTWISE_OPS)
    order = ["num_tensor_parallel_workers", "num_tokens"]
    return frame[[*shape, "linear_ms", "elementwise_ms"]].sort_values(order).reset_index(drop=True)


def _sum(frame: pd.DataFrame, ops: Iterable[str]) -> pd.Series:
    return sum((frame[f"time_stats.{op}.median"] for op in ops), start=pd.Series(0.0, index=frame.index))
