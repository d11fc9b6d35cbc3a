"""Bad input never gives a traceback: one line on stderr naming the field or line, exit code 2,
nothing written. Valid sweep specs, run configs and traces are mutated by hypothesis (wrong
types, unknown keys, negative and huge numbers, empty grids, bad names, non-UTF-8 bytes, broken
YAML) and fed to the real command line, ``sweep.cli.main``; a few cases run ``kvsweep`` itself.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweep.cli import main as kvsweep

EXAMPLES = int(os.environ.get("KVSWEEP_EXAMPLES", "60"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

BASE: dict[str, Any] = {
    "model": "Llama-3.2-1B",
    "gpu": "A100-40GB",
    "workload": {"kind": "chat", "users": 4, "turns": 2},
    "run": {"num_requests": 20},
}
SPEC: dict[str, Any] = {
    "name": "bad",
    "base": BASE,
    # Axes that no mutation of the base touches: an axis would hide a bad base value.
    "grid": {"engine.kv_budget_gib": [1, 2], "engine.max_num_batched_tokens": [4096, 8192]},
    "seeds": 2,
}

# Where a mutation may land: (path in the document, what kind of value lives there). Paths into
# the base are relative to the run config (a run YAML, or the spec's `base:`).
INT_FIELDS = [("workload", "users"), ("run", "num_requests"), ("engine", "block_size"),
              ("engine", "max_num_seqs"), ("workload", "system_prompts")]
FLOAT_FIELDS = [("gpu", "memory_gib"), ("engine", "gpu_memory_utilization"), ("run", "warmup_s")]
NUMBER_FIELDS = INT_FIELDS + FLOAT_FIELDS
NAME_FIELDS = [("model",), ("gpu",), ("engine", "prefix_caching"), ("workload", "kind")]
MAPPINGS = [(), ("workload",), ("run",), ("engine",)]

WRONG_TYPES = st.sampled_from(["many", "4 users", [1, 2], {"x": 1}, "", "2020-01-01x"])
NOT_AN_INT = st.one_of(WRONG_TYPES, st.sampled_from([2.5, None]))
NEGATIVE = st.one_of(st.integers(-10**9, -1), st.floats(-1e9, -1e-6))
# Beyond what a dataset column (int64) or a simulation (finite floats) takes.
HUGE_FLOAT = st.sampled_from([float("inf"), -float("inf")])
HUGE_INT = st.integers(2**63, 10**40)
HUGE = st.one_of(HUGE_INT, HUGE_FLOAT)
BAD_NAMES = st.sampled_from(["Llama-9000-XL", "NoSuchGPU", "sometimes", "", "llama-3.2-1b", "A100"])
UNKNOWN = st.sampled_from(["bogus_key", "userz", "num_request", "Model"])
NOT_UTF8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80abc", b"\xfe\xfe"])


def _get(doc: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node = doc
    for key in path:
        node = node.setdefault(key, {}) if isinstance(node.get(key, {}), dict) else {}
    return node


def _put(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    parent = doc
    for key in path[:-1]:
        child = parent.get(key)
        if isinstance(child, str):  # a catalog name: refine it
            child = {"name": child}
        elif not isinstance(child, dict):
            child = {}
        parent[key] = child
        parent = child
    parent[path[-1]] = value


@st.composite
def run_mutation(draw: st.DrawFn, *, huge: bool = True) -> tuple[dict[str, Any], set[str]]:
    """A run config made invalid in one to three ways, and the names an error may cite."""
    doc = copy.deepcopy(BASE)
    names: set[str] = set()
    kinds = ["wrong_type", "unknown", "negative", "bad_name"] + (["huge"] if huge else [])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(kinds))
        if kind == "unknown":
            where, key = draw(st.sampled_from(MAPPINGS)), draw(UNKNOWN)
            _get(doc, where)[key] = draw(st.integers(0, 5))
            names.add(key)
            continue
        fields = NAME_FIELDS if kind == "bad_name" else NUMBER_FIELDS + (NAME_FIELDS if kind == "wrong_type"
                                                                         else [])
        path = draw(st.sampled_from(fields))
        wrong = NOT_AN_INT if path in INT_FIELDS else WRONG_TYPES
        if path == ("run", "num_requests"):  # null is no limit (the run stops when steady)
            wrong = st.one_of(WRONG_TYPES, st.just(2.5))
        too_big = HUGE if path in INT_FIELDS else HUGE_FLOAT
        value: st.SearchStrategy[Any] = {"wrong_type": wrong, "negative": NEGATIVE, "huge": too_big,
                                         "bad_name": BAD_NAMES}[kind]
        _put(doc, path, draw(value))
        names.add(path[-1])
    return doc, names


@st.composite
def spec_mutation(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    """A sweep spec made invalid: in its base (as above) or in its own keys."""
    spec = copy.deepcopy(SPEC)
    if draw(st.booleans()):
        spec["base"], names = draw(run_mutation())
        return spec, names
    kind = draw(st.sampled_from(["seeds", "axis_value", "empty", "unknown", "name", "huge_grid"]))
    if kind == "seeds":
        odd = st.sampled_from([0, [], "many", {"x": 1}, 2.5, [0, 0]])
        spec["seeds"] = draw(st.one_of(NEGATIVE, HUGE, odd, st.lists(st.integers(-10**6, -1), min_size=1,
                                                                    max_size=3)))
        return spec, {"seeds"}
    if kind == "axis_value":
        axis = draw(st.sampled_from(list(SPEC["grid"])))
        bad = draw(st.one_of(WRONG_TYPES, NEGATIVE, HUGE_FLOAT, BAD_NAMES) if axis == "engine.kv_budget_gib"
                   else st.one_of(NOT_AN_INT, NEGATIVE, HUGE, BAD_NAMES))
        spec["grid"][axis] = [*spec["grid"][axis][:1], bad]
        return spec, {axis}
    if kind == "empty":
        where = draw(st.sampled_from(["axis", "zip", "grid", "base"]))
        if where == "axis":
            spec["grid"]["engine.kv_budget_gib"] = []
            return spec, {"engine.kv_budget_gib"}
        if where == "zip":
            spec["zip"] = [{}]
            return spec, {"zip"}
        spec[where] = draw(st.sampled_from([None, [], ""])) if where == "grid" else {}
        return spec, {where, "model"}
    if kind == "unknown":
        key = draw(UNKNOWN)
        if draw(st.booleans()):
            spec[key] = 1
        else:
            spec["grid"][f"workload.{key}"] = [1, 2]
        return spec, {key}
    if kind == "name":
        spec["name"] = draw(st.sampled_from(["", "bad name", "../up", 7, [1], None]))
        return spec, {"name"}
    spec["grid"]["workload.users"] = list(range(1, 301))  # x 1000 x 2 x 2 x 2 runs > --max-runs
    spec["grid"]["run.num_requests"] = list(range(1, 1001))
    return spec, {"--max-runs"}


def damage_text(draw: Callable[[st.SearchStrategy[Any]], Any], text: str) -> tuple[bytes, set[str]]:
    """Maybe insert non-UTF-8 bytes or break the YAML at some line; the names to expect."""
    data = text.encode()
    choice = draw(st.sampled_from(["none", "none", "not_utf8", "broken"]))
    if choice == "none":
        return data, set()
    lines = data.split(b"\n")
    at = draw(st.integers(0, max(len(lines) - 2, 0)))
    if choice == "not_utf8":
        line = lines[at]
        col = draw(st.integers(0, len(line)))
        lines[at] = line[:col] + draw(NOT_UTF8) + line[col:]
        return b"\n".join(lines), {f"line {at + 1}"}
    # A quoted scalar that never ends breaks YAML wherever it goes.
    lines.insert(at, draw(st.sampled_from([b'x: "unterminated', b"- 'unterminated", b'"a": "b'])))
    return b"\n".join(lines), {"line "}


def assert_refused(args: list[str], names: set[str], capsys: pytest.CaptureFixture[str],
                   written: list[Path]) -> str:
    code = kvsweep(args)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, f"exit {code} for {names}: {err}"
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith(f"kvsweep {args[0]}: error: "), err
    assert any(name in err for name in names), f"{err!r} names none of {names}"
    assert not captured.out.strip() or args[0] == "simulate"
    assert not [p for p in written if p.exists()], "something was written"
    return err


@SETTINGS
@given(data=st.data())
def test_mutated_sweep_specs_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         data: st.DataObject) -> None:
    doc, names = data.draw(spec_mutation())
    raw, more = damage_text(data.draw, yaml.safe_dump(doc, sort_keys=False))
    if more:  # the file does not even parse: the line is what an error can name
        names = more | ({"special characters"} if b"\t" in raw else set())
    folder = Path(tempfile.mkdtemp(dir=tmp_path))  # one per example: tmp_path is shared
    spec = folder / "spec.yaml"
    spec.write_bytes(raw)
    out = folder / "out"
    assert_refused(["run", str(spec), "--out", str(out), "--executor", "serial", "--no-progress"],
                   names, capsys, [out])


@SETTINGS
@given(data=st.data())
def test_mutated_run_configs_are_refused_by_run(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                data: st.DataObject) -> None:
    doc, names = data.draw(run_mutation())
    raw, more = damage_text(data.draw, yaml.safe_dump(doc, sort_keys=False))
    names = more or names
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    (folder / "run.yaml").write_bytes(raw)
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "base": "run.yaml", "grid": {}}))
    out = folder / "out"
    assert_refused(["run", str(spec), "--out", str(out), "--executor", "serial", "--no-progress"],
                   names, capsys, [out])


@SETTINGS
@given(data=st.data())
def test_mutated_run_configs_are_refused_by_simulate(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     data: st.DataObject) -> None:
    # Huge numbers are left out: `simulate` takes what simcore's SimConfig takes, and some huge
    # values are valid there (a 10**30 GiB GPU, say) and only make a run long, not wrong.
    doc, names = data.draw(run_mutation(huge=False))
    raw, more = damage_text(data.draw, yaml.safe_dump(doc, sort_keys=False))
    names = more or names
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    config = folder / "run.yaml"
    config.write_bytes(raw)
    result = folder / "result.json"
    assert_refused(["simulate", str(config), "--json", str(result)], names, capsys, [result])


# ---- traces -------------------------------------------------------------------------------------

MOONCAKE_LINE = {"timestamp": 0, "input_length": 600, "output_length": 20, "hash_ids": [1, 2]}


@st.composite
def bad_trace(draw: st.DrawFn) -> tuple[bytes, int, str]:
    """A Mooncake or Azure trace with one bad line; (content, its 1-based line number, suffix)."""
    n = draw(st.integers(2, 6))
    if draw(st.booleans()):
        lines = [json.dumps({**MOONCAKE_LINE, "timestamp": 100 * i}).encode() for i in range(n)]
        k = draw(st.integers(0, n - 1))
        obj = dict(MOONCAKE_LINE)
        kind = draw(st.sampled_from(["json", "object", "missing", "type", "negative", "huge", "hash_ids",
                                     "utf8"]))
        if kind == "json":
            bad = lines[k][: draw(st.integers(1, len(lines[k]) - 1))]
        elif kind == "object":
            bad = draw(st.sampled_from([b"[1, 2]", b"42", b'"text"', b"null"]))
        elif kind == "missing":
            del obj[draw(st.sampled_from(["timestamp", "input_length", "output_length"]))]
            bad = json.dumps(obj).encode()
        elif kind in ("type", "negative", "huge"):
            key = draw(st.sampled_from(["input_length", "output_length"] + (["timestamp"] if kind != "type"
                                                                            else [])))
            value = {"type": draw(st.sampled_from(["600", [600], 6.5, True, None])),
                     "negative": draw(st.integers(-10**6, -1)), "huge": "1e999"}[kind]
            if kind == "huge":
                key = "timestamp"
            obj[key] = value
            bad = json.dumps(obj).encode().replace(b'"1e999"', b"1e999")
        elif kind == "hash_ids":
            obj["hash_ids"] = draw(st.sampled_from([[-1], ["a"], 5, [10**13], [1.5]]))
            bad = json.dumps(obj).encode()
        else:
            bad = lines[k][:10] + draw(NOT_UTF8) + lines[k][10:]
        lines[k] = bad
        return b"\n".join(lines) + b"\n", k + 1, ".jsonl"
    rows = [f"2023-11-16 18:15:{10 + i:02d}.6805900,{100 + i},{10 + i}".encode() for i in range(n)]
    k = draw(st.integers(0, n - 1))
    kind = draw(st.sampled_from(["time", "columns", "tokens", "negative", "utf8"]))
    if kind == "time":
        rows[k] = b"yesterday," + rows[k].split(b",", 1)[1]
    elif kind == "columns":
        rows[k] = rows[k].rsplit(b",", 1)[0]
    elif kind == "tokens":
        rows[k] = rows[k].rsplit(b",", 1)[0] + b",lots"
    elif kind == "negative":
        rows[k] = rows[k].rsplit(b",", 1)[0] + b",-5"
    else:
        rows[k] = rows[k][:5] + draw(NOT_UTF8) + rows[k][5:]
    return b"TIMESTAMP,ContextTokens,GeneratedTokens\n" + b"\n".join(rows) + b"\n", k + 2, ".csv"


@SETTINGS
@given(data=st.data())
def test_malformed_trace_lines_are_refused_before_any_run(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          data: st.DataObject) -> None:
    content, line, suffix = data.draw(bad_trace())
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    trace = folder / f"trace{suffix}"
    trace.write_bytes(content)
    spec = folder / "spec.yaml"
    base = {**BASE, "workload": {"kind": "trace", "path": str(trace)}}
    spec.write_text(yaml.safe_dump({**SPEC, "base": base}))
    out = folder / "out"
    err = assert_refused(["run", str(spec), "--out", str(out), "--executor", "serial", "--no-progress"],
                         {f"{trace}:{line}:", f"line {line}"}, capsys, [out])
    assert "workload.path" in err


# ---- examples with their exact messages --------------------------------------------------------


def write(tmp_path: Path, doc: dict[str, Any] | bytes, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(doc if isinstance(doc, bytes) else yaml.safe_dump(doc).encode())
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"grid": {"workload.users": [2, 10**30]}},
         "grid axis workload.users = {big}: invalid config: workload.users = {big}: must be <= 1000000"
         " (lower it)"),
        ({"base": {**BASE, "gpu": {"name": "A100-40GB", "memory_gib": float("inf")}}},
         "base (run engine.kv_budget_gib=1 engine.max_num_batched_tokens=4096 seed=0): invalid config:"
         " gpu.memory_gib = inf: must be a finite number"),
        ({"seeds": [0, -1]}, "invalid config: seeds = [0, -1]: seed -1 is out of range: seeds must be in"
                             " [0, 2**63)"),
        ({"seeds": 10**12}, "invalid config: seeds = 1000000000000: 1,000,000,000,000 seeds alone are more"
                            " runs than --max-runs 1,000,000: give fewer seeds or raise --max-runs"),
        ({"seeds": None, "base": {**BASE, "run": {"num_requests": 20, "seed": -3}}},
         "base (run engine.kv_budget_gib=1 engine.max_num_batched_tokens=4096): invalid config:"
         " run.seed = -3: must be >= 0 (raise it)"),
    ],
)
def test_numbers_a_dataset_or_worker_cannot_take(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  change: dict[str, Any], message: str) -> None:
    doc = {key: value for key, value in {**SPEC, **change}.items() if value is not None}
    spec = write(tmp_path, doc)
    err = assert_refused(["run", str(spec), "--out", str(tmp_path / "out")], {"run"}, capsys,
                         [tmp_path / "out"])
    assert err == f"kvsweep run: error: {spec}: " + message.format(big=10**30)


def test_non_utf8_spec_names_the_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write(tmp_path, b"name: bad\nbase:\n  model: Llama\xff-3.2-1B\n")
    err = assert_refused(["plan", str(spec)], {"line"}, capsys, [])
    assert err == (f"kvsweep plan: error: {spec}: not UTF-8 text: byte 0xff at line 3, column 15: save the"
                   " sweep spec as UTF-8")


def test_max_runs_is_checked_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = {**SPEC, "grid": {"workload.users": list(range(1, 1001)), "run.num_requests": list(range(1, 1001))}}
    spec = write(tmp_path, doc)
    out = tmp_path / "out"
    started = time.monotonic()
    err = assert_refused(["run", str(spec), "--out", str(out)], {"--max-runs"}, capsys, [out])
    assert time.monotonic() - started < 5  # no run was built, let alone simulated
    assert err == (f"kvsweep run: error: {spec}: the sweep expands to 2,000,000 runs (1000 x 1000 x 2), more"
                   " than --max-runs 1,000,000: shrink the grid or raise --max-runs")
    small = write(tmp_path, SPEC, "small.yaml")  # 8 runs
    assert_refused(["plan", str(small), "--max-runs", "7"], {"more than --max-runs 7:"}, capsys, [])
    assert kvsweep(["plan", str(small), "--max-runs", "8"]) == 0


# ---- the real `kvsweep` program -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (b"name: bad\nbase: {model: Llama-3.2-1B, gpu: A100-40GB}\nseeds: \xfe2\n",
         "not UTF-8 text: byte 0xfe at line 3, column 8"),
        (b"name: bad\nbase: {model: Llama-3.2-1B, gpu: A100-40GB, bogus_key: 1}\n",
         "bogus_key = 1: Extra inputs are not permitted"),
        (b"name: bad\nbase: {model: Llama-3.2-1B, gpu: A100-40GB}\nseeds: 2000000\n",
         "2,000,000 seeds alone are more runs than --max-runs 1,000,000"),
        (b"name: bad\nbase: {model: GPT-7, gpu: A100-40GB}\n", "unknown model 'GPT-7'"),
    ],
)
def test_kvsweep_program_exits_2_with_one_line(tmp_path: Path, content: bytes, expect: str) -> None:
    spec = write(tmp_path, content)
    program = Path(sys.executable).parent / "kvsweep"
    command = [str(program)] if program.exists() else [sys.executable, "-m", "sweep.cli"]
    out = tmp_path / "out"
    result = subprocess.run([*command, "run", str(spec), "--out", str(out)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"kvsweep run: error: {spec}: ") and expect in result.stderr
    assert not out.exists()
