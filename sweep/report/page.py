"""The HTML page, in the order a planner reads it::

    head            what was run: runs by status, seeds, axes, how long runs measured
    overview        the question answered: one sortable table (sweep.report.overview)
    what matters    which axes move the headline (sweep.report.importance)
    findings        a handful of sentences per model; the rest folds away (sweep.report.digest)
    explore         the link to explore.html, every run on parallel coordinates
    sections        every other part, in the order added: capacity, one per model, ...
    failures, data, spec

Opens from the file system: no server, no network, images beside it; the one script (sorting the
overview) is inline, and the page reads the same without it."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import pandas as pd

from sweep.analysis import SweepInfo
from sweep.report.cells import run_length, run_states
from sweep.report.findings import Finding
from sweep.report.fmt import label, slug

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
nav{position:sticky;top:0;background:#fafafa;padding:6px 0;z-index:1;font-size:14px}
nav a{margin-right:12px} details{margin:6px 0} summary{cursor:pointer;color:#2b6cb0}
table.overview{font-size:14px} table.overview td{vertical-align:top;white-space:nowrap}
table.overview td b{font-size:15px} .range{display:block;color:#777;font-size:11px}
table.overview td.head{text-align:left} table.overview td:last-child{text-align:right}
th[data-col]{cursor:pointer}
th[data-dir=up]::after{content:" \\25B2"} th[data-dir=down]::after{content:" \\25BC"}
.findings h3{margin:12px 0 2px;font-size:16px} .findings h4{margin:8px 0 2px;font-size:13px}
section h2{margin-top:28px} .facet{margin-left:18px}
@media print{nav{position:static} details{display:block}}
code{background:#f1f1f1;padding:0 3px;border-radius:3px}
"""


@dataclass
class Section:
    """One part of the page after the overview and the findings: its anchor (``#anchor``), its
    title (also in the navigation bar), a line under the title, and its HTML. Any part of the
    report (models, capacity, clusters, ...) adds its own with ``page.sections.append``."""

    anchor: str
    title: str
    body: str
    sub: str = ""

    def html(self) -> str:
        sub = f'<p class="sub">{html.escape(self.sub)}</p>' if self.sub else ""
        head = f'<section><h2 id="{html.escape(self.anchor)}">{html.escape(self.title)}</h2>'
        return f"{head}{sub}{self.body}</section>"


@dataclass
class Page:
    """What the page is made of; :func:`render` lays it out (see the module docstring)."""

    info: SweepInfo
    df: pd.DataFrame
    varied: list[str]
    cell_axes: list[str]
    compare: bool
    summary_rows: int
    overview: str = ""  # the overview: caption and sortable table
    overview_title: str = ""
    importance: str = ""  # what moves the headline: picture and sentences
    digest: dict[str, list[str]] = field(default_factory=dict)  # model -> its handful of sentences
    model_findings: dict[str, list[Finding]] = field(default_factory=dict)  # model -> the rest, folded
    findings: list[Finding] = field(default_factory=list)  # findings of no one model
    sections: list[Section] = field(default_factory=list)
    explore: str = ""  # the interactive page's file name
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


