"""The report's section for sweeps over routers, replicas and CPU tiers, on a real small sweep."""

from __future__ import annotations

import csv
import html as html_lib
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from sweep import cli
from sweep.report.cluster import _line_name, cluster_axes

SPEC = """\
name: tiny-cluster
base:
  model: Llama-3.2-1B
  gpu: A100-40GB
  engine: {kv_budget_gib: 0.5, max_model_len: 4096}
  workload: {kind: chat, users: 8, turns: 3, system_prompts: 8, system_prompt_tokens: 1000}
  run: {num_requests: 200, warmup_s: 0}
grid:
  cluster.replicas: [1, 2]
  cluster.router: [round_robin, prefix_aware]
  engine.cpu_offload_gib: [0, 1]
  workload.users: [8, 16]
seeds: 1
"""


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cluster-report")
    spec = tmp / "tiny.yaml"
    spec.write_text(SPEC)
    out = tmp / "out"
    assert cli.main(["run", str(spec), "--out", str(out), "--executor", "serial", "--no-progress"]) == 0
    assert cli.main(["report", str(out), "--slo", "ttft_p99_s<1"]) == 0
    return out / "report"


def rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_the_section_its_figures_and_its_table(report_dir: Path) -> None:
    page = (report_dir / "index.html").read_text()
    assert '<h2 id="routers-and-tiers">Routers and CPU tiers</h2>' in page
    assert 'href="#routers-and-tiers"' in page
    for metric in ("prefix-hit-rate", "ttft-p99"):
        (fig,) = report_dir.glob(f"fig*-llama-3-2-1b-routers-{metric}.png")
        assert fig.name in page
        with Image.open(fig) as im:
            assert im.size[0] > 1000  # four panels, three to a row
    cells = rows(report_dir / "cluster.csv")
    assert len(cells) == 16  # replicas x router x CPU tier x users, one seed
    assert {"cluster.router", "cluster.replicas", "engine.cpu_offload_gib", "prefix_hit_rate_mean",
            "hit_rate_cpu_mean", "request_imbalance_mean"} <= set(cells[0])
    # no CPU tier: nothing is found in CPU memory; with one, something is
    assert all(float(c["hit_rate_cpu_mean"]) == 0 for c in cells if float(c["engine.cpu_offload_gib"]) == 0)
    assert any(float(c["hit_rate_cpu_mean"]) > 0 for c in cells if float(c["engine.cpu_offload_gib"]) == 1)


def test_findings_state_the_table_figures(report_dir: Path) -> None:
    page = html_lib.unescape(re.sub(r"<[^>]+>", " ", (report_dir / "index.html").read_text()))
    cells = rows(report_dir / "cluster.csv")

    def rate(replicas: int, router: str, cpu: int, users: int = 16) -> str:
        (row,) = [c for c in cells if (int(c["cluster.replicas"]), c["cluster.router"],
                                         float(c["engine.cpu_offload_gib"]), int(c["workload.users"]))
                  == (replicas, router, cpu, users)]
        return f"{float(row['prefix_hit_rate_mean']) * 100:.0f}%"

    ranked = sorted(("round_robin", "prefix_aware"), key=lambda r: -float(rate(2, r, 0)[:-1]))
    expected = ", ".join(f"{r} {rate(2, r, 0)}" for r in ranked)
    assert f"2 replicas, no CPU tier at 16 concurrent users: hit rate by router {expected}." in page
    # one replica has no router: one sentence about its CPU tier, not one per router
    assert page.count("1 replica: a CPU tier of 1 GiB") == 1
    assert (f"1 replica: a CPU tier of 1 GiB at 16 concurrent users takes the hit rate from "
            f"{rate(1, 'round_robin', 0)} to {rate(1, 'round_robin', 1)}") in page


def test_capacity_by_router_at_the_slo(report_dir: Path) -> None:
    page = (report_dir / "index.html").read_text()
    assert "capacity at ttft_p99_s&lt;1 by router" in page


def test_only_cluster_sweeps_get_the_section() -> None:
    assert cluster_axes(["workload.users", "engine.prefix_caching"]) == []
    assert cluster_axes(["engine.cpu_offload_gib", "workload.users"]) == ["engine.cpu_offload_gib"]


WEIGHTS_SPEC = """\
name: tiny-weights
base:
  model: Llama-3.2-1B
  gpu: A100-40GB
  engine: {kv_budget_gib: 0.5, max_model_len: 4096, cpu_offload_gib: 1}
  workload: {kind: chat, users: 8, turns: 3, system_prompts: 8, system_prompt_tokens: 1000}
  run: {num_requests: 200, warmup_s: 0}
  cluster: {replicas: 2}
grid:
  cluster.router: [round_robin, prefix_aware]
  cluster.cpu_hit_weight: [0, 1]
  workload.users: [8, 16]
seeds: 1
"""


def test_a_fixed_cpu_tier_and_another_varied_axis(tmp_path: Path) -> None:
    """The CPU tier and the replica count fixed in the base (no panels by them), a router weight
    varied: the section is drawn, with a line and a finding per weight, and capacity per GPU
    counts both replicas."""
    spec = tmp_path / "w.yaml"
    spec.write_text(WEIGHTS_SPEC)
    out = tmp_path / "out"
    assert cli.main(["run", str(spec), "--out", str(out), "--executor", "serial", "--no-progress"]) == 0
    assert cli.main(["report", str(out), "--slo", "ttft_p99_s<10"]) == 0
    page = html_lib.unescape(re.sub(r"<[^>]+>", " ", (out / "report" / "index.html").read_text()))
    cells = rows(out / "report" / "cluster.csv")
    assert len(cells) == 8 and "cluster.cpu_hit_weight" in cells[0]
    for weight in ("0", "1"):
        where = f"all runs, router weight of CPU hits {weight} at 16 concurrent users"
        assert f"{where}: hit rate by router" in page
    overview = rows(out / "report" / "overview.csv")
    assert {float(r["users_per_gpu"]) for r in overview} == {8.0}  # 16 users meet it, on 2 GPUs


def test_a_line_is_named_after_its_router_even_when_the_sweep_fixes_it() -> None:
    fixed = pd.DataFrame({"cluster.replicas": [2, 2], "cluster.router": ["prefix_aware"] * 2})
    assert _line_name(fixed, None, None) == "prefix_aware"  # replicas and router both fixed
    assert _line_name(fixed, 4, "round_robin") == "round_robin"
    assert _line_name(fixed, 1, "round_robin") == "single engine (no router)"
    assert _line_name(pd.DataFrame({"cluster.replicas": [1, 1]}), None, None) == "single engine (no router)"
