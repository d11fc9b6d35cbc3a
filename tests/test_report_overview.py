"""The report of a big grid: the overview table (its numbers are summarize()'s), what moves the
headline (exact variance shares), findings per model, explore.html, pages with no network, the
models drawn in worker processes, and the quickstart's grid end to end."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from sweep import analysis, cli, report
from sweep.report import workers
from sweep.report.importance import decompose
from sweep.report.overview import Headline

try:  # tests/ is a plain folder (pytest puts it on sys.path) or a package
    from test_analysis import write_dataset
    from test_report_truth import slo_rows, text_of
except ImportError:  # pragma: no cover
    from tests.test_analysis import write_dataset
    from tests.test_report_truth import slo_rows, text_of

ROOT = Path(__file__).resolve().parent.parent
AXES = {"engine.gpu_memory_utilization": pa.float64(), "workload.system_prompts": pa.int64()}
MODELS = {"Llama-3.1-8B": 1, "Qwen2.5-32B": 2}  # model -> tensor-parallel GPUs


def big_rows() -> list[dict[str, Any]]:
    """2 models x 2 GPUs x 2 memory shares x 2 system-prompt counts x users 4/8/16 x off/prefix x
    2 seeds. Off is overloaded at 16 users, prefix never; seeds differ so means are means."""
    rows = []
    for model, tp in MODELS.items():
        for g, gpu in enumerate(("A100-80GB", "H100-SXM-80GB")):
            for util in (0.5, 0.9):
                for prompts in (1, 16):
                    for users in (4, 8, 16):
                        for caching in ("off", "prefix"):
                            for seed in (0, 1):
                                over = caching == "off" and users == 16
                                speed = (1 + g) * (2 if caching == "prefix" else 1) * util / tp
                                rows.append({
                                    "model.name": model,
                                    "gpu.name": gpu,
                                    "engine.tensor_parallel": tp,
                                    "engine.prefix_caching": caching,
                                    "engine.gpu_memory_utilization": util,
                                    "workload.system_prompts": prompts,
                                    "workload.users": users,
                                    "seed": seed,
                                    "throughput_rps": users * speed + seed * 0.5 + prompts / 100,
                                    "ttft_p99_s": (5.0 if over else 0.1 * users / speed) + seed * 0.01,
                                    "prefix_hit_rate": 0.0 if caching == "off" else 0.5,
                                    "steady": not over,
                                    "steady_reason": "overloaded: queue grows 1 req/s" if over else "",
                                    "measured_s": 600.0,
                                })
    return rows


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = write_dataset(tmp_path_factory.mktemp("big") / "d", big_rows(), extra_axes=AXES)
    return out, report.write_report(out).read_text()


def test_overview_numbers_equal_summarize(big: tuple[Path, str]) -> None:
    out, page = big
    df = analysis.load(out)
    keys = analysis.axes(df)
    cells = analysis.summarize(df, keys, ["throughput_rps", "ttft_p99_s"]).set_index(keys)
    table = pd.read_csv(out / "report" / "overview.csv")
    assert len(table) == 2 * 2 * 2  # model x GPU x caching, at the reference
    for _, row in table.iterrows():
        # the reference: the most memory (0.9); the middle system-prompt count (of 1 and 16: 1)
        load = 8 if row["engine.prefix_caching"] == "off" else 16  # the highest steady load
        assert row["load"] == load
        at = {
            "model.name": row["model.name"], "gpu.name": row["gpu.name"],
            "engine.tensor_parallel": row["engine.tensor_parallel"],
            "engine.prefix_caching": row["engine.prefix_caching"], "workload.users": load,
            "engine.gpu_memory_utilization": 0.9, "workload.system_prompts": 1,
        }
        cell = cells.loc[tuple(at[k] for k in keys)]
        tp = MODELS[row["model.name"]]
        assert row["requests_per_s_per_gpu"] == pytest.approx(cell["throughput_rps_mean"] / tp, rel=1e-12)
        assert row["ttft_p99_s"] == pytest.approx(cell["ttft_p99_s_mean"], rel=1e-12)
    # the page shows the same figures, sortable by their exact values
    table_html = page[page.index('<table class="overview sortable">') : page.index("</table>")]
    for value in table["requests_per_s_per_gpu"]:
        assert f'data-v="{value:.6g}"' in table_html
    llama_a100_off = table[
        (table["model.name"] == "Llama-3.1-8B") & (table["gpu.name"] == "A100-80GB")
        & (table["engine.prefix_caching"] == "off")
    ].iloc[0]
    # 8 users x (1 x 1 x 0.9) + mean seed offset 0.25 + 1/100 = 7.46 requests/s per GPU
    assert llama_a100_off["requests_per_s_per_gpu"] == pytest.approx(7.46)
    assert "<b>7.46</b>" in table_html and "at 8 users" in table_html
    assert "At GPU memory utilisation 0.9 and system prompts 1" in text_of(page)
    assert "SORT_SCRIPT" not in page and "th[data-col]" in page  # the inline sort script


def test_overview_states_capacity_per_gpu_at_the_slo(tmp_path: Path) -> None:
    # slo_rows: tensor parallel 2; off meets TTFT p99 < 1 s up to 16 users, prefix up to 32
    out = write_dataset(tmp_path / "d", slo_rows())
    page = report.write_report(out, slo="ttft_p99_s<1").read_text()
    table = pd.read_csv(out / "report" / "overview.csv").set_index("engine.prefix_caching")
    assert table["users_per_gpu"].to_dict() == {"off": 8.0, "prefix": 16.0}
    text = text_of(page)
    assert "Overview: most concurrent users per GPU meeting TTFT p99 < 1 s" in text
    row = re.search(r"<tbody>(.*?)</tbody>", page, flags=re.S).group(1)
    assert "<b>8</b>" in row and "<b>16</b>" in row and ">2.00x</td>" in row
    # the model's first sentence repeats it, naming where it comes from
    assert "H100-SXM-80GB: 8 without caching, 16 with prefix (2.00x) (overview table)." in text


@pytest.mark.parametrize(("replicas", "per_gpu"),
                         [(1, {"off": 8.0, "prefix": 16.0}), (2, {"off": 4.0, "prefix": 8.0})])
def test_capacity_per_gpu_counts_every_replica(
        tmp_path: Path, replicas: int, per_gpu: dict[str, float]) -> None:
    # slo_rows at tensor parallel 2 on `replicas` replicas (the same in every run, so no axis):
    # 16 and 32 users meet the SLO, over 2 x replicas GPUs
    rows = [{**r, "cluster.replicas": replicas} for r in slo_rows()]
    out = write_dataset(tmp_path / "d", rows)
    report.write_report(out, slo="ttft_p99_s<1")
    table = pd.read_csv(out / "report" / "overview.csv").set_index("engine.prefix_caching")
    assert table["users_per_gpu"].to_dict() == per_gpu


def test_page_and_explorer_load_with_no_network(big: tuple[Path, str]) -> None:
    out, page = big
    fetched = re.compile(r"""\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)
    assert not fetched.search(page) and "<script src" not in page
    assert not re.search(r"@import|url\(\s*['\"]?https?:", page)
    explore = (out / "report" / "explore.html").read_text()
    assert '<a href="explore.html">' in page
    assert "<script src" not in explore  # the library is inlined, not fetched...
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", explore, flags=re.S)
    assert any("Plotly" in s and len(s) > 1_000_000 for s in scripts)  # ...here, whole
    outside = re.sub(r"<script[^>]*>.*?</script>", "", explore, flags=re.S)
    assert not fetched.search(outside)
    # one line per ok run, one axis per varied setting and per outcome
    plot = next(s for s in scripts if "Plotly.newPlot" in s).replace("\\u002f", "/")
    for name in ("model", "GPU", "caching", "concurrent users", "GPU memory utilisation", "system prompts",
                 "TTFT p99 (s, log)", "throughput per GPU (req/s)"):
        assert f'"label":"{name}"' in plot
    assert "192 ok runs" in explore


