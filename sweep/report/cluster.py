"""Routers and CPU tiers: the report's section for sweeps over serving clusters.

Shown when the sweep varies ``cluster.router``, ``cluster.replicas`` or ``engine.cpu_offload_gib``.
Per model: one panel per replica count and CPU tier size, with the prefix-cache hit rate and
TTFT p99 against load, one line per router (one replica has no router: its line is the single
engine's); a table of every cell (hit rate, the share of it found in CPU memory, TTFT p99, load
imbalance); findings (which router keeps the cache, what the CPU tier adds); and with an SLO, the
most load each router (and tier) sustains within it.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from sweep import analysis
from sweep.capacity import capacity_rows
from sweep.report import heatmaps, lines
from sweep.report.cells import cell_states
from sweep.report.context import Context, img
from sweep.report.findings import Finding
from sweep.report.fmt import label, num, pct, seconds, slug, sort_values
from sweep.report.tables import folded, html_table

ROUTER = "cluster.router"
REPLICAS = "cluster.replicas"
CPU = "engine.cpu_offload_gib"
CLUSTER_AXES = (ROUTER, REPLICAS, CPU)
ROUTER_ORDER = ("round_robin", "random", "least_loaded", "session_affinity", "prefix_aware")
METRICS = ("prefix_hit_rate", "hit_rate_cpu", "hit_rate_shared", "ttft_p99_s", "throughput_rps",
           "request_imbalance", "busy_imbalance")
_FIGURES = (("prefix_hit_rate", "Prefix-cache hit rate"), ("ttft_p99_s", "TTFT p99"))


def cluster_axes(varied: list[str]) -> list[str]:
    """The cluster axes a sweep varies (empty: no section)."""
    return [a for a in CLUSTER_AXES if a in varied]


def _routers(df: pd.DataFrame) -> list[Any]:
    present = df[ROUTER].dropna().unique().tolist() if ROUTER in df else [None]
    return sorted(present, key=lambda r: ROUTER_ORDER.index(r) if r in ROUTER_ORDER else len(ROUTER_ORDER))


def router_less(routers: list[Any]) -> bool:
    """True when the sweep names no router (every line is one engine's or a cluster's default)."""
    return routers == [None]


def _others(summary: pd.DataFrame, x: str | None) -> list[str]:
    """The varied axes besides model, load, replicas, CPU tier and router (e.g. a router weight):
    each of their values gets its own line, named after it."""
    fixed = {"model.name", x, REPLICAS, CPU, ROUTER}
    return [c for c in summary.columns if c not in fixed and not c.endswith(("_mean", "_ci95", "_n"))
            and c not in ("n_runs", "n_ok")]


def _combos(frame: pd.DataFrame, others: list[str]) -> list[tuple[Any, ...]]:
    """The combinations of ``others``' values present, in order ([()] without others)."""
    if not others:
        return [()]
    return sorted({tuple(r) for r in frame[others].itertuples(index=False)}, key=lambda t: tuple(map(str, t)))


def _pick(frame: pd.DataFrame, others: list[str], combo: tuple[Any, ...]) -> pd.DataFrame:
    for col, value in zip(others, combo, strict=True):
        frame = frame[frame[col] == value]
    return frame


def _combo_name(others: list[str], combo: tuple[Any, ...]) -> str:
    return ", ".join(f"{label(c)} {num(v)}" for c, v in zip(others, combo, strict=True))


def _panels(df: pd.DataFrame) -> list[tuple[Any, Any]]:
    """(replicas, CPU GiB) of each panel, in order (None where the sweep does not vary it: pass
    the summary, whose columns are the varied axes)."""
    return [(r, c) for r in _values(df, REPLICAS) for c in _values(df, CPU)]


def _where(frame: pd.DataFrame, replicas: Any, cpu: Any) -> pd.DataFrame:
    if replicas is not None:
        frame = frame[frame[REPLICAS] == replicas]
    if cpu is not None:
        frame = frame[frame[CPU] == cpu]
    return frame


def _panel_title(replicas: Any, cpu: Any) -> str:
    parts = []
    if replicas is not None:
        parts.append(f"{num(replicas)} replica" + ("s" if replicas != 1 else ""))
    if cpu is not None:
        parts.append(f"CPU tier {num(cpu)} GiB" if cpu else "no CPU tier")
    return ", ".join(parts) or "all runs"


