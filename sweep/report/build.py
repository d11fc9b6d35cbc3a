"""``write_report(DIR)``: read the dataset, work out the roles, write the CSVs, the figures and
the page. The one place that knows the order of things; every part is in its own module."""

from __future__ import annotations

import html
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from simcore.errors import ConfigError
from sweep import analysis
from sweep.analysis import CACHING_AXIS, SweepInfo
from sweep.report.capacity import Capacity, capacities, capacity_findings, capacity_section
from sweep.report.cells import COMPARE_METRICS
from sweep.report.cluster import METRICS as CLUSTER_METRICS
from sweep.report.cluster import cluster_section
from sweep.report.context import Context
from sweep.report.digest import headline_sentence
from sweep.report.explore import write_explore
from sweep.report.findings import Finding
from sweep.report.fmt import slug
from sweep.report.importance import decompose
from sweep.report.importance import figure as importance_figure
from sweep.report.models import ModelJob, ModelResult, model_job
from sweep.report.overview import Headline, caption, headline, overview_rows, overview_table
from sweep.report.page import Page, Section, render
from sweep.report.roles import BASELINE, infer_roles, model_order
from sweep.report.tables import failures_table, folded
from sweep.report.workers import pool_for, start_all
from sweep.slo import Slo

#: Metrics in summary.csv (mean and CI of each), those the dataset has.
SUMMARY_METRICS: tuple[str, ...] = (
    "throughput_rps",
    "output_tokens_per_s",
    "goodput_rps",
    "slo_attainment",
    "ttft_p50_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "e2e_p99_s",
    "prefix_hit_rate",
    "prefill_reduction",
    "prefill_tokens_computed",
    "recomputed_tokens",
    "preemptions",
    "kv_capacity_tokens",
    "kv_peak_util",
    "measured_s",
)
#: Other metrics the parts read (states, run length, intervals, overview, explore.html).
REPORT_METRICS: tuple[str, ...] = (
    "steady",
    "steady_reason",
    "sim_duration_s",
    "ttft_p99_s_ci95_run",
    "capacity_rps",
    "prefill_tokens_total",
)


def write_report(
    path: str | Path, out: str | Path | None = None, slo: str | Slo | None = None, jobs: int = 1
) -> Path:
    """Write the report of the sweep at ``path`` into ``out`` (default ``path/report``); return index.html.

    ``slo`` (``"ttft_p99_s<1"``) draws the SLO and states the capacity at it; a capacity search's
    dataset states its own. ``jobs`` > 1 draws the models' parts of a big dataset in that many
    worker processes (:mod:`sweep.report.workers`; from a script, call it under
    ``if __name__ == "__main__":``, as with any multiprocessing). Raises :class:`ConfigError` when
    there is no dataset, when ``path`` is a remote URI and ``out`` is not given, or when the SLO
    names no column of the dataset.
    """
    if out is None:
        if "://" in str(path):
            raise ConfigError(f"{path}: the report is written locally: give --out DIR")
        out = Path(path) / "report"
    out_dir = Path(out)
    info = analysis.read_info(path)
    dataset = analysis.runs_dataset(path)
    has_models = "model.name" in dataset.schema.names
    models = dataset.to_table(columns=["model.name"]).column(0).unique() if has_models else []
    pool = pool_for(dataset.count_rows(), len(models), jobs)
    try:
        return _write(path, out_dir, info, dataset.schema.names, slo, pool)
    finally:
        if pool is not None:
            pool.shutdown()


def _write(
    path: str | Path, out_dir: Path, info: SweepInfo, names: list[str], slo: str | Slo | None,
    pool: Executor | None,
) -> Path:
    known = [c for c in names if c in analysis.METRICS]
    objective = Slo.parse(slo, known=known) if isinstance(slo, str) else slo
    df = analysis.load(path, columns=needed_columns(names, objective))
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("fig*.png"):  # only what an earlier report wrote
        old.unlink()

    roles = infer_roles(df, info)
    varied = analysis.axes(df)
    stored = analysis.load_capacity(path)
    searched = Slo.parse(str(stored["slo"].iloc[0])) if stored is not None and not stored.empty else None
    ctx = Context(out=out_dir, roles=roles, slo=objective or searched, prefix="00-")
    models = model_order(df, info)
    # the models' parts first: in worker processes they are drawn while this one does the rest
    drawn = start_all(model_job, model_jobs(ctx, df, models, varied), pool)
    cell_axes = list(dict.fromkeys(["model.name", *varied]))
    summary = analysis.summarize(df, cell_axes, [m for m in SUMMARY_METRICS if m in df])
    summary.to_csv(out_dir / "summary.csv", index=False)
    if roles.compare:
        keys = [c for c in varied if c != CACHING_AXIS]
        analysis.compare(df, CACHING_AXIS, BASELINE, COMPARE_METRICS, by=keys).to_csv(
            out_dir / "caching.csv", index=False
        )
    caps = capacities(df, roles, objective, stored)
    for cap in caps:
        cap.table.to_csv(out_dir / f"capacity-{slug(cap.axis)}.csv", index=False)
    page = Page(
        info,
        df,
        varied,
        cell_axes,
        roles.compare,
        len(summary),
        failures=failures_table(df, [c for c in cell_axes if c != "model.name"]),
    )
    report = Report(ctx, page, df, info, caps, models, drawn)
    for part in PARTS:
        part(report)
    index = out_dir / "index.html"
    index.write_text(render(page), encoding="utf-8")
    return index


