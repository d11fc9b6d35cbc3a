"""kvsweep query: DuckDB SQL over runs/ and requests/, checked against pandas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simcore.errors import ConfigError
from sweep import analysis, cli, cmd_report

try:  # tests/ is a plain folder (pytest puts it on sys.path) or a package
    from test_analysis import grid_rows, request_row, write_dataset
except ImportError:  # pragma: no cover
    from tests.test_analysis import grid_rows, request_row, write_dataset


@pytest.fixture
def query_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only this module's commands, so the test does not depend on the other command modules."""
    monkeypatch.setattr(cli, "COMMANDS", {k: v for k, v in cli.COMMANDS.items() if k in ("report", "query")})


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    requests = {"r0000": [request_row(i) for i in range(5)], "r0001": [request_row(i) for i in range(3)]}
    return write_dataset(tmp_path / "sweep", grid_rows(), parts=3, requests=requests)


def test_query_row_count_matches_pandas(sweep_dir: Path) -> None:
    df = analysis.load(sweep_dir)
    expected = df[(df["engine.prefix_caching"] == "prefix") & (df["status"] == "ok")]
    got = cmd_report.query(
        sweep_dir, """SELECT * FROM runs WHERE "engine.prefix_caching" = 'prefix' AND status = 'ok'"""
    )
    assert len(got) == len(expected) == 5
    assert sorted(got["run_id"]) == sorted(expected["run_id"])


def test_query_aggregate_matches_pandas(sweep_dir: Path) -> None:
    got = cmd_report.query(
        sweep_dir, 'SELECT "workload.users" AS users, avg(ttft_p99_s) AS t FROM runs GROUP BY 1 ORDER BY 1'
    )
    df = analysis.load(sweep_dir)
    expected = df.groupby("workload.users")["ttft_p99_s"].mean()
    assert got["users"].tolist() == [8, 16]
    assert got["t"].tolist() == pytest.approx(expected.tolist())


def test_query_requests_view_is_partitioned_by_run(sweep_dir: Path) -> None:
    got = cmd_report.query(sweep_dir, "SELECT run_id, count(*) AS n FROM requests GROUP BY 1 ORDER BY 1")
    assert got.to_dict("records") == [{"run_id": "r0000", "n": 5}, {"run_id": "r0001", "n": 3}]
    joined = cmd_report.query(
        sweep_dir, "SELECT count(*) AS n FROM requests JOIN runs USING (run_id) WHERE runs.seed = 0"
    )
    assert joined["n"].tolist() == [5]  # r0000 is seed 0, r0001 seed 1


def test_query_without_requests_explains(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "d", [{"seed": 0}])
    hint = r"\(the sweep saved no per-request rows: run it again with --save-requests"
    with pytest.raises(ConfigError, match=r"^bad SQL: .*requests.*" + hint):
        cmd_report.query(out, "SELECT * FROM requests")


def test_cli_query_prints_a_table(
    sweep_dir: Path, query_cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    sql = 'SELECT "engine.prefix_caching" AS caching, count(*) AS runs FROM runs GROUP BY 1 ORDER BY 1'
    assert cli.main(["query", str(sweep_dir), sql]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["caching", "runs"]
    assert [line.split() for line in out[1:3]] == [["off", "6"], ["prefix", "6"]]
    assert out[-1] == "(2 rows)"


def test_cli_query_csv_and_json(sweep_dir: Path, query_cli: None, capsys: pytest.CaptureFixture[str]) -> None:
    sql = "SELECT count(*) AS n FROM runs WHERE status <> 'ok'"
    assert cli.main(["query", str(sweep_dir), sql, "--format", "csv"]) == 0
    assert capsys.readouterr().out == "n\n2\n"
    assert cli.main(["query", str(sweep_dir), sql, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 2}]


def test_cli_query_bad_sql_is_one_line_and_exit_2(
    sweep_dir: Path, query_cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["query", str(sweep_dir), "SELEKT * FROM runs"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("kvsweep query: error: bad SQL: Parser Error: syntax error")


def test_cli_query_unquoted_dotted_column_hints(
    sweep_dir: Path, query_cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["query", str(sweep_dir), "SELECT model.name FROM runs"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and '(quote dotted column names: "model.name")' in err


def test_cli_query_missing_dataset_exit_2(
    tmp_path: Path, query_cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["query", str(tmp_path / "none"), "SELECT 1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no sweep dataset here (missing runs/)" in err
