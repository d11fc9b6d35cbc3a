"""The HTML page: head, what the runs measured, key findings, sections, failures, data, spec.

Opens from the file system: no server, no network; images beside it."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import pandas as pd

from sweep.analysis import SweepInfo
from sweep.report.cells import run_length, run_states
from sweep.report.findings import Finding
from sweep.report.fmt import label

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1f;
 background:#fafafa}
main{max-width:1320px;margin:0 auto;padding:20px 28px 60px}
h1{font-size:26px;margin:8px 0 4px} h2{margin-top:36px;border-bottom:2px solid #ddd;padding-bottom:4px}
h3{margin-top:22px} .sub{color:#555;margin:0 0 14px}
.findings{background:#fff;border:1px solid #cfd8e3;border-left:6px solid #2b6cb0;border-radius:6px;
 padding:10px 20px;margin:12px 0 18px} .findings h2{border:0;margin:6px 0;font-size:20px}
.findings h3{margin:12px 0 2px;font-size:15px} .findings ul{margin:2px 0 6px}
figure{margin:10px 0} img{max-width:100%;background:#fff;border:1px solid #e2e2e2}
table{border-collapse:collapse;font-size:13px;background:#fff;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right} th{background:#f0f3f7}
td:last-child{text-align:left} .callout{background:#fff4e5;border-left:5px solid #e69500;padding:8px 12px}
.good{background:#eef8ee;border-left:5px solid #3c9a3c;padding:8px 12px}
.warn{background:#fdecec;border-left:5px solid #c53030;padding:8px 12px}
pre{background:#f4f4f4;padding:10px;overflow:auto;font-size:12px;border:1px solid #e2e2e2}
nav a{margin-right:14px} details{margin:6px 0} summary{cursor:pointer;color:#2b6cb0}
code{background:#f1f1f1;padding:0 3px;border-radius:3px}
"""


@dataclass
class Page:
    """What the page is made of; :func:`render` lays it out."""

    info: SweepInfo
    df: pd.DataFrame
    varied: list[str]
    cell_axes: list[str]
    compare: bool
    summary_rows: int
    findings: list[Finding] = field(default_factory=list)
    capacity_findings: list[Finding] = field(default_factory=list)
    nav: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    capacity: str = ""
    failures: str = ""


def measured_text(df: pd.DataFrame) -> str:
    """How long the ok runs measured and how many were steady: the scale on which to read the page."""
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return ""
    length = run_length(ok).dropna()
    what = "measured (after warm-up)" if "measured_s" in ok else "lasted"
    text = ""
    if not length.empty:
        text = (
            f"Runs {what} {length.min():,.0f} to {length.max():,.0f} s of simulated time"
            f" (median {length.median():,.0f} s). "
        )
    states = run_states(ok).value_counts()
    if "unknown" in states and states["unknown"] == len(ok):
        return text + (
            "This dataset does not say whether its runs reached a steady state (an older"
            " kvsweep): short runs may describe a transient."
        )
    shares = ", ".join(
        f"{states.get(s, 0) / len(ok):.0%} {s}"
        for s in ("steady", "transient", "overloaded")
        if states.get(s, 0)
    )
    return text + f"Of the ok runs: {shares}."


def _findings_html(findings: list[Finding]) -> str:
    return "".join(
        f"<h3>{html.escape(f.title)}</h3><ul>"
        + "".join(f"<li>{html.escape(line)}</li>" for line in f.lines)
        + "</ul>"
        for f in findings
    )


def render(page: Page) -> str:
    df, info = page.df, page.info
    name = info.name or (str(df["sweep"].iloc[0]) if "sweep" in df and len(df) else "sweep")
    counts = df["status"].value_counts().to_dict()
    per_cell = df.groupby(page.cell_axes, dropna=False)["seed"].nunique() if len(df) else pd.Series([0])
    lo_seeds, hi_seeds = int(per_cell.min()), int(per_cell.max())
    seeds = f"{lo_seeds}" if lo_seeds == hi_seeds else f"{lo_seeds}-{hi_seeds}"
    versions = sorted(
        set(map(str, df.get("kvsweep_version", pd.Series(dtype=str)).dropna()))
        | ({info.version} if info.version else set())
    )
    statuses = ["ok", "infeasible", "failed"] + sorted(set(counts) - {"ok", "infeasible", "failed"})
    status_text = ", ".join(f"{counts.get(k, 0)} {k.replace('_', ' ')}" for k in statuses)
    axes_text = ", ".join(f"{html.escape(label(a))} ({df[a].nunique(dropna=False)})" for a in page.varied)
    if page.compare:
        what = (
            "What prefix caching buys, cell by cell: each caching mode against <code>off</code> at the same"
            " model, memory and load. Speed-up = TTFT p99 without caching / with caching (never where a run"
            " is overloaded); gain = throughput with / without - 1."
        )
    else:
        what = (
            "This sweep does not vary <code>engine.prefix_caching</code> against <code>off</code>, so the"
            " pictures show absolute numbers. Add <code>engine.prefix_caching: [off, prefix]</code> to the"
            " grid to see what caching buys."
        )
    not_ok = len(df) - int(counts.get("ok", 0))
    warn = (
        (
            f'<p class="warn">{not_ok} run(s) did not finish ok: see <a href="#failures">runs that are not'
            " ok</a>.</p>"
        )
        if not_ok
        else ""
    )
    meta = f"kvsweep {html.escape(', '.join(versions) or '?')}" + (
        f" &middot; created {html.escape(info.created)}" if info.created else ""
    )
    capacity_nav = '<a href="#capacity">capacity at the SLO</a> ' if page.capacity else ""
    capacity = f'<h2 id="capacity">Capacity at the SLO</h2>{page.capacity}' if page.capacity else ""
    caching_csv = (
        " <a href='caching.csv'>caching.csv</a>: each caching mode against off, cell by cell."
        if page.compare
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>kvsweep report: {html.escape(name)}</title>
<style>{CSS}</style></head><body><main>
<h1>kvsweep report: {html.escape(name)}</h1>
<p class="sub">{len(df)} runs ({status_text}) &middot; {seeds} seed(s) per cell &middot;
varied: {axes_text or "nothing"} &middot; {meta}</p>
<p class="sub">{html.escape(measured_text(df))}</p>
<div class="findings"><h2>Key findings</h2><p>{what}</p>{_findings_html(page.capacity_findings)}
{_findings_html(page.findings)}{warn}</div>
<nav>Sections: {capacity_nav}{" ".join(page.nav)} <a href="#failures">failures</a> <a href="#spec">spec</a>
<a href="summary.csv">summary.csv</a></nav>
{capacity}
{"".join(page.sections)}
<h2 id="failures">Runs that are not ok</h2>
{page.failures}
<h2 id="data">The numbers behind the pictures</h2>
<p><a href="summary.csv">summary.csv</a>: {page.summary_rows} cells (every varied axis), mean and 95%
confidence interval half-width (<code>_ci95</code>) over seeds.{caching_csv} To dig further:</p>
<pre>from sweep.analysis import load, compare
df = load("DIR")
compare(df, axis="engine.prefix_caching", baseline="off")

kvsweep query DIR 'SELECT "model.name", status, count(*) FROM runs GROUP BY ALL'</pre>
<h2 id="spec">Sweep spec and version</h2>
<p>{meta}</p>
<pre>{html.escape(info.spec_text or "(no spec.yaml in the dataset)")}</pre>
</main></body></html>
"""
