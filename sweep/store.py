"""The Parquet dataset a sweep writes, at a local path or any ``pyarrow.fs`` URI::

    DIR/
      _kvsweep.json                            {"version", "sweep", "created"}
      spec.yaml                                the sweep spec, resolved (base inline, seeds listed)
      runs/part-00000-1f3a9c0e.parquet         one row per run, many runs per part
      runs/part-00001-77b0e2d4.parquet
      requests/run_id=<run_id>/part-0.parquet  one row per request (only with --save-requests)

Every file is written to a hidden temporary name (``.<name>.tmp``, which pyarrow, pandas and
DuckDB globs all skip) and then renamed, so a reader never sees half a file. A run's requests are
written before the runs part that holds its row, so "its row is in runs/" means "it is done".

``runs/`` columns, in order: run_id, sweep, seed, status, error; the context columns
(:data:`CONTEXT_COLUMNS`, always present); every other grid axis by its dotted path; every
metric of :data:`simcore.metrics.SUMMARY_FIELDS`; kvsweep_version and config_json. All parts
of a dataset share one schema; failed and infeasible rows carry typed nulls.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

from simcore.config import SimConfig
from simcore.errors import ConfigError
from simcore.metrics import REQUEST_FIELDS, SUMMARY_FIELDS

if TYPE_CHECKING:
    from sweep.spec import RunSpec

ARROW_TYPES: dict[str, pa.DataType] = {
    "int": pa.int64(),
    "float": pa.float64(),
    "str": pa.string(),
    "bool": pa.bool_(),
}
LEAD_COLUMNS: dict[str, str] = {
    "run_id": "str",
    "sweep": "str",
    "seed": "int",
    "status": "str",  # ok | infeasible | failed
    "error": "str",  # null when ok
}
# Columns every dataset has whatever its axes, so analysis code can always group by them.
CONTEXT_COLUMNS: dict[str, str] = {
    "model.name": "str",
    "gpu.name": "str",
    "gpu.memory_gib": "float",
    "engine.kv_budget_gib": "float",
    "engine.tensor_parallel": "int",
    "engine.prefix_caching": "str",
    "workload.kind": "str",
    "workload.users": "int",
}
TAIL_COLUMNS: dict[str, str] = {"kvsweep_version": "str", "config_json": "str"}
STATUSES = ("ok", "infeasible", "failed")
META_FILE = "_kvsweep.json"
SPEC_FILE = "spec.yaml"
_PART_RE = re.compile(r"^part-(\d{5,})-[0-9a-f]{8}\.parquet$")


def _schema(columns: Mapping[str, str]) -> pa.Schema:
    return pa.schema([pa.field(name, ARROW_TYPES[kind]) for name, kind in columns.items()])


def runs_columns(axis_types: Mapping[str, str]) -> dict[str, str]:
    """Column name -> kind for ``runs/``, in order; axes already among the context are not repeated."""
    axes = {k: v for k, v in axis_types.items() if k not in CONTEXT_COLUMNS and k not in LEAD_COLUMNS}
    return {**LEAD_COLUMNS, **CONTEXT_COLUMNS, **axes, **SUMMARY_FIELDS, **TAIL_COLUMNS}


def runs_schema(axis_types: Mapping[str, str]) -> pa.Schema:
    return _schema(runs_columns(axis_types))


REQUESTS_SCHEMA = _schema(REQUEST_FIELDS)


def context_values(cfg: SimConfig) -> dict[str, Any]:
    """The :data:`CONTEXT_COLUMNS` of one run (``workload.users`` is null for open-loop workloads)."""
    return {
        "model.name": cfg.model.name,
        "gpu.name": cfg.gpu.name,
        "gpu.memory_gib": cfg.gpu.memory_gib,
        "engine.kv_budget_gib": cfg.engine.kv_budget_gib,
        "engine.tensor_parallel": cfg.engine.tensor_parallel,
        "engine.prefix_caching": cfg.engine.prefix_caching,
        "workload.kind": cfg.workload.kind,
        "workload.users": getattr(cfg.workload, "users", None),
    }


def requests_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=REQUESTS_SCHEMA)


class Dataset:
    """One sweep's dataset. Paths without a scheme are local; others go through ``pyarrow.fs``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        if "://" in uri or uri.startswith("file:"):
            try:
                self.fs, self.root = pafs.FileSystem.from_uri(uri)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
                raise ConfigError(f"--out {uri}: not a location pyarrow.fs can open: {exc}") from None
        else:
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(uri)
        self.runs_dir = f"{self.root}/runs"
        self.requests_dir = f"{self.root}/requests"

    def __str__(self) -> str:
        return self.uri

    # ---- small file helpers ----------------------------------------------------------------

    def _exists(self, path: str) -> bool:
        return bool(self.fs.get_file_info(path).type != pafs.FileType.NotFound)

    def _read_text(self, path: str) -> str:
        with self.fs.open_input_stream(path) as f:
            return bytes(f.read()).decode("utf-8")

    def _write_atomic(self, path: str, write: Any) -> None:
        """``write(tmp_path)`` then rename to ``path``: readers see the whole file or none."""
        folder, name = path.rsplit("/", 1)
        tmp = f"{folder}/.{name}.{secrets.token_hex(4)}.tmp"
        write(tmp)
        self.fs.move(tmp, path)

    def _write_text(self, path: str, text: str) -> None:
        def write(tmp: str) -> None:
            with self.fs.open_output_stream(tmp) as f:
                f.write(text.encode("utf-8"))

        self._write_atomic(path, write)

    def _write_table(self, path: str, table: pa.Table) -> None:
        self._write_atomic(path, lambda tmp: pq.write_table(table, tmp, filesystem=self.fs))

    def _parts(self) -> list[tuple[int, str]]:
        """(sequence number, path) of every runs part, in order."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.runs_dir, allow_not_found=True))
        parts = []
        for info in infos:
            match = _PART_RE.match(info.base_name)
            if match and info.type == pafs.FileType.File:
                parts.append((int(match.group(1)), info.path))
        return sorted(parts)

    # ---- life cycle --------------------------------------------------------------------------

    def prepare(self, sweep: str, spec_yaml: str, schema: pa.Schema, version: str) -> bool:
        """Create the dataset, or check that the one there is the same sweep with the same schema.

        Returns whether it already existed. Raises :class:`ConfigError` when DIR holds something else.
        Leftover temporary files of an interrupted run are removed.
        """
        meta_path = f"{self.root}/{META_FILE}"
        if self._exists(meta_path):
            meta = json.loads(self._read_text(meta_path))
            if meta.get("sweep") != sweep:
                raise ConfigError(
                    f"--out {self.uri} holds sweep {meta.get('sweep')!r}, not {sweep!r}: choose another --out"
                )
            spec_path = f"{self.root}/{SPEC_FILE}"
            old_spec = yaml.safe_load(self._read_text(spec_path)) if self._exists(spec_path) else None
            if old_spec is not None and old_spec != yaml.safe_load(spec_yaml):
                raise ConfigError(
                    f"--out {self.uri} holds sweep {sweep!r} from a different spec ({spec_path}):"
                    " rerun with that spec to resume, or choose another --out"
                )
            parts = self._parts()
            if parts:
                old = pq.read_schema(parts[0][1], filesystem=self.fs)
                if not old.equals(schema):
                    raise ConfigError(
                        f"--out {self.uri}: runs/ parts have other columns than this sweep writes:"
                        " choose another --out"
                    )
            self._remove_temporaries()
            return True
        self.fs.create_dir(self.runs_dir, recursive=True)
        self._write_text(f"{self.root}/{SPEC_FILE}", spec_yaml)
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        meta = {"version": version, "sweep": sweep, "created": created}
        self._write_text(meta_path, json.dumps(meta, indent=2) + "\n")
        return False

    def _remove_temporaries(self) -> None:
        for folder in (self.root, self.runs_dir):
            infos = self.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
            for info in infos:
                if info.base_name.startswith(".") and info.base_name.endswith(".tmp"):
                    self.fs.delete_file(info.path)

    def existing(self) -> dict[str, str]:
        """run_id -> status of every row in ``runs/`` (reads two columns only)."""
        out: dict[str, str] = {}
        for _, path in self._parts():
            table = pq.read_table(path, columns=["run_id", "status"], filesystem=self.fs)
            ids, statuses = table.column("run_id").to_pylist(), table.column("status").to_pylist()
            out.update(zip(ids, statuses, strict=True))
        return out

    def drop_failed(self) -> int:
        """Rewrite every part that holds failed rows without them (atomically); returns how many.

        A crash after this leaves those runs missing, so the next run simply does them again.
        """
        dropped = 0
        for _, path in self._parts():
            status = pq.read_table(path, columns=["status"], filesystem=self.fs).column("status")
            failed = pc.sum(pc.equal(status, "failed")).as_py() or 0
            if not failed:
                continue
            dropped += failed
            table = pq.read_table(path, filesystem=self.fs)
            kept = table.filter(pc.not_equal(table.column("status"), "failed"))
            if kept.num_rows:
                self._write_table(path, kept)
            else:
                self.fs.delete_file(path)
        return dropped

    def write_requests(self, run_id: str, table: pa.Table) -> None:
        folder = f"{self.requests_dir}/run_id={run_id}"
        self.fs.create_dir(folder, recursive=True)
        self._write_table(f"{folder}/part-0.parquet", table)

    def writer(self, schema: pa.Schema, part_rows: int = 1000, flush_s: float = 60.0) -> RunsWriter:
        parts = self._parts()
        return RunsWriter(self, schema, parts[-1][0] + 1 if parts else 0, part_rows, flush_s)


class RunsWriter:
    """Buffers rows and writes them as ``runs/`` parts of ``part_rows`` rows, or of whatever has
    arrived after ``flush_s`` seconds, so a killed driver loses at most that much finished work."""

    def __init__(self, dataset: Dataset, schema: pa.Schema, seq: int, part_rows: int, flush_s: float) -> None:
        self.dataset = dataset
        self.schema = schema
        self.seq = seq
        self.part_rows = part_rows
        self.flush_s = flush_s
        self.rows: list[dict[str, Any]] = []
        self.parts_written = 0
        self._last = time.monotonic()

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.part_rows or time.monotonic() - self._last >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        if not self.rows:
            return
        columns = {name: [row.get(name) for row in self.rows] for name in self.schema.names}
        table = pa.Table.from_pydict(columns, schema=self.schema)
        name = f"part-{self.seq:05d}-{secrets.token_hex(4)}.parquet"
        self.dataset._write_table(f"{self.dataset.runs_dir}/{name}", table)
        self.seq += 1
        self.parts_written += 1
        self.rows = []


def row_head(run: RunSpec, sweep: str, version: str) -> dict[str, Any]:
    """The columns of a run's row known before it runs (the rest: status, error, metrics)."""
    return {
        "run_id": run.run_id,
        "sweep": sweep,
        "seed": run.seed,
        **run.axis_values,
        **context_values(run.config),
        "kvsweep_version": version,
        "config_json": run.config_json,
    }
