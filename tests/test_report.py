"""sweep.report: the HTML report on hand-made datasets and on a real small sweep."""

from __future__ import annotations

import csv
import re
from html import unescape
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from PIL import Image

from simcore.errors import ConfigError
from sweep import analysis, cli, report

try:  # tests/ is a plain folder (pytest puts it on sys.path) or a package
    from test_analysis import write_dataset
except ImportError:  # pragma: no cover
    from tests.test_analysis import write_dataset

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def images(index: Path) -> list[Path]:
    """Every image the page refers to, checked to exist and to be a valid PNG."""
    refs = re.findall(r'<img src="([^"]+)"', index.read_text())
    paths = [index.parent / r for r in refs]
    for path in paths:
        assert path.is_file(), path
        assert path.read_bytes()[:8] == PNG_MAGIC, path
        with Image.open(path) as img:
            img.verify()
    return paths


def cell(
    model: str, caching: str, users: int, mem: float, seed: int, ttft: float, thr: float, hit: float = 0.5
) -> dict[str, Any]:
    return {
        "model.name": model,
        "engine.prefix_caching": caching,
        "workload.users": users,
        "gpu.memory_gib": mem,
        "seed": seed,
        "ttft_p99_s": ttft,
        "ttft_p50_s": ttft / 2,
        "throughput_rps": thr,
        "output_tokens_per_s": thr * 100,
        "prefill_tokens_computed": 1000,
        "prefix_hit_rate": 0.0 if caching == "off" else hit,
        "kv_capacity_tokens": int(mem * 10_000),
    }


def grid(
    models: tuple[str, ...] = ("Llama-3.1-8B", "Qwen2.5-7B"),
    users: tuple[int, ...] = (4, 16, 64),
    mems: tuple[float, ...] = (40.0, 80.0),
) -> list[dict[str, Any]]:
    """A full grid where caching halves TTFT and adds 20% throughput, except at the most users and
    the most memory, where it gains 2% and 1% (caching stops helping there)."""
    rows = []
    for m in models:
        for u in users:
            for g in mems:
                last = u == users[-1] and g == mems[-1]
                for seed in (0, 1):
                    base_t, base_r = 0.1 * u / g, 10.0 + u
                    rows.append(cell(m, "off", u, g, seed, base_t, base_r))
                    rows.append(
                        cell(
                            m,
                            "prefix",
                            u,
                            g,
                            seed,
                            base_t / (1.02 if last else 2),
                            base_r * (1.01 if last else 1.2),
                        )
                    )
    return rows


@pytest.fixture(scope="module")
def two_d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = grid()
    rows.append(
        {
            "model.name": "Llama-3.1-8B",
            "engine.prefix_caching": "prefix",
            "workload.users": 64,
            "gpu.memory_gib": 80.0,
            "seed": 2,
            "status": "failed",
            "error": "RuntimeError: worker lost <twice>",
        }
    )
    rows += [
        {
            **cell("Qwen2.5-7B", c, u, 16.0, s, 0, 0),
            "status": "infeasible",
            "error": "model weights 15.2 GiB do not fit in 14.4 GiB",
            "ttft_p99_s": None,
            "throughput_rps": None,
            "prefix_hit_rate": None,
            "kv_capacity_tokens": None,
        }
        for c in ("off", "prefix")
        for u in (4, 16, 64)
        for s in (0, 1)
    ]
    return write_dataset(tmp_path_factory.mktemp("two_d") / "sweep", rows, parts=3)


@pytest.fixture(scope="module")
def two_d_html(two_d: Path) -> str:
    """The report of ``two_d``, written once for the tests that only read it."""
    return report.write_report(two_d).read_text()