SORT_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th[data-col]').forEach(function (th) {
    th.title = 'sort';
    th.addEventListener('click', function () {
      var col = +th.dataset.col, body = table.tBodies[0], up = th.dataset.dir !== 'up';
      table.querySelectorAll('th[data-col]').forEach(function (h) { delete h.dataset.dir; });
      th.dataset.dir = up ? 'up' : 'down';
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        if (x === '' || y === '') { return (x === '') - (y === ''); }
        var p = parseFloat(x), q = parseFloat(y);
        var c = isNaN(p) || isNaN(q) ? x.localeCompare(y, undefined, {numeric: true}) : p - q;
        return up ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def findings_html(findings: list[Finding]) -> str:
    return "".join(
        f"<h4>{html.escape(f.title)}</h4><ul>"
        + "".join(f"<li>{html.escape(line)}</li>" for line in f.lines)
        + "</ul>"
        for f in findings
    )


def _digest_html(page: Page) -> str:
    """A handful of sentences per model, the rest of its findings folded beneath them."""
    parts = []
    models = list(dict.fromkeys([*page.digest, *page.model_findings]))
    for model in models:
        anchor = slug(model)
        lines = "".join(f"<li>{html.escape(line)}</li>" for line in page.digest.get(model, []))
        rest = page.model_findings.get(model, [])
        fold = (
            f"<details><summary>Every finding for {html.escape(model)} ({sum(len(f.lines) for f in rest)}"
            f" sentences over {len(rest)} groups of cells)</summary>{findings_html(rest)}</details>"
            if rest else ""
        )
        parts.append(
            f'<h3><a href="#{anchor}">{html.escape(model)}</a></h3><ul>{lines}</ul>{fold}'
        )
    return "".join(parts) + findings_html(page.findings)


def _what(page: Page) -> str:
    if page.compare:
        return (
            "What prefix caching buys: each caching mode against <code>off</code> at the same model, GPU,"
            " memory and load. Speed-up = TTFT p99 without caching / with caching (never where a run is"
            " overloaded); gain = throughput with / without - 1."
        )
    return (
        "This sweep does not vary <code>engine.prefix_caching</code> (caching) against <code>off</code>,"
        " so the page shows absolute numbers. Add <code>engine.prefix_caching: [off, prefix]</code> to the"
        " grid to see what caching buys."
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
    not_ok = len(df) - int(counts.get("ok", 0))
    warn = (
        f'<p class="warn">{not_ok} run(s) did not finish ok: see <a href="#failures">runs that are not'
        " ok</a>.</p>"
        if not_ok
        else ""
    )
    meta = f"kvsweep {html.escape(', '.join(versions) or '?')}" + (
        f" &middot; created {html.escape(info.created)}" if info.created else ""
    )
    explore = (
        f'<a href="{html.escape(page.explore)}">every run, interactive</a>' if page.explore else ""
    )
    nav = [
        '<a href="#overview">overview</a>' if page.overview else "",
        '<a href="#what-matters">what matters</a>' if page.importance else "",
        '<a href="#findings">findings per model</a>',
        explore,
        *(f'<a href="#{html.escape(s.anchor)}">{html.escape(s.title)}</a>' for s in page.sections),
        '<a href="#failures">failures</a>',
        '<a href="#spec">spec</a>',
        '<a href="summary.csv">summary.csv</a>',
    ]
    overview = (
        f'<section id="overview"><h2>{html.escape(page.overview_title)}</h2>{page.overview}</section>'
        if page.overview else ""
    )
    importance = (
        f'<section id="what-matters"><h2>What matters</h2>{page.importance}</section>'
        if page.importance
        else ""
    )
    explore_p = (
        f'<p class="good">Drill down: <a href="{html.escape(page.explore)}">{html.escape(page.explore)}</a>'
        " shows every run on parallel coordinates: drag along any axis (model, GPU, caching, load, memory,"
        " TTFT p99, throughput...) to filter. It opens from disk with no network.</p>"
        if page.explore else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>kvsweep report: {html.escape(name)}</title>
<style>{CSS}</style></head><body><main>
<h1>kvsweep report: {html.escape(name)}</h1>
<p class="sub">{len(df)} runs ({status_text}) &middot; {seeds} seed(s) per cell &middot;
varied: {axes_text or "nothing"} &middot; {meta}</p>
<p class="sub">{html.escape(measured_text(df))}</p>
<nav>{" ".join(n for n in nav if n)}</nav>
{overview}
{importance}
<section id="findings" class="findings"><h2>Findings per model</h2><p>{_what(page)}</p>
{_digest_html(page)}{warn}</section>
{explore_p}
{"".join(s.html() for s in page.sections)}
<h2 id="failures">Runs that are not ok</h2>
{page.failures}
<h2 id="data">The numbers behind the pictures</h2>
<p><a href="summary.csv">summary.csv</a>: {page.summary_rows} cells (every varied axis), mean and 95%
confidence interval half-width (<code>_ci95</code>) over seeds.{_csv_note(page)} To dig further:</p>
<pre>from sweep.analysis import load, compare
df = load("DIR")
compare(df, axis="engine.prefix_caching", baseline="off")

kvsweep query DIR 'SELECT "model.name", status, count(*) FROM runs GROUP BY ALL'</pre>
<h2 id="spec">Sweep spec and version</h2>
<p>{meta}</p>
<pre>{html.escape(info.spec_text or "(no spec.yaml in the dataset)")}</pre>
</main><script>{SORT_SCRIPT}</script></body></html>
"""


def _csv_note(page: Page) -> str:
    note = " <a href='overview.csv'>overview.csv</a>: the overview's numbers." if page.overview else ""
    if page.compare:
        note += " <a href='caching.csv'>caching.csv</a>: each caching mode against off, cell by cell."
    return note