def needed_columns(names: list[str], slo: Slo | None) -> list[str]:
    """The columns the report reads: identity, axes and the metrics it shows or the SLO limits
    (not config_json, not the dozens of other metrics)."""
    limited = [n for m in (slo.metrics if slo else []) for n in (m, f"{m}_ci95_run")]
    metrics = {*SUMMARY_METRICS, *COMPARE_METRICS, *REPORT_METRICS, *CLUSTER_METRICS, *limited}
    skip = set(analysis.METRICS) - metrics
    return [c for c in names if c != "config_json" and c not in skip]


@dataclass
class Report:
    """What every part of the page reads (the dataset, its roles and capacities) and writes to
    (the page). A part is a function of a :class:`Report`; :data:`PARTS` lists them in order."""

    ctx: Context
    page: Page
    df: pd.DataFrame
    info: SweepInfo
    caps: list[Capacity]
    models: list[Any]
    drawn: Callable[[], list[ModelResult]]  # the models' parts, started first (model_jobs)
    headline: Headline | None = None
    rows: pd.DataFrame | None = None


def overview_part(r: Report) -> None:
    """The overview table (and overview.csv), then what moves its headline."""
    if "model.name" not in r.df or r.df["status"].eq("ok").sum() == 0:
        return
    hl = headline(r.df, r.ctx.roles, r.caps)
    rows = overview_rows(hl)
    r.headline, r.rows = hl, rows
    rows.rename(columns={"value": hl.unit.replace("/", "_per_") + "_per_gpu"}).to_csv(
        r.ctx.out / "overview.csv", index=False
    )
    rank = {m: float(i) for i, m in enumerate(r.models)}
    r.page.overview_title = f"Overview: {hl.what}"
    r.page.overview = caption(hl, r.df) + overview_table(hl, rows, rank)
    imp = decompose(hl, {"model.name": list(r.models)})
    if imp is not None and len(imp.shares) >= 2:
        sentences = "".join(f"<li>{html.escape(s)}</li>" for s in imp.sentences)
        r.page.importance = importance_figure(r.ctx, imp, hl) + f"<ul>{sentences}</ul>"


def explore_part(r: Report) -> None:
    r.page.explore = write_explore(r.ctx.out, r.df, r.page.info.name or "the sweep", r.models)


def capacity_part(r: Report) -> None:
    if r.caps:
        rows = sum(len(c.table) for c in r.caps)
        body = capacity_section(r.caps)
        if rows > FOLD_ROWS:
            body = folded(f"Every boundary ({rows} cells)", body)
        r.page.sections.append(Section("capacity", "Capacity at the SLO", body))


def cluster_part(r: Report) -> None:
    """Routers and CPU tiers, when the sweep varies them (sweep.report.cluster)."""
    body, found = cluster_section(r.ctx, r.df, r.page.varied)
    if body:
        r.page.sections.append(Section(ROUTERS_ANCHOR, "Routers and CPU tiers", body))
        _by_model(r, found)


def _by_model(r: Report, findings: list[Finding]) -> None:
    """Findings titled after a model fold under that model's sentences; the rest go last."""
    for finding in findings:
        model = next((str(m) for m in r.models if finding.title.startswith(str(m))), None)
        if model is None:
            r.page.findings.append(finding)
        else:
            r.page.model_findings.setdefault(model, []).append(finding)


def model_jobs(ctx: Context, df: pd.DataFrame, models: list[Any], varied: list[str]) -> list[ModelJob]:
    return [ModelJob(ctx, df[df["model.name"] == m], m, i, varied) for i, m in enumerate(models, start=1)]


def models_part(r: Report) -> None:
    """One section per model (drawn in worker processes on a big grid), its handful of sentences
    (the overview's row, then what caching buys), and the rest of its findings folded beneath
    them, the capacity clauses first."""
    _by_model(r, capacity_findings(r.caps))
    hl, rows = r.headline, r.rows
    for model, result in zip(r.models, r.drawn(), strict=True):
        first = headline_sentence(hl, rows, model) if hl is not None and rows is not None else ""
        sentences = ([first] if first else []) + result.sentences
        if sentences:
            r.page.digest[result.model] = sentences
        r.page.model_findings.setdefault(result.model, []).extend(result.findings)
        r.page.sections.append(result.section)


#: The parts of the page, in order; each reads the :class:`Report` and adds to its page. A new
#: kind of result is one more function here that adds its :class:`Section` when the dataset has
#: something for it and nothing otherwise, as cluster_part does for routers and CPU tiers.
PARTS: list[Callable[[Report], None]] = [
    overview_part, explore_part, capacity_part, cluster_part, models_part
]
ROUTERS_ANCHOR = "routers-and-tiers"
#: A capacity table longer than this folds away (the overview carries the answer).
FOLD_ROWS = 40