def cluster_section(ctx: Context, df: pd.DataFrame, varied: list[str]) -> tuple[str, list[Finding]]:
    """The section's HTML and its findings (empty when the sweep varies no cluster axis)."""
    if not cluster_axes(varied):
        return "", []
    x = ctx.roles.x
    keys = [c for c in ("model.name", *varied) if c in df]
    metrics = [m for m in METRICS if m in df]
    summary = analysis.summarize(df, keys, metrics)
    ctx.out.joinpath("cluster.csv").write_text(summary.to_csv(index=False), encoding="utf-8")
    parts = [  # the page gives the section its heading (build.cluster_part)
        '<p class="sub">Replicas of the engine '
        "behind a router (<code>cluster.*</code>), and KV blocks kept in CPU memory after the GPU evicts "
        "them (<code>engine.cpu_offload_gib</code>). One replica has no router: its line is the single "
        "engine's. Every cell is in <code>cluster.csv</code>.</p>"
    ]
    findings: list[Finding] = []
    for model in sort_values(df["model.name"].dropna().unique().tolist()):
        mdf = df[df["model.name"] == model]
        msum = summary[summary["model.name"] == model]
        if x is not None:
            for metric, head in _FIGURES:
                if f"{metric}_mean" in msum:
                    parts.append(_figure(ctx, mdf, msum, str(model), x, metric, head))
        parts.append(folded(f"{html.escape(str(model))}: every cell ({len(msum)})", _table(msum, keys)))
        findings += _findings(msum, str(model), x)
        if ctx.slo is not None and x is not None:
            parts.append(_capacity(mdf, x, ctx, str(model), varied))
    return "\n".join(parts), findings