def test_axes_ranked_by_exact_variance_shares() -> None:
    # log2 value = 2 [model m2] + 1 [system prompts 16 and caching prefix], over the full 2x2x2 grid:
    # Var = 1 + 3/16; model's main effect 1, system prompts' and caching's 1/16 each; the last 1/16
    # is their interaction
    rows = [
        {"model.name": m, "workload.system_prompts": p, "engine.prefix_caching": c,
         "value": 2.0 ** (2 * (m == "m2") + (p == 16 and c == "prefix")), "bound": "="}
        for m in ("m1", "m2") for p in (1, 16) for c in ("off", "prefix")
    ]
    hl = Headline(pd.DataFrame(rows), ["model.name"], ["workload.system_prompts"], {}, "the thing", "users",
                  "workload.users")
    imp = decompose(hl)
    assert imp is not None
    total = 1 + 3 / 16
    assert list(imp.shares) == ["model.name", "workload.system_prompts", "engine.prefix_caching"]
    assert imp.shares["model.name"] == pytest.approx(1 / total)
    assert imp.shares["workload.system_prompts"] == pytest.approx((1 / 16) / total)
    assert imp.interactions == pytest.approx((1 / 16) / total)
    top = "Model moves it most (84% of the variance): from 1.19 users (m1) to 4.76 users (m2)"
    assert imp.sentences[0].startswith(top)
    assert ("Changing system prompts matters only with caching prefix (up to 2.00x between its values there;"
            " under 10% with no caching).") in imp.sentences


