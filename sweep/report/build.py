"""``write_report(DIR)``: read the dataset, work out the roles, write the CSVs, the figures and
the page. The one place that knows the order of things; every part is in its own module."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from simcore.errors import ConfigError
from sweep import analysis
from sweep.analysis import CACHING_AXIS
from sweep.report.absolute import section_absolute
from sweep.report.capacity import capacities, capacity_findings, capacity_section
from sweep.report.cells import COMPARE_METRICS
from sweep.report.cluster import cluster_section
from sweep.report.context import Context
from sweep.report.fmt import label, num, slug
from sweep.report.page import Page, render
from sweep.report.roles import BASELINE, infer_roles, model_order
from sweep.report.sections import section_compare
from sweep.report.tables import failures_table
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


def write_report(path: str | Path, out: str | Path | None = None, slo: str | Slo | None = None) -> Path:
    """Write the report of the sweep at ``path`` into ``out`` (default ``path/report``); return index.html.

    ``slo`` (``"ttft_p99_s<1"``) draws the SLO and states the capacity at it; a capacity search's
    dataset states its own. Raises :class:`ConfigError` when there is no dataset, when ``path``
    is a remote URI and ``out`` is not given, or when the SLO names no column of the dataset.
    """
    if out is None:
        if "://" in str(path):
            raise ConfigError(f"{path}: the report is written locally: give --out DIR")
        out = Path(path) / "report"
    out_dir = Path(out)
    info = analysis.read_info(path)
    columns = [c for c in analysis.runs_dataset(path).schema.names if c != "config_json"]
    df = analysis.load(path, columns=columns)
    objective = (
        Slo.parse(slo, known=[c for c in df.columns if c in analysis.METRICS])
        if isinstance(slo, str)
        else slo
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("fig*.png"):  # only what an earlier report wrote
        old.unlink()

    roles = infer_roles(df, info)
    varied = analysis.axes(df)
    cell_axes = list(dict.fromkeys(["model.name", *varied]))
    summary = analysis.summarize(df, cell_axes, [m for m in SUMMARY_METRICS if m in df])
    summary.to_csv(out_dir / "summary.csv", index=False)
    if roles.compare:
        keys = [c for c in varied if c != CACHING_AXIS]
        analysis.compare(df, CACHING_AXIS, BASELINE, COMPARE_METRICS, by=keys).to_csv(
            out_dir / "caching.csv", index=False
        )
    caps = capacities(df, roles, objective, analysis.load_capacity(path))
    for cap in caps:
        cap.table.to_csv(out_dir / f"capacity-{slug(cap.axis)}.csv", index=False)
    page = Page(
        info,
        df,
        varied,
        cell_axes,
        roles.compare,
        len(summary),
        capacity=capacity_section(caps),
        capacity_findings=capacity_findings(caps),
        failures=failures_table(df, [c for c in cell_axes if c != "model.name"]),
    )
    ctx = Context(out=out_dir, roles=roles, slo=objective or (caps[0].slo if caps else None))
    routers, found = cluster_section(ctx, df, varied)
    if routers:
        page.nav.append('<a href="#routers-and-tiers">Routers and CPU tiers</a>')
        page.sections.append(routers)
        page.findings.extend(found)
    for model in model_order(df, info):
        _model_sections(ctx, page, df[df["model.name"] == model], str(model))
    index = out_dir / "index.html"
    index.write_text(render(page), encoding="utf-8")
    return index


def _model_sections(ctx: Context, page: Page, mdf: pd.DataFrame, model: str) -> None:
    """One section per facet value of ``model`` (one section when there are no facets)."""
    facets = list(ctx.roles.facets)
    groups = (
        [((), mdf)]
        if not facets
        else [(k if isinstance(k, tuple) else (k,), g) for k, g in mdf.groupby(facets, dropna=False)]
    )
    for facet_values, gdf in groups:
        facet = ", ".join(f"{label(c)} {num(v)}" for c, v in zip(facets, facet_values, strict=True))
        title = model + (f" ({facet})" if facet else "")
        anchor = slug(title)
        page.nav.append(f'<a href="#{anchor}">{html.escape(title)}</a>')
        runs = gdf["status"].value_counts().to_dict()
        gpu = ", ".join(sorted(map(str, gdf["gpu.name"].dropna().unique())))
        head = (
            f'<h2 id="{anchor}">{html.escape(title)}</h2><p class="sub">{len(gdf)} runs '
            f"({', '.join(f'{n} {k}' for k, n in sorted(runs.items()))}) on {html.escape(gpu)}</p>"
        )
        if ctx.roles.compare:
            body, found = section_compare(ctx, gdf, title)
            page.findings.extend(found)
        else:
            body = section_absolute(ctx, gdf, title)
        page.sections.append(head + body)