def _figure(ctx: Context, df: pd.DataFrame, summary: pd.DataFrame, model: str, x: str, metric: str,
            head: str) -> str:
    """``metric`` against load, one panel per (replicas, CPU tier), one line per router."""
    panels = _panels(summary)
    routers = _routers(summary)
    others = _others(summary, x)
    xs = sort_values(df[x].dropna().unique().tolist())
    state_keys = [c for c in (x, REPLICAS, CPU, ROUTER, *others) if c in summary]
    states = {tuple(r[k] for k in state_keys): r["state"] for _, r in cell_states(df, state_keys).iterrows()}
    cols = min(len(panels), 3)
    rows = -(-len(panels) // cols)
    fig = heatmaps.new_figure(5.2 * cols + 2.5, 3.8 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    fmt = seconds if metric.endswith("_s") else (lambda v: f"{v * 100:.0f}%")
    for ax, (replicas, cpu) in zip(axes, panels, strict=False):
        pos_of = dict(zip(xs, lines.x_axis(ax, xs, label(x)), strict=True))
        sub = _where(summary, replicas, cpu)
        drawn = []
        alone = replicas == 1 or router_less(routers)
        lines_of = [(r, c) for r in (routers[:1] if alone else routers) for c in _combos(sub, others)]
        for i, (router, combo) in enumerate(lines_of):
            pick = _pick(sub[sub[ROUTER] == router] if router is not None else sub, others, combo)
            named = {REPLICAS: replicas, CPU: cpu, ROUTER: router, **dict(zip(others, combo, strict=True))}
            at = {v: states.get(tuple(v if k == x else named[k] for k in state_keys), "unknown")
                  for v in pick[x]}
            name = ", ".join(p for p in (_line_name(df, replicas, router), _combo_name(others, combo)) if p)
            # solid lines ("prefix" is the solid style of lines.draw)
            one = lines.series_of(pick, x, metric, pos_of, [name], "prefix", i, at)
            if one is not None:
                drawn.append(one)
        lines.draw(ax, lines.merge_same(drawn), ax.get_xscale() == "log", fmt)
        ax.set_title(_panel_title(replicas, cpu), fontsize=10)
        ax.legend(fontsize=8, loc="best")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{model}: {head} against {label(x)} by router\n(x: overloaded, hollow: did not settle)",
                 fontsize=11)  # two lines: one narrow panel must hold it too
    name = ctx.save(fig, f"{slug(model)}-routers-{metric.removesuffix('_s').replace('_', '-')}")
    return f"<h3>{html.escape(model)}: {html.escape(head)} by router</h3>" + img(name, f"{head} by router")


def _only(df: pd.DataFrame, col: str) -> Any:
    """The one value ``col`` holds over ``df`` (None if it holds several, or is not a column)."""
    values = df[col].dropna().unique().tolist() if col in df else []
    return values[0] if len(values) == 1 else None


def _line_name(df: pd.DataFrame, replicas: Any, router: Any) -> str:
    """A line's name: the single engine's, or its router's (the sweep's one router when it
    does not vary it)."""
    if (replicas if replicas is not None else _only(df, REPLICAS)) == 1:
        return "single engine (no router)"
    router = router if router is not None else _only(df, ROUTER)
    return str(router) if router is not None else "replicas behind the router"


def _table(summary: pd.DataFrame, keys: list[str]) -> str:
    """Every cell: hit rate (and its CPU and shared-pool shares), TTFT p99, throughput and load imbalance."""
    cols = {
        "prefix_hit_rate_mean": ("hit rate", lambda v: pct(v, signed=False)),
        "hit_rate_cpu_mean": ("of it from CPU", lambda v: pct(v, signed=False)),
        "hit_rate_shared_mean": ("of it from the shared pool", lambda v: pct(v, signed=False)),
        "ttft_p99_s_mean": ("TTFT p99", seconds),
        "throughput_rps_mean": ("requests/s", lambda v: f"{v:.3g}"),
        "request_imbalance_mean": ("requests max/mean", lambda v: f"{v:.2f}"),
        "busy_imbalance_mean": ("busy max/mean", lambda v: f"{v:.2f}"),
    }
    shown = [k for k in keys if k != "model.name"]
    table = pd.DataFrame({label(k): summary[k].map(num) for k in shown})
    for col, (name, fmt) in cols.items():
        if col in summary:
            table[name] = summary[col].map(lambda v, f=fmt: "" if pd.isna(v) else f(v))
    return html_table(table)


def _findings(summary: pd.DataFrame, model: str, x: str | None) -> list[Finding]:
    """At the highest load of each panel: the routers' hit rates, and what the CPU tier adds."""
    if "prefix_hit_rate_mean" not in summary or summary.empty:
        return []
    top = summary[summary[x] == summary[x].max()] if x is not None else summary
    load = f" at {num(summary[x].max())} {label(x).lower()}" if x is not None else ""
    others = _others(summary, x)
    out = _router_lines(top, others, load) + _tier_lines(top, others, load)
    return [Finding(f"{model}: routers and CPU tiers", out)] if out else []


def _values(top: pd.DataFrame, axis: str) -> list[Any]:
    return sort_values(top[axis].dropna().unique().tolist()) if axis in top else [None]


def _router_lines(top: pd.DataFrame, others: list[str], load: str) -> list[str]:
    """Per panel (and value of the other axes): the routers ranked by hit rate."""
    if ROUTER not in top:
        return []
    out = []
    for replicas in _values(top, REPLICAS):
        for cpu in _values(top, CPU):
            for combo in _combos(top, others):
                cell = _pick(_where(top, replicas, cpu), others, combo)
                cell = cell.dropna(subset=["prefix_hit_rate_mean"])
                if replicas == 1 or len(cell) < 2:
                    continue
                ranked = cell.sort_values("prefix_hit_rate_mean", ascending=False)
                text = ", ".join(f"{r[ROUTER]} {pct(r['prefix_hit_rate_mean'], signed=False)}"
                                 for _, r in ranked.iterrows())
                where = ", ".join(p for p in (_panel_title(replicas, cpu), _combo_name(others, combo)) if p)
                out.append(f"{where}{load}: hit rate by router {text}.")
    return out


def _tier_lines(top: pd.DataFrame, others: list[str], load: str) -> list[str]:
    """Per replica count, router (and value of the other axes): what the largest CPU tier adds."""
    if CPU not in top or top[CPU].nunique() < 2:
        return []
    cpus = _values(top, CPU)
    routers = _routers(top)
    out = []
    for replicas in _values(top, REPLICAS):
        alone = replicas == 1 or router_less(routers)
        for router in routers[:1] if alone else routers:
            mine = top if router is None else top[top[ROUTER] == router]
            for combo in _combos(mine, others):
                base = _pick(_where(mine, replicas, cpus[0]), others, combo)
                big = _pick(_where(mine, replicas, cpus[-1]), others, combo)
                if base.empty or big.empty:
                    continue
                where = ", ".join(p for p in (_panel_title(replicas, None), "" if alone else str(router),
                                              _combo_name(others, combo)) if p)
                out.append(_tier_line(base.iloc[0], big.iloc[0], cpus[-1], load, where))
    return out


def _tier_line(base: pd.Series, big: pd.Series, gib: Any, load: str, where: str) -> str:
    """What a CPU tier of ``gib`` GiB changes in one cell: hit rate (and its CPU share), TTFT p99."""
    before = pct(base["prefix_hit_rate_mean"], signed=False)
    after = pct(big["prefix_hit_rate_mean"], signed=False)
    text = f"{where}: a CPU tier of {num(gib)} GiB{load} takes the hit rate from {before} to {after}"
    if "hit_rate_cpu_mean" in big:
        text += f" ({pct(big['hit_rate_cpu_mean'], signed=False)} of prompt tokens from CPU memory)"
    if "ttft_p99_s_mean" in big:
        text += f", TTFT p99 from {seconds(base['ttft_p99_s_mean'])} to {seconds(big['ttft_p99_s_mean'])}"
    return text + "."


def _capacity(df: pd.DataFrame, x: str, ctx: Context, model: str, varied: list[str]) -> str:
    """The most load within the SLO per router, replica count and CPU tier (read off the grid)."""
    assert ctx.slo is not None
    keys = [c for c in varied if c != x]
    rows = capacity_rows(df, x, ctx.slo, "max", keys)
    if rows.empty:
        return ""
    shown = [c for c in (REPLICAS, CPU, ROUTER, *keys) if c in rows]
    shown = list(dict.fromkeys(shown))
    table = pd.DataFrame({label(c): rows[c].map(num) for c in shown})
    table[f"most {label(x).lower()} within the SLO"] = [
        "none" if pd.isna(b) else (num(b) if br else f">= {num(b)}")
        for b, br in zip(rows["boundary"], rows["bracketed"], strict=True)
    ]
    return (f"<h3>{html.escape(model)}: capacity at {html.escape(ctx.slo.text())} by router</h3>"
            f'<p class="sub">Read off the grid: the true boundary lies between the value named and the '
            f"next grid value.</p>" + html_table(table))
