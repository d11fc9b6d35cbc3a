"""The command line as a user meets it: help, one-line argument errors, "did you mean", number
formats, the plan's time estimate, quiet progress, and the hints that name the right option.
Each test runs the real CLI (``sweep.cli.main``, or ``python -m sweep.cli`` where a pipe matters)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sweep.analysis import load_requests
from sweep.cli import main
from sweep.progress import Progress

try:  # tests/ is a plain folder (pytest puts it on sys.path) or a package
    from simhelpers import tiny_sweep
    from test_analysis import write_dataset
except ImportError:  # pragma: no cover
    from tests.simhelpers import tiny_sweep
    from tests.test_analysis import write_dataset

from simcore.errors import ConfigError

Capture = pytest.CaptureFixture[str]
ROOT = Path(__file__).resolve().parents[1]
CHAT = str(ROOT / "configs/runs/chat.yaml")


def one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"kvsweep{' ' + command if command else ''}: error: "), err
    return err.strip()


# ---- kvsweep query ... | head ------------------------------------------------------------------


def test_query_into_a_closed_pipe_prints_no_traceback(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "d", [{"seed": 0}])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sweep.cli",
            "query",
            str(out),
            "SELECT * FROM range(400000)",
            "--format",
            "csv",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().strip() == b"range"  # what `head -1` reads
    proc.stdout.close()  # ... then head exits
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert err == "", err


# ---- did you mean ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "suggestion"),
    [
        ("workload.userz=4", "did you mean workload.users?"),
        ("gpu.memory_gb=40", "did you mean gpu.memory_gib?"),
        ("run.num_request=30", "did you mean run.num_requests?"),
        ("engine.cost.step_overhead=0.01", "did you mean engine.cost.step_overhead_s?"),
        ("model=Llama-3.1-8b", "did you mean Llama-3.1-8B?"),
    ],
)
def test_misspelt_keys_get_a_suggestion(setting: str, suggestion: str, capsys: Capture) -> None:
    assert main(["simulate", CHAT, "--set", setting]) == 2
    assert suggestion in one_line_error(capsys, "simulate")


def test_misspelt_axis_and_spec_key_get_a_suggestion(tmp_path: Path, capsys: Capture) -> None:
    spec = tmp_path / "s.yaml"
    text = tiny_sweep("typo", users="[2, 4]", infeasible=False)
    spec.write_text(text.replace("workload.users:", "workload.user:"))
    assert main(["plan", str(spec), "--probe-runs", "0"]) == 2
    err = one_line_error(capsys, "plan")
    assert "grid axis workload.user = 2" in err and "did you mean workload.users?" in err
    spec.write_text(tiny_sweep("typo", infeasible=False).replace("grid:", "gird:"))
    assert main(["plan", str(spec)]) == 2
    assert "gird = " in (err := one_line_error(capsys, "plan")) and "did you mean grid?" in err


def test_misspelt_command_gets_a_suggestion(capsys: Capture) -> None:
    assert main(["rn", "x.yaml"]) == 2
    err = one_line_error(capsys, "")
    assert "invalid choice: 'rn'" in err and "did you mean run?" in err


# ---- argument errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "command", "says"),
    [
        (["run"], "run", "the following arguments are required: spec"),
        (["run", "x.yaml", "--max-runs", "-1"], "run", "argument --max-runs: -1 must be at least 1"),
        (["run", "x.yaml", "--executor", "gpu"], "run", "invalid choice: 'gpu'"),
        (["query", "d", "SELECT 1", "--bogus"], "", "unrecognized arguments: --bogus"),
        ([], "", "give a command: simulate, plan, run, report, query, replay"),
    ],
)
def test_argument_errors_are_one_line(
    argv: list[str], command: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = one_line_error(capsys, command)
    assert says in err and err.endswith("--help)")


def test_top_level_help_is_written_for_users(capsys: Capture) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "kvsweep simulates a vLLM-style LLM server" in text
    for command in ("simulate", "plan", "run", "report", "query", "replay"):
        assert re.search(rf"^\s+{command}\s+\S", text, re.M), command
    assert "examples:" in text and "kvsweep run configs/sweeps/quickstart.yaml" in text
    assert "``" not in text  # no docstring markup


# ---- --set values ------------------------------------------------------------------------------


def test_set_takes_exponent_notation_for_integers(tmp_path: Path, capsys: Capture) -> None:
    out = tmp_path / "r.json"
    assert main(["simulate", CHAT, "--set", "run.num_requests=1.2e2", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["config"]["run"]["num_requests"] == 120 and doc["summary"]["num_completed"] == 120


def test_prefix_caching_on_is_refused_with_the_valid_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", CHAT, "--set", "engine.prefix_caching=on"]) == 2
    err = one_line_error(capsys, "simulate")
    assert "engine.prefix_caching = 'on'" in err and "'off', 'session', 'prefix'" in err
    # in a YAML file a bare `on` is YAML's true: refused the same way; a bare `off` still means off
    raw = yaml.safe_load(Path(CHAT).read_text())
    raw["engine"]["prefix_caching"] = True
    cfg = tmp_path / "on.yaml"
    cfg.write_text(yaml.safe_dump(raw).replace("prefix_caching: true", "prefix_caching: on"))
    assert main(["simulate", str(cfg)]) == 2
    assert "'off', 'session', 'prefix'" in one_line_error(capsys, "simulate")
    cfg.write_text(
        cfg.read_text()
        .replace("prefix_caching: on", "prefix_caching: off")
        .replace("num_requests: 20000", "num_requests: 20")
    )
    assert main(["simulate", str(cfg)]) == 0
    assert "prefix caching off" in capsys.readouterr().out


# ---- simulate's numbers ------------------------------------------------------------------------


def test_simulate_prints_numbers_alike(capsys: Capture) -> None:
    assert main(["simulate", CHAT, "--set", "run.num_requests=300"]) == 0
    lines = capsys.readouterr().out.splitlines()
    pattern = re.compile(r"^  (\S.*?)\s{2,}(\S+)(?: \+- (\S+))?$")  # label, figure, the run's 95% CI
    found = [m for m in map(pattern.match, lines) if m]
    rows = {m.group(1): m.group(2) for m in found}
    cis = {m.group(1): m.group(3) for m in found if m.group(3)}
    counts = (
        "submitted",
        "completed",
        "prefill tokens total",
        "prefill tokens computed",
        "KV capacity (tokens)",
        "engine steps",
        "events",
    )
    for label in counts:
        assert re.fullmatch(r"\d{1,3}(,\d{3})*", rows[label]), (label, rows[label])
    assert rows["submitted"] == "300" and int(rows["prefill tokens total"].replace(",", "")) > 1000
    for label in ("TTFT mean", "TTFT p99", "TPOT p50", "end-to-end p99", "queueing p90"):  # ms, one decimal
        assert re.fullmatch(r"\d{1,3}(,\d{3})*\.\d", rows[label]), (label, rows[label])
    shares = ("hit rate (tokens)", "requests with a hit", "prefill reduction", "KV peak use", "busy fraction")
    for label in shares:
        assert re.fullmatch(r"\d{1,3}\.\d%", rows[label]), (label, rows[label])
    for label in ("requests/s", "output tokens/s", "mean batch size"):
        assert re.fullmatch(r"\d{1,3}(,\d{3})*\.\d\d", rows[label]), (label, rows[label])
    assert not any("e+" in v or "e-" in v for v in rows.values())
    assert re.fullmatch(r"[\d,]+\.\d", cis["TTFT mean"]) and re.fullmatch(r"[\d,]+\.\d\d", cis["requests/s"])


# ---- plan --------------------------------------------------------------------------------------


def test_plan_estimates_the_run_time_from_probe_runs(tmp_path: Path, capsys: Capture) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(tiny_sweep("est", infeasible=False))
    assert main(["plan", str(spec), "--probe-runs", "2", "--num-cpus", "4"]) == 0
    out = capsys.readouterr().out
    found = re.search(
        r"estimate: 2 probe run\(s\) took \S+ s \(mean (\S+) s\): 12 runs ~ \d+s of CPU time,"
        r" ~ \d+s on 4 CPUs",
        out,
    )
    assert found, out
    assert 0 < float(found.group(1)) < 30
    assert main(["plan", str(spec), "--probe-runs", "0"]) == 0
    assert "estimate:" not in capsys.readouterr().out


def test_plan_out_warns_when_the_folder_holds_another_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(tiny_sweep("alpha", users="[2]", infeasible=False).replace("seeds: 2", "seeds: 1"))
    second.write_text(tiny_sweep("beta", users="[2]", infeasible=False))
    out = tmp_path / "out"
    assert main(["run", str(first), "--out", str(out), "--executor", "serial", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["plan", str(second), "--out", str(out), "--probe-runs", "0"]) == 0
    captured = capsys.readouterr()
    assert "kvsweep plan: warning: --out" in captured.err
    assert "holds sweep 'alpha', not 'beta'" in captured.err
    assert "present" not in captured.out  # no counts from another sweep's folder
    # the same spec changed: warned as `run` refuses it
    first.write_text(first.read_text().replace("seeds: 1", "seeds: 2"))
    assert main(["plan", str(first), "--out", str(out), "--probe-runs", "0"]) == 0
    assert "from a different spec" in capsys.readouterr().err
    assert main(["run", str(first), "--out", str(out), "--executor", "serial"]) == 2
    assert "from a different spec" in capsys.readouterr().err


# ---- progress ----------------------------------------------------------------------------------


def test_no_progress_prints_nothing() -> None:
    sink = io.StringIO()
    progress = Progress(3, "quiet", bar=False, interval_s=0.0, file=sink)
    for status in ("ok", "ok", "failed"):
        progress.update(status)
    progress.close()
    assert sink.getvalue() == ""
    assert progress.status_text() == "ok 2, infeasible 0, failed 1"
    chatty = io.StringIO()
    loud = Progress(1, "log", bar=None, interval_s=0.0, file=chatty)  # not a terminal: lines
    loud.update("ok")
    assert "log: 1/1 runs (100%" in chatty.getvalue()


def test_run_with_no_progress_prints_only_its_summary(tmp_path: Path, capsys: Capture) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(tiny_sweep("quiet", users="[2]", infeasible=False))
    argv = ["run", str(spec), "--out", str(tmp_path / "o"), "--executor", "serial", "--no-progress"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert all(line.startswith("kvsweep run: ") for line in err.splitlines()), err
    assert "runs/s" not in err and "it/s" not in err


# ---- replay and hints --------------------------------------------------------------------------


def test_replay_of_a_yaml_file_says_it_is_not_a_trace(capsys: Capture) -> None:
    assert main(["replay", CHAT]) == 2
    err = one_line_error(capsys, "replay")
    assert "is a YAML file, not a request trace" in err and "kvsweep simulate" in err
    assert main(["replay", str(ROOT / "configs/sweeps/quickstart.yaml")]) == 2
    assert "kvsweep run" in one_line_error(capsys, "replay")


def test_missing_requests_hint_names_save_requests(tmp_path: Path, capsys: Capture) -> None:
    out = write_dataset(tmp_path / "d", [{"seed": 0}])
    with pytest.raises(ConfigError, match="--save-requests"):
        load_requests(out)
    assert main(["query", str(out), "SELECT count(*) FROM requests"]) == 2
    assert "run it again with --save-requests" in one_line_error(capsys, "query")