def test_report_writes_index_pngs_and_summary(two_d: Path) -> None:
    index = report.write_report(two_d)
    assert index == two_d / "report" / "index.html"
    html = index.read_text()
    names = [p.name for p in images(index)]
    # what matters, then per model: heatmaps + TTFT lines
    assert len(names) == 5 and names[0].endswith("what-matters.png")
    assert "Llama-3.1-8B" in html and "Qwen2.5-7B" in html
    with open(two_d / "report" / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    # 2 models x 3 users x 2 caching x 2 memories, + Qwen's 16 GiB row x 3 users x 2 caching
    assert len(summary) == 2 * 3 * 2 * 2 + 6
    assert "ttft_p99_s_mean" in summary[0] and "ttft_p99_s_ci95" in summary[0]
    assert (two_d / "report" / "caching.csv").is_file()


def test_report_lists_failed_and_infeasible_runs_with_reasons(two_d_html: str) -> None:
    html = two_d_html
    failures = html[html.index('id="failures"') : html.index('id="data"')]
    assert "RuntimeError: worker lost &lt;twice&gt;" in failures  # escaped
    assert "model weights 15.2 GiB do not fit in 14.4 GiB" in failures
    assert "1 failed, 12 infeasible run(s)" in failures
    # the 12 infeasible runs (16 GiB x 3 loads x 2 caching modes x 2 seeds) collapse into one row
    assert failures.count("<td>infeasible</td>") == 1
    assert "4, 16, 64" in failures


def test_report_calls_out_cells_where_caching_stops_helping(two_d_html: str) -> None:
    html = two_d_html
    assert html.count('<p class="callout"><b>Caching stops helping</b>') == 2  # once per model
    assert "in 1 of 6 measured cells: 64 concurrent users at 80 GiB" in html
    # the findings count over the same six cells: 5 faster, 5 with more throughput, 1 neither
    assert "TTFT p99: at least 5% faster with caching in 5 of 6 cells without overload; up to 2.00x" in html
    assert "Throughput: at least 5% higher in 5 of 6 cells; up to +20%" in html
    assert ("Caching stops helping (neither 5% faster nor 5% more throughput) in 1 of 6 cells:"
            " 64 concurrent users at 80 GiB.") in html


def test_report_shows_the_spec_and_version(two_d_html: str) -> None:
    html = two_d_html
    assert "kvsweep 0.1.0" in html
    assert "name: test-sweep" in html


def test_report_rewrites_cleanly(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "d", grid(models=("Llama-3.1-8B",), users=(8,), mems=(80.0,)))
    (out / "report").mkdir()
    stale = out / "report" / "fig99-stale.png"
    stale.write_bytes(b"old")
    report.write_report(out, out / "report")
    assert not stale.exists()


def test_one_dimensional_sweep_gives_lines_not_heatmaps(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "d", grid(models=("Llama-3.1-8B",), mems=(80.0,)))
    roles = report.infer_roles(analysis.load(out), analysis.read_info(out))
    assert (roles.x, roles.y, roles.compare, roles.modes) == ("workload.users", None, True, ("prefix",))
    index = report.write_report(out)
    names = [p.name for p in images(index)]
    assert not any("heatmaps" in n for n in names)
    assert sum("lines" in n for n in names) == 2


def test_memory_only_sweep_puts_memory_on_x(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "d", grid(models=("Llama-3.1-8B",), users=(8,), mems=(20.0, 40.0, 80.0)))
    roles = report.infer_roles(analysis.load(out), analysis.read_info(out))
    assert (roles.x, roles.y) == ("gpu.memory_gib", None)
    assert len(images(report.write_report(out))) == 2


def test_single_cell_sweep_gives_tables_only(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "d", grid(models=("Llama-3.1-8B",), users=(8,), mems=(80.0,)))
    html = report.write_report(out).read_text()
    assert images(out / "report" / "index.html") == []
    # the one cell is the grid's last, where caching gains 2% and 1%
    assert "TTFT p99: at least 5% faster with caching in 0 of 1 cells without overload; up to 1.02x" in html
    assert "Throughput: at least 5% higher in 0 of 1 cells; up to +1.0% (the only cell)" in html
    assert "in 1 of 1 cells: the only cell." in html


def test_sweep_without_caching_baseline_shows_absolute_numbers(tmp_path: Path) -> None:
    rows = [r for r in grid(models=("Llama-3.1-8B",)) if r["engine.prefix_caching"] == "prefix"]
    out = write_dataset(tmp_path / "d", rows)
    html = report.write_report(out).read_text()
    assert "does not vary <code>engine.prefix_caching</code>" in html
    assert len(images(out / "report" / "index.html")) == 2
    assert not (out / "report" / "caching.csv").exists()


def test_memory_axis_is_the_gpu_when_gpus_vary(tmp_path: Path) -> None:
    rows = []
    for gpu, mem in (("A100-40GB", 40.0), ("H100-SXM-80GB", 80.0)):
        for r in grid(models=("Llama-3.1-8B",), mems=(mem,)):
            rows.append({**r, "gpu.name": gpu})
    spec = {
        "name": "g",
        "base": {},
        "grid": {
            "gpu": ["A100-40GB", "H100-SXM-80GB"],
            "workload.users": [4, 16, 64],
            "engine.prefix_caching": ["off", "prefix"],
        },
    }
    out = write_dataset(tmp_path / "d", rows, spec=spec)
    roles = report.infer_roles(analysis.load(out), analysis.read_info(out))
    # gpu.memory_gib follows gpu.name, so it is neither the memory axis nor a facet
    assert (roles.x, roles.y, roles.facets) == ("workload.users", "gpu.name", ())


def test_other_axes_fold_into_one_section_per_model(tmp_path: Path) -> None:
    rows = [{**r, "engine.max_num_seqs": n} for n in (64, 256) for r in grid(models=("Llama-3.1-8B",))]
    out = write_dataset(tmp_path / "d", rows, extra_axes={"engine.max_num_seqs": pa.int64()})
    html = unescape(report.write_report(out).read_text())
    section = html[html.index('<h2 id="llama-3-1-8b">') :]
    # each value of the other axis folds away with its own findings and cells
    assert "<summary>max sequences per batch 64: 'prefix' helps in 5 of 6 cells</summary>" in section
    assert "<summary>max sequences per batch 256: 'prefix' helps in 5 of 6 cells</summary>" in section
    assert "Llama-3.1-8B (max sequences per batch 256) on H100-SXM-80GB: caching 'prefix' vs 'off'" in html
    # one figure for the model's every facet value (and the overview's picture), not one per value
    names = [p.name for p in images(out / "report" / "index.html")]
    assert [n for n in names if "facets" in n] == ["fig01-01-llama-3-1-8b-facets.png"]
    assert len(names) == 2


def test_report_without_dataset_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no sweep dataset here"):
        report.write_report(tmp_path)


# ------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def report_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the commands of this module, so the test does not depend on the other command modules."""
    monkeypatch.setattr(cli, "COMMANDS", {k: v for k, v in cli.COMMANDS.items() if k in ("report", "query")})


def test_cli_report_prints_the_index_path(
    two_d: Path, report_cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["report", str(two_d)]) == 0
    assert capsys.readouterr().out.strip() == str((two_d / "report" / "index.html").resolve())


def test_cli_report_missing_dataset_exits_2(
    tmp_path: Path, report_cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "kvsweep report: error:" in err and "missing runs/" in err


# ------------------------------------------------------------------------------------ real sweep


TINY_SPEC = """\
name: tiny
base:
  model: Llama-3.1-8B
  gpu: H100-SXM-80GB
  engine: {max_num_seqs: 16, max_model_len: 4096}   # a 1 GiB KV cache holds one request
  workload:
    kind: chat
    users: 2
    system_prompts: 2
    system_prompt_tokens: 256
    turns: 2
    user_tokens: {kind: constant, value: 32}
    output_tokens: {kind: constant, value: 16}
  run: {num_requests: 12}
grid:
  engine.prefix_caching: ["off", prefix]
  workload.users: [2, 4]
  engine.kv_budget_gib: [1, 4]
seeds: [0]
"""


def test_report_on_a_real_small_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "COMMANDS", {k: v for k, v in cli.COMMANDS.items() if k in ("run", "report")})
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    out = tmp_path / "out"
    assert cli.main(["run", str(spec), "--out", str(out), "--executor", "serial"]) == 0
    assert cli.main(["report", str(out)]) == 0
    index = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert index == (out / "report" / "index.html").resolve()
    html = index.read_text()
    assert "Llama-3.1-8B" in html
    names = [p.name for p in images(index)]
    assert any("heatmaps" in n for n in names) and any("ttft-p99-lines" in n for n in names)
    df = analysis.load(out)
    assert len(df) == 8 and set(df["status"]) == {"ok"}  # real runs, so the pictures hold numbers
    with open(out / "report" / "summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 8


def test_models_come_in_spec_order(tmp_path: Path) -> None:
    rows = grid(models=("Llama-3.1-8B", "Llama-3.2-1B", "Qwen2.5-14B"), users=(8,), mems=(80.0,))
    spec = {"name": "m", "base": {}, "grid": {"model": ["Llama-3.2-1B", "Llama-3.1-8B", "Qwen2.5-14B"]}}
    html = report.write_report(write_dataset(tmp_path / "d", rows, spec=spec)).read_text()
    order = [html.index(f'<h2 id="{slug}">') for slug in ("llama-3-2-1b", "llama-3-1-8b", "qwen2-5-14b")]
    assert order == sorted(order)
