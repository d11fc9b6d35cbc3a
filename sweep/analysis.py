"""Read a sweep's Parquet dataset and answer questions about it: load, summarize, compare.

The dataset (written by :mod:`sweep.store`)::

    DIR/
      _kvsweep.json                       {"version", "sweep", "created"}
      spec.yaml                           the sweep spec
      runs/part-00000-1a2b3c4d.parquet    one row per run (several parts)
      requests/run_id=<id>/part-0.parquet per-request rows (optional)

``runs`` columns, in order::

    run_id sweep seed status error | context columns, other grid axes | SUMMARY_FIELDS | trailer
                                     '------- candidate axes -------'
    (trailer: kvsweep_version config_json)

An *axis* is a column of the middle block whose value differs between rows (``model.name``,
``engine.prefix_caching``, ``workload.users``, ...). ``seed`` is never an axis: results are averaged
over seeds. Failed and infeasible runs carry nulls in every metric, so they drop out of means.

Nothing here writes files or prints; :mod:`sweep.report` draws and :mod:`sweep.cmd_report` talks.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

from simcore.errors import ConfigError
from simcore.metrics import SUMMARY_FIELDS

#: Columns that identify a run or describe its outcome; never axes, never metrics.
ID_COLUMNS: tuple[str, ...] = ("run_id", "sweep", "seed", "status", "error")
#: Columns after the metrics.
TRAILER_COLUMNS: tuple[str, ...] = ("kvsweep_version", "config_json")
#: Context columns present in every dataset, varied or not.
CONTEXT_COLUMNS: tuple[str, ...] = (
    "model.name",
    "gpu.name",
    "gpu.memory_gib",
    "engine.kv_budget_gib",
    "engine.tensor_parallel",
    "engine.prefix_caching",
    "workload.kind",
    "workload.users",
    "cluster.replicas",
)
METRICS: tuple[str, ...] = tuple(SUMMARY_FIELDS)
CACHING_AXIS = "engine.prefix_caching"
#: What :func:`compare` compares by default: latency, throughput and prefill work.
COMPARE_METRICS: tuple[str, ...] = (
    "ttft_p50_s",
    "ttft_p99_s",
    "throughput_rps",
    "output_tokens_per_s",
    "prefill_tokens_computed",
)

#: What to do when a dataset holds no per-request rows. A resume skips runs already done, so the
#: requests of a finished sweep come only from a new run into another folder.
NO_REQUESTS_HINT = ("the sweep saved no per-request rows: run it again with --save-requests into a new"
                    " folder (kvsweep run SPEC --out NEW_DIR --save-requests)")

# Two-sided 95% quantiles of Student's t, t_{0.975}(df) for df = 1..30 (scipy.stats.t.ppf(0.975, df),
# checked by numerical integration of the density). Above 30 the Cornish-Fisher expansion in
# _t975 is within 2e-6 of the exact value.
# fmt: off
_T975: tuple[float, ...] = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
    2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
    2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272,
)
# fmt: on
_Z975 = 1.959963984540054


@functools.lru_cache(maxsize=256)  # summarize() asks once per group: 60,000 scipy calls on a big grid
def t975(df: int) -> float:
    """Two-sided 95% Student-t quantile for ``df`` degrees of freedom (``nan`` when ``df < 1``).

    Uses scipy when it is installed; otherwise a table for df <= 30 and the Cornish-Fisher
    expansion above (both agree with scipy to 6 decimals), so scipy stays an optional dependency.
    """
    if df < 1:
        return math.nan
    try:
        # the t quantile itself (what stats.t.ppf calls), without importing scipy.stats: 0.5 s
        from scipy.special import stdtrit  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        return float(stdtrit(df, 0.975))
    if df <= len(_T975):
        return _T975[df - 1]
    z, v = _Z975, float(df)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


# ----------------------------------------------------------------------------------------- reading


def _filesystem(path: str | Path) -> tuple[pafs.FileSystem, str]:
    """A local path or any URI ``pyarrow.fs`` understands -> (filesystem, path inside it)."""
    text = str(path)
    if "://" in text:
        try:
            return pafs.FileSystem.from_uri(text)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ConfigError(f"{text}: cannot open this location: {exc}") from None
    return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())


def _exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def runs_dataset(path: str | Path) -> pds.Dataset:
    """The ``runs/`` parts of the sweep at ``path`` as one pyarrow dataset.

    Parts written at different times may type an all-null column differently (``null`` vs
    ``string``); their schemas are unified so every part reads. Raises :class:`ConfigError`
    when there is no dataset.
    """
    fs, root = _filesystem(path)
    runs = f"{root.rstrip('/')}/runs"
    if not _exists(fs, runs):
        raise ConfigError(
            f"{path}: no sweep dataset here (missing runs/): run `kvsweep run SPEC --out {path}` first"
        )
    files = sorted(
        info.path
        for info in fs.get_file_info(pafs.FileSelector(runs, recursive=False))
        if info.is_file and info.base_name.endswith(".parquet")
    )
    if not files:
        raise ConfigError(f"{path}: runs/ holds no .parquet parts yet: wait for the sweep or rerun it")
    dataset = pds.dataset(files, filesystem=fs, format="parquet")
    schemas = [frag.physical_schema for frag in dataset.get_fragments()]
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ConfigError(f"{runs}: parts disagree on column types ({exc}): rerun the sweep") from None
    # keep the order of the first part; columns only later parts have go at the end
    ordered = [schema.field(name) for name in schemas[0].names] + [
        f for f in schema if f.name not in schemas[0].names
    ]
    return pds.dataset(files, filesystem=fs, format="parquet", schema=pa.schema(ordered))


def load(path: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The runs table of the sweep at ``path`` (directory or URI) as a pandas DataFrame.

    Only ``columns`` are read from disk (all when ``None``), in the order given. Integer columns
    holding nulls come back as floats (pandas' default). Raises :class:`ConfigError` when there is
    no dataset or a column does not exist (the message lists what does).
    """
    dataset = runs_dataset(path)
    if columns is not None:
        missing = [c for c in columns if c not in dataset.schema.names]
        if missing:
            raise ConfigError(
                f"{path}: no column {missing[0]!r} in runs/: use one of {', '.join(dataset.schema.names)}"
            )
    table = dataset.to_table(columns=list(columns) if columns is not None else None)
    return table.to_pandas()