def test_findings_per_model_are_a_handful_the_rest_folds(big: tuple[Path, str]) -> None:
    page = big[1]
    start = page.index('<section id="findings"')
    section = page[start : page.index("</section>", start)]
    for model in MODELS:
        start = section.index(f"{model}</a></h3>")
        sentences = re.findall(r"<li>(.*?)</li>", section[start : section.index("<details>", start)])
        assert 2 <= len(sentences) <= 5
        assert sentences[0].endswith("(overview table).")
        assert all(re.search(r"cells|overview table", s) for s in sentences)  # each names its evidence
        fold = section[section.index("<details>", start) : section.index("</details>", start)]
        assert f"Every finding for {model}" in fold and fold.count("<h4>") == 4  # 2 GPUs x 2 prompt counts
    # off is overloaded at 16 users and prefix is not: said once per model, with where
    ends = "'prefix' ends the overload in 8 cells, most of them (8) at 16 users"
    assert html.unescape(section).count(ends) == 2


def test_models_drawn_in_workers_give_the_same_page(
    big: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, serial = big
    monkeypatch.setattr(workers, "PARALLEL_RUNS", 0)  # 192 runs: draw them in workers all the same
    if workers.cpus() < 2:
        pytest.skip("one CPU: the report draws in this process")
    parallel = report.write_report(out, tmp_path / "r", jobs=2)
    assert parallel.read_text() == serial
    assert sorted(p.name for p in parallel.parent.glob("fig*.png")) == sorted(
        p.name for p in (out / "report").glob("fig*.png")
    )


def test_the_quickstart_grid_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """configs/sweeps/quickstart.yaml with short runs (40 requests, not until steady)."""
    monkeypatch.setattr(cli, "COMMANDS", {k: v for k, v in cli.COMMANDS.items() if k in ("run", "report")})
    spec = yaml.safe_load((ROOT / "configs/sweeps/quickstart.yaml").read_text())
    spec["base"]["run"] = {"num_requests": 40}
    path = tmp_path / "quick.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert cli.main(["run", str(path), "--out", str(out), "--executor", "serial", "--no-progress"]) == 0
    assert cli.main(["report", str(out), "--slo", "ttft_p99_s<1"]) == 0
    index = Path(capsys.readouterr().out.strip().splitlines()[-1])
    page = index.read_text()
    table = pd.read_csv(index.parent / "overview.csv")
    assert set(table["model.name"]) == {"Llama-3.2-1B", "Llama-3.1-8B", "Qwen2.5-14B"}
    assert set(table["engine.prefix_caching"]) == {"off", "prefix"}
    assert np.isfinite(table["users_per_gpu"]).any()
    assert "At GPU memory 80 GiB" in text_of(page)  # the most memory
    assert (index.parent / "explore.html").is_file()
    for model in ("Llama-3.2-1B", "Llama-3.1-8B", "Qwen2.5-14B"):
        assert f'<h2 id="{model.lower().replace(".", "-")}">' in page


def test_an_axis_that_saturates_is_said_to_matter_little_above_its_knee() -> None:
    # users per GPU: 10, 20, 20.5 at memory shares 0.5, 0.7, 0.9; four times that for the other model
    rows = [
        {"model.name": m, "engine.gpu_memory_utilization": u, "value": k * v, "bound": "="}
        for m, k in (("m1", 1), ("m2", 4)) for u, v in ((0.5, 10.0), (0.7, 20.0), (0.9, 20.5))
    ]
    hl = Headline(pd.DataFrame(rows), ["model.name"], ["engine.gpu_memory_utilization"], {}, "the thing",
                  "users", "workload.users")
    imp = decompose(hl)
    assert imp is not None and list(imp.shares) == ["model.name", "engine.gpu_memory_utilization"]
    assert ("Raising GPU memory utilisation above 0.7 changes it little: 40 users there, 41 users at 0.9"
            " (against 20 users at 0.5).") in imp.sentences
