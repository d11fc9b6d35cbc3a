"""The report says only what holds: counts that agree, marks that are drawn when named, no latency
ratio of an overloaded cell called a speed-up, run length and steady state shown, plain names,
error bars inside their axes, identical lines marked "(same)", and capacity at an SLO."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.patches import Rectangle

from sweep import analysis, report
from sweep.cli import main
from sweep.report import heatmaps, lines
from sweep.report.heatmaps import Marks, Panel

try:  # tests/ is a plain folder (pytest puts it on sys.path) or a package
    from test_analysis import write_dataset
    from test_report import cell
except ImportError:  # pragma: no cover
    from tests.test_analysis import write_dataset
    from tests.test_report import cell

OVERLOADED = "overloaded: queue grows 3.1 req/s"


def run(
    caching: str,
    users: int,
    mem: float,
    seed: int,
    ttft: float,
    thr: float,
    state: str = "steady",
    **more: Any,
) -> dict[str, Any]:
    reason = {"steady": "", "transient": "too few measured requests", "overloaded": OVERLOADED}[state]
    row = cell("Llama-3.1-8B", caching, users, mem, seed, ttft, thr, hit=0.6)
    return {**row, "steady": state == "steady", "steady_reason": reason, "measured_s": 600.0, **more}


def overload_rows() -> list[dict[str, Any]]:
    """users 8 (transient), 16, 32, 64 at 40 and 80 GiB. Steady cells: TTFT off u/32 s, on u/64 s
    (speed-up 2x), throughput +10%. At 64 users both are overloaded (off 30 s, on 10 s: a 3x ratio
    that is no speed-up; capacity 10 vs 14 req/s). At 32 users and 40 GiB only off is."""
    rows = []
    for mem in (40.0, 80.0):
        for users in (8, 16, 32, 64):
            for seed in (0, 1):
                if users == 64:
                    rows += [
                        run("off", users, mem, seed, 30.0, 10.0, "overloaded"),
                        run("prefix", users, mem, seed, 10.0, 14.0, "overloaded"),
                    ]
                    continue
                state = "transient" if users == 8 else "steady"
                off_state = "overloaded" if (users, mem) == (32, 40.0) else state
                rows += [
                    run("off", users, mem, seed, users / 32, users * 0.5, off_state),
                    run("prefix", users, mem, seed, users / 64, users * 0.55, state),
                ]
    return rows


@pytest.fixture(scope="module")
def overload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = write_dataset(tmp_path_factory.mktemp("overload") / "d", overload_rows())
    return out, report.write_report(out).read_text()


def text_of(page: str) -> str:
    plain = re.sub(r"<style>.*?</style>", "", page, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", plain)))


def test_an_overloaded_cell_is_never_a_speed_up(overload: tuple[Path, str]) -> None:
    _, page = overload
    text = text_of(page)
    assert "3.00x" not in text  # 30 s / 10 s in the overloaded cells
    assert "TTFT p99: at least 5% faster with caching in 5 of 5 cells without overload; up to 2.00x" in text
    assert (
        "Overloaded with and without caching in 2 cells (64 concurrent users at every GPU memory):"
        " arrivals outrun the server"
    ) in text
    assert "capacity without caching 10 to 10 requests/s, with caching +40% (median)" in text
    assert "Caching ends the overload in 1 cells (32 concurrent users at 40 GiB)" in text
    # the cell table says so too
    rows = re.findall(r"<tr>(.*?)</tr>", page, flags=re.S)
    at64 = [r for r in rows if re.search(r"<td>64</td>", r) and "overloaded in both" in r]
    assert len(at64) == 2 and all("<td>overloaded</td>" in r for r in at64)
    assert all(re.search(r"<td>-</td>\s*<td>10</td>", r) for r in at64)  # no speed-up, capacity 10 req/s


def test_counts_agree_and_name_the_same_cells(overload: tuple[Path, str]) -> None:
    text = text_of(overload[1])
    assert "8 cells measured with and without caching (runs measured over 600 s)" in text
    assert "2 did not settle (hatched in the heatmaps: 8 concurrent users at every GPU memory)" in text
    assert "Throughput: at least 5% higher in 8 of 8 cells" in text
    assert "stops helping (neither" not in text  # no cell where it stops: so no sentence claims one


def test_run_length_and_steady_state_are_shown(overload: tuple[Path, str]) -> None:
    page = overload[1]
    text = text_of(page)
    assert "Runs measured (after warm-up) 600 to 600 s of simulated time" in text
    # 32 runs: 8 transient (8 users), 10 overloaded (64 users; off at 32 users and 40 GiB), 14 steady
    assert "Of the ok runs: 44% steady, 25% transient, 31% overloaded." in text
    assert "<th>measured off / on (s)</th>" in page and "<td>600 / 600</td>" in page
    assert "<td>transient / transient</td>" in page and "<td>overloaded / steady</td>" in page


def test_tables_have_plain_headers(overload: tuple[Path, str], tmp_path: Path) -> None:
    pages = [overload[1]]
    rows = [
        {**r, "status": "infeasible", "error": "does not fit"} if r["workload.users"] == 8 else r
        for r in overload_rows()
    ]
    pages.append(report.write_report(write_dataset(tmp_path / "d", rows), slo="ttft_p99_s<1").read_text())
    for page in pages:
        headers = re.findall(r"<th>(.*?)</th>", page)
        assert headers and not [h for h in headers if re.search(r"[a-z]\.[a-z]", h)], headers
    assert "<th>GPU memory (GiB)</th>" in pages[1] and "<th>concurrent users</th>" in pages[1]


# ---- figures -----------------------------------------------------------------------------------


def test_heatmap_marks_what_it_names() -> None:
    values = pd.Series({(40, 8): 2.0, (40, 16): 1.5, (80, 8): 3.0, (80, 16): 1.01})
    panel = Panel(
        "speed-up", values, lambda v: f"{v:.2f}x", "RdYlGn", center=1.0, log=True, hide_overloaded=True
    )
    marks = Marks(
        state={(40, 8): "transient", (80, 8): "overloaded"},
        overload_text={(80, 8): "overloaded"},
        boxed={(80, 16)},
    )
    fig = heatmaps.new_figure(6, 3)
    ax = fig.subplots()
    heatmaps.heatmap(ax, panel, [8, 16], [40, 80], ("users", "memory"), str, marks)
    texts = [t.get_text() for t in ax.texts]
    assert "3.00x" not in texts and "overloaded" in texts  # the overloaded cell hides its ratio
    assert {"2.00x", "1.50x", "1.01x"} <= set(texts)
    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert [r.get_hatch() for r in rects if r.get_hatch()] == ["////", "xxxx"]
    assert [r for r in rects if r.get_linestyle() == "--"]  # the dashed box is drawn
    legend = heatmaps.legend_text(marks, "caching helps < 5%")
    assert "dashed box: caching helps < 5%" in legend and "transient" in legend and "overloaded" in legend
    assert heatmaps.legend_text(Marks(), "caching helps < 5%") == ""  # nothing drawn, nothing named


def series(names: list[str], mean: list[float], ci: list[float], colour: int = 0) -> lines.Series:
    return lines.Series(
        names, "off", colour, np.array([4.0, 16.0, 64.0]), np.array(mean), np.array(ci), ["steady"] * 3
    )


def test_identical_lines_are_drawn_once_and_marked_same() -> None:
    a = series(["24 GiB, caching off"], [0.1, 0.2, 0.4], [0.01, 0.01, 0.01])
    b = series(["40 GiB, caching off"], [0.1, 0.2, 0.402], [0.0, 0.0, 0.0], colour=1)  # within 1%
    c = series(["80 GiB, caching off"], [0.1, 0.2, 0.5], [0.0, 0.0, 0.0], colour=2)
    merged = lines.merge_same([a, b, c])
    assert [s.names for s in merged] == [
        ["24 GiB, caching off", "40 GiB, caching off"],
        ["80 GiB, caching off"],
    ]
    fig = heatmaps.new_figure(6, 3)
    ax = fig.subplots()
    lines.draw(ax, merged, log_x=True)
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["24 GiB / 40 GiB, caching off (same)", "80 GiB, caching off"]
    assert lines.same_label(["a", "b, caching on"]) == "a = b, caching on (same)"


def test_error_bars_stay_inside_a_log_axis() -> None:
    wide = series(["wide"], [0.05, 1.0, 20.0], [0.2, 0.5, 5.0])  # the first interval reaches below 0
    fig = heatmaps.new_figure(6, 3)
    ax = fig.subplots()
    lines.draw(ax, [wide], log_x=True, slo=(2.0, "TTFT p99 < 2 s"))
    assert ax.get_yscale() == "log"
    bottom, top = ax.get_ylim()
    assert 0 < bottom < 0.05 and top >= 25.0
    segments = [seg for coll in ax.collections for seg in coll.get_segments()]
    assert segments and all(bottom - 1e-12 <= y <= top for seg in segments for _, y in seg)
    assert any(abs(seg[0][1] - bottom) < 1e-9 for seg in segments)  # the first bar runs to the edge
    assert "SLO: TTFT p99 < 2 s" in ax.get_legend_handles_labels()[1]


# ---- capacity at an SLO ------------------------------------------------------------------------


def slo_rows() -> list[dict[str, Any]]:
    """Tensor parallel 2, users 8..64: TTFT off u/32 s, on u/64 s. At TTFT p99 < 1 s: off meets up to
    16 users (32 gives exactly 1 s), on up to 32: 8 and 16 users per GPU, 2x."""
    return [
        run(
            c,
            u,
            80.0,
            s,
            u / (32 if c == "off" else 64),
            u * 0.5,
            goodput_rps=u * 0.4,
            ttft_p99_s_ci95_run=u / 320,
            **{"engine.tensor_parallel": 2},
        )
        for c in ("off", "prefix")
        for u in (8, 16, 32, 64)
        for s in (0, 1)
    ]


def test_report_states_capacity_at_the_slo_off_a_grid(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "d", slo_rows())
    page = report.write_report(out, slo="ttft_p99_s<1").read_text()
    text = text_of(page)
    assert "Llama-3.1-8B: most concurrent users per GPU at TTFT p99 < 1 s" in text
    assert "8 users without caching; 16 users with 'prefix' (2.00x)." in text
    assert "16 users (the next grid value, 32 users, fails: ttft_p99_s 1 (limit < 1))" in text
    assert "<th>goodput there (req/s)</th>" in page and "<td>12.8</td>" in page  # 32 users x 0.4
    assert "Red line: the SLO, TTFT p99 < 1 s." in text
    assert (
        "<th>TTFT p99 there</th>" in page and "<td>500 ms ± 50 ms</td>" in page
    )  # 16 users off, with its CI
    assert "<th>goodput off / on (req/s)</th>" in page and "<td>12.8 / 12.8</td>" in page  # 32 users
    table = pd.read_csv(out / "report" / "capacity-workload-users.csv")
    assert table.set_index("engine.prefix_caching")["boundary"].to_dict() == {"off": 16, "prefix": 32}


def test_report_slo_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = write_dataset(tmp_path / "d", slo_rows())
    assert main(["report", str(out), "--slo", "ttft_p99_z<1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean ttft_p99_s?" in err


def test_report_of_a_capacity_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = {
        "name": "srch",
        "seeds": 1,
        "grid": {"engine.prefix_caching": ["off", "prefix"]},
        "base": {
            "model": "Llama-3.2-1B",
            "gpu": "A100-40GB",
            "run": {"num_requests": 60},
            "workload": {"kind": "chat", "users": 4, "turns": 2, "think_time_s": 0.5},
        },
        "search": {"axis": "workload.users", "slo": {"ttft_p99_s": 0.2}, "low": 1, "high": 40},
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--executor", "serial", "--no-progress"]) == 0
    assert main(["report", str(out)]) == 0
    text = text_of((out / "report" / "index.html").read_text())
    stored = analysis.load_capacity(out)
    assert stored is not None
    off = int(stored.set_index("engine.prefix_caching").loc["off", "boundary"])
    assert f"{off} users without caching" in text and "found by the capacity search (capacity/)" in text
    assert main(["report", str(out), "--slo", "ttft_p99_s<0.2"]) == 0  # < and <= differ only on a tie
    assert "found by the capacity search (capacity/)" in text_of((out / "report" / "index.html").read_text())
    # another SLO: read off the probe runs, said so
    assert main(["report", str(out), "--slo", "ttft_p99_s<0.1"]) == 0
    assert "read off the search's probe runs" in text_of((out / "report" / "index.html").read_text())


def test_no_data_runs_are_counted_and_listed(tmp_path: Path) -> None:
    rows = overload_rows()
    for r in rows:
        if r["workload.users"] == 16 and r["gpu.memory_gib"] == 80.0 and r["engine.prefix_caching"] == "off":
            r.update(
                status="no_data",
                error="no measured request: the run ended inside its warm-up",
                ttft_p99_s=None,
                throughput_rps=None,
            )
    page = report.write_report(write_dataset(tmp_path / "d", rows)).read_text()
    text = text_of(page)
    assert "32 runs (30 ok, 0 infeasible, 0 failed, 2 no data)" in text
    failures = page[page.index('id="failures"') : page.index('id="data"')]
    assert "<td>no_data</td>" in failures and "the run ended inside its warm-up" in failures
    assert "1 of 8 cells lack an ok run with or without caching (no data)" in text
    assert "7 cells measured with and without caching" in text


def test_one_run_per_point_draws_the_runs_own_confidence_interval(tmp_path: Path) -> None:
    one_seed = [r for r in slo_rows() if r["seed"] == 0]
    page = report.write_report(write_dataset(tmp_path / "d", one_seed)).read_text()
    assert "Bars: 95% confidence interval within each run (one run per point)" in text_of(page)
    two_seeds = report.write_report(write_dataset(tmp_path / "e", slo_rows())).read_text()
    assert "Bars: 95% confidence interval over seeds" in text_of(two_seeds)


def test_a_speed_up_built_on_an_uncertain_p99_is_never_the_headline(tmp_path: Path) -> None:
    """At 32 users caching looks 4x faster, but its p99s are known only within +-40%: the
    headline quotes the best precise cell (2x) and says one cell was left out; the cell table
    still shows the 4x, each p99 with its interval."""
    rows = []
    for users in (8, 16, 32):
        ci = 0.4 if users == 32 else 0.05
        off_ttft, on_ttft = users / 16, (users / 64 if users == 32 else users / 32)
        for seed in (0, 1):
            rows += [run("off", users, 80.0, seed, off_ttft, 10.0, ttft_p99_s_ci95_run=ci * off_ttft),
                     run("prefix", users, 80.0, seed, on_ttft, 11.0, ttft_p99_s_ci95_run=ci * on_ttft)]
    out = write_dataset(tmp_path / "d", rows)
    text = text_of(report.write_report(out).read_text())
    assert "up to 2.00x (8 concurrent users)" in text and "up to 4.00x" not in text
    assert "(1 cell left out: a p99 known only within more than ±25%, run longer to rank it)" in text
    assert "2 s ±40% 500 ms ±40% 4.00x" in text  # the cell table: p99s with their intervals
    assert "500 ms ±5% 250 ms ±5% 2.00x" in text