def load_requests(
    path: str | Path, run_ids: Iterable[str] | None = None, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per-request rows (``requests/run_id=<id>/``) with a ``run_id`` column, optionally for some runs.

    Raises :class:`ConfigError` when the sweep saved no requests (``kvsweep run --save-requests``).
    """
    fs, root = _filesystem(path)
    base = f"{root.rstrip('/')}/requests"
    if not _exists(fs, base):
        raise ConfigError(f"{path}: no requests/ here: {NO_REQUESTS_HINT}")
    dataset = pds.dataset(base, filesystem=fs, format="parquet", partitioning="hive")
    expr = None
    if run_ids is not None:
        expr = pds.field("run_id").isin([str(r) for r in run_ids])
    cols = None if columns is None else list(dict.fromkeys(["run_id", *columns]))
    return dataset.to_table(columns=cols, filter=expr).to_pandas()


def load_capacity(path: str | Path) -> pd.DataFrame | None:
    """The ``capacity/`` table a capacity search wrote (one row per cell), or None when there is none."""
    fs, root = _filesystem(path)
    target = f"{root.rstrip('/')}/capacity/part-0.parquet"
    if not _exists(fs, target):
        return None
    with fs.open_input_file(target) as fh:
        return pq.read_table(fh).to_pandas()


@dataclass(frozen=True)
class SweepInfo:
    """What a dataset says about itself: ``_kvsweep.json`` and ``spec.yaml`` (either may be absent)."""

    name: str = ""
    version: str = ""
    created: str = ""
    spec_text: str = ""
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def grid_keys(self) -> list[str]:
        """Dotted paths the spec varies (``grid`` and ``zip``), in spec order."""
        keys = list((self.spec.get("grid") or {}).keys())
        zipped = self.spec.get("zip") or []
        groups = zipped if isinstance(zipped, list) else [zipped]
        for group in groups:
            if isinstance(group, dict):
                keys.extend(group)
            elif isinstance(group, list):
                for item in group:
                    if isinstance(item, dict):
                        keys.extend(item)
        return list(dict.fromkeys(str(k) for k in keys))


def read_info(path: str | Path) -> SweepInfo:
    """Read ``_kvsweep.json`` and ``spec.yaml`` beside ``runs/``; missing or unreadable files give blanks."""
    fs, root = _filesystem(path)

    def text(name: str) -> str:
        target = f"{root.rstrip('/')}/{name}"
        if not _exists(fs, target):
            return ""
        with fs.open_input_stream(target) as stream:
            return stream.read().decode("utf-8", errors="replace")

    meta: dict[str, Any] = {}
    try:
        meta = json.loads(text("_kvsweep.json") or "{}")
    except json.JSONDecodeError:
        meta = {}
    spec_text = text("spec.yaml")
    try:
        spec = yaml.safe_load(spec_text) or {}
    except yaml.YAMLError:
        spec = {}
    if not isinstance(spec, dict):
        spec = {}
    return SweepInfo(
        name=str(meta.get("sweep") or spec.get("name") or ""),
        version=str(meta.get("version") or ""),
        created=str(meta.get("created") or ""),
        spec_text=spec_text,
        spec=spec,
    )


# ------------------------------------------------------------------------------------------- axes


def candidate_axes(df: pd.DataFrame) -> list[str]:
    """Columns that describe a cell of the sweep: the context columns and every other grid axis."""
    skip = set(ID_COLUMNS) | set(TRAILER_COLUMNS) | set(METRICS)
    return [c for c in df.columns if c not in skip]


def axes(df: pd.DataFrame) -> list[str]:
    """The candidate axes whose value differs between rows (nulls count as a value), in column order."""
    return [c for c in candidate_axes(df) if df[c].nunique(dropna=False) > 1]


def _check_columns(df: pd.DataFrame, names: Iterable[str], what: str) -> None:
    for name in names:
        if name not in df.columns:
            raise ConfigError(
                f"{what} {name!r} is not a column: use one of {', '.join(map(str, df.columns))}"
            )


# ------------------------------------------------------------------------------------- aggregation


def summarize(df: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Aggregate over seeds: one row per distinct ``by`` value, mean and 95% CI of each metric.

    With ``by`` = every axis (:func:`axes`) each group is one cell and its rows are its seeds; with
    fewer columns the mean and CI are over every run of the group (seeds and the other axes).

    Columns: ``by``, ``n_runs`` (rows in the group), ``n_ok`` (rows with status ``ok``), then per
    metric ``<m>_mean`` and ``<m>_ci95``, the half-width of the 95% confidence interval of the mean:
    ``t_{0.975}(n - 1) * s / sqrt(n)`` with ``s`` the sample standard deviation (ddof 1) and ``n``
    the metric's non-null values in the group; ``nan`` when ``n < 2``. Nulls (failed or infeasible
    runs) are left out. Groups keep null keys and come out sorted by ``by``.
    """
    by = list(by)
    metrics = list(metrics)
    _check_columns(df, by, "group-by column")
    _check_columns(df, metrics, "metric")
    if not by:
        frame = df.assign(_all=0)
        return summarize(frame, ["_all"], metrics).drop(columns="_all")
    work = df[by + metrics].copy()
    work["_ok"] = (df["status"] == "ok") if "status" in df.columns else True
    grouped = work.groupby(by, dropna=False, sort=True)
    out = grouped.size().rename("n_runs").to_frame()
    out["n_ok"] = grouped["_ok"].sum().astype("int64")
    for m in metrics:
        values = pd.to_numeric(work[m], errors="coerce") if work[m].dtype == object else work[m]
        g = values.groupby([work[b] for b in by], dropna=False, sort=True)
        mean, std, count = g.mean(), g.std(ddof=1), g.count()
        t = count.map(lambda n: t975(int(n) - 1))
        out[f"{m}_mean"] = mean
        out[f"{m}_ci95"] = t * std / count.pow(0.5)
    return out.reset_index()


def cell_means(df: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Mean of each metric over seeds per distinct ``by`` value (columns keep the metric names)."""
    s = summarize(df, by, metrics)
    return s[[*by, "n_runs", "n_ok"] + [f"{m}_mean" for m in metrics]].rename(
        columns={f"{m}_mean": m for m in metrics}
    )


def compare(
    df: pd.DataFrame,
    axis: str = CACHING_AXIS,
    baseline: Any = "off",
    metrics: Sequence[str] = COMPARE_METRICS,
    by: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Each setting of ``axis`` against ``baseline``, cell by cell, matched on all other axes.

    A cell is one value of every axis in ``by`` (default: :func:`axes` of ``df`` other than ``axis``).
    Metrics are first averaged over seeds (ok runs only), then, for every non-baseline setting::

        <m>        the setting's mean          <m>_ratio  <m> / <m>_base   (nan when <m>_base is 0)
        <m>_base   the baseline's mean         <m>_diff   <m> - <m>_base

    So a TTFT speed-up is ``1 / ttft_p99_s_ratio`` and a throughput gain ``throughput_rps_ratio - 1``.
    Cells whose baseline is missing, failed or infeasible keep their row with ``nan`` ratios.
    ``n_ok`` and ``n_ok_base`` count the ok runs behind each mean. Raises :class:`ConfigError` when
    ``axis`` is not a column or ``baseline`` is not one of its values.
    """
    _check_columns(df, [axis], "axis")
    metrics = list(metrics)
    _check_columns(df, metrics, "metric")
    if not (df[axis] == baseline).any():
        values = ", ".join(sorted(map(str, df[axis].dropna().unique())))
        raise ConfigError(f"baseline {axis}={baseline!r} is not in the dataset: use one of {values}")
    keys = [c for c in (axes(df) if by is None else list(by)) if c != axis]
    means = cell_means(df, [*keys, axis], metrics)
    base = means[means[axis] == baseline].drop(columns=[axis, "n_runs"])
    base = base.rename(columns={"n_ok": "n_ok_base", **{m: f"{m}_base" for m in metrics}})
    other = means[means[axis] != baseline].drop(columns="n_runs")
    if keys:
        out = other.merge(base, on=keys, how="left")
    else:
        out = other.merge(base, how="cross")
    for m in metrics:
        b = out[f"{m}_base"].astype(float)
        out[f"{m}_ratio"] = out[m].astype(float) / b.where(b != 0)
        out[f"{m}_diff"] = out[m].astype(float) - b
    ordered = [*keys, axis, "n_ok", "n_ok_base"]
    for m in metrics:
        ordered += [m, f"{m}_base", f"{m}_ratio", f"{m}_diff"]
    return out[ordered].sort_values([*keys, axis], kind="stable").reset_index(drop=True)
