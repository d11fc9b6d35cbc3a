"""`kvsweep simulate`: the summary, the JSON, and one-line errors (exit 2) for bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sweep.cli import main

ROOT = Path(__file__).resolve().parents[1]
CHAT = str(ROOT / "configs/runs/chat.yaml")


def test_simulate_prints_summary_and_writes_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["simulate", CHAT, "--set", "run.num_requests=200", "--set", "engine.prefix_caching=off",
               "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Llama-3.1-8B on H100-SXM-80GB" in text and "prefix caching off" in text
    assert "cost profile h100-vllm" in text  # the calibrated profile the run used
    doc = json.loads(out.read_text())
    assert doc["status"] == "ok" and doc["summary"]["num_completed"] == 200
    assert doc["summary"]["prefix_hit_rate"] == 0


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (["model=Llama-9"], r"model = 'Llama-9': unknown model 'Llama-9': use one of"),
        (["gpu.memory_gib=-4"], r"gpu\.memory_gib = -4: must be > 0 \(raise it\)"),
        (["engine.prefix_cachin=off"],
         r"engine\.prefix_cachin = .*not permitted \(did you mean engine\.prefix_caching\?"),
        (["engine.bogus_knob=1"],
         r"engine\.bogus_knob = 1: .*not permitted \(remove it or check its spelling\)"),
        (["workload.user_tokens=0"], r"workload\.user_tokens = 0: .*must be positive"),
        (["workload.think_time_s=.inf"], r"workload\.think_time_s\.value = inf: .*finite"),
        (["run.seed=-3"], r"run\.seed = -3"),
        (["workload.users=1000000000000"], r"workload\.users = 1000000000000: must be <= 1000000 \(lower"),
        (["workload={kind: trace, path: /no/such/t.jsonl}"], r"trace path = '/no/such/t.jsonl': no such"),
        (["nonsense"], r"--set 'nonsense': expected PATH=VALUE"),
    ],
)
def test_bad_input_is_one_line_exit_2(overrides, pattern, capsys):
    argv = ["simulate", CHAT]
    for item in overrides:
        argv += ["--set", item]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("kvsweep simulate: error:")
    assert re.search(pattern, err), err


def test_malformed_yaml_and_bad_trace_bytes(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [a\n")
    assert main(["simulate", str(bad)]) == 2
    assert "malformed YAML at line 2" in capsys.readouterr().err
    trace = tmp_path / "t.jsonl"
    trace.write_bytes(b'{"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [0]}\n\xff\n')
    assert main(["simulate", CHAT, "--set", f"workload={{kind: trace, path: {trace}}}"]) == 2
    assert f"{trace}:2: byte 0xff is not UTF-8" in capsys.readouterr().err


def test_simulate_shows_the_steady_verdict_and_a_no_data_run(capsys):
    assert main(["simulate", CHAT, "--set", "run.num_requests=300", "--set", "run.slo={ttft_s: 1}"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"arrivals stopped by +num_requests", text)
    assert re.search(r"warm-up rule +mser5", text)
    too_few = r"steady +no\n +\(too few measured requests \(\d+; a verdict needs 320: 5 per user\)"
    assert re.search(too_few, text)
    assert re.search(r"TTFT mean +[\d,]+\.\d \+- [\d,]+\.\d\n", text)  # ms, with the run's 95% CI
    assert re.search(r"requests/s +[\d,]+\.\d\d \+- [\d,]+\.\d\d\n", text)
    assert re.search(r"SLO\n  attainment +100\.0%\n", text)
    assert main(["simulate", CHAT, "--set", "run.duration_s=5", "--set", "run.warmup_s=10"]) == 1
    text = capsys.readouterr().out
    assert "status: no_data: no request arrived in the measured window: warm-up ends at 10 s" in text
    assert re.search(r"submitted +\d+", text)  # what the run did is still shown


def test_simulate_shows_cluster_and_cpu_tier_figures_only_when_there_are_any(capsys):
    assert main(["simulate", CHAT, "--set", "run.num_requests=300"]) == 0
    alone = capsys.readouterr().out
    assert "\ncluster\n" not in alone and "\nCPU tier\n" not in alone
    assert main(["simulate", CHAT, "--set", "run.num_requests=300", "--set", "cluster.replicas=2",
                 "--set", "cluster.router=session_affinity", "--set", "engine.cpu_offload_gib=4"]) == 0
    text = capsys.readouterr().out
    assert "2 replicas behind session_affinity" in text
    assert re.search(r"\ncluster\n  replicas +2\n  requests max/mean +\d\.\d\d\n", text)
    assert re.search(r"\nCPU tier\n  from GPU memory \(tokens\) +\d+\.\d%\n", text)
