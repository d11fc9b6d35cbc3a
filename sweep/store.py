"""The Parquet dataset a sweep writes, at a local path or any ``pyarrow.fs`` URI::

    DIR/
      _kvsweep.json                            {"version", "sweep", "created"}
      spec.yaml                                the sweep spec, resolved (base inline, seeds listed)
      runs/part-00000-1f3a9c0e.parquet         one row per run, many runs per part
      runs/part-00001-77b0e2d4.parquet
      requests/run_id=<run_id>/part-0.parquet  one row per request (only with --save-requests)
      capacity/part-0.parquet                  a capacity search's answers, one row per cell
      _quarantine/runs/part-00002-...parquet   damaged parts moved aside on resume (never read)
      .kvsweep.lock                            while a sweep writes here (local paths only)

Every file is written to a hidden temporary name (``.<name>.<hex>.tmp``, which pyarrow, pandas
and DuckDB globs all skip) and then renamed, so a reader never sees half a file; a write that
fails (disk full, permissions) deletes its temporary and raises :class:`OutputError`, and the
temporaries a killed writer leaves are deleted by the next :meth:`Dataset.prepare`. A run's
requests are written before the runs part that holds its row, so "its row is in runs/" means
"it is done".

Resume trusts only parts that read back whole: :meth:`Dataset.scan` reads every part in full,
verifying Parquet page checksums (written with every part), the schema, and that each row has a
``run_id`` and a known ``status``. :meth:`Dataset.repair` moves a part that fails into
``_quarantine/`` (its runs are then missing, so they are done again) and rewrites a part that
repeats runs an earlier part holds without those rows: each run is in ``runs/`` exactly once.

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
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    "status": "str",  # ok | no_data | infeasible | failed
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
    "cluster.replicas": "int",
}
TAIL_COLUMNS: dict[str, str] = {"kvsweep_version": "str", "config_json": "str"}
STATUSES = ("ok", "no_data", "infeasible", "failed")
META_FILE = "_kvsweep.json"
CAPACITY_DIR = "capacity"
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
        "cluster.replicas": cfg.cluster.replicas,
    }


def requests_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=REQUESTS_SCHEMA)


class OutputError(ConfigError):
    """The dataset cannot be written (not writable, disk full, ...). ``str(err)`` is one line
    naming the path, the reason and what to do. A subclass of :class:`ConfigError` so that
    raised before any run it is reported like bad input (exit 2)."""


def _column_change(found: list[str], schema: pa.Schema | None) -> str:
    """What the parts' columns lack and add against ``schema`` (a dataset written by another
    version of kvsweep differs so), for the error; empty when no columns differ by name."""
    if schema is None:
        return ""
    want = set(schema.names)
    lacks = [c for c in schema.names if c not in set(found)]
    extra = [c for c in found if c not in want]
    parts = [f"{label} {', '.join(cols[:4])}{' ...' if len(cols) > 4 else ''}"
             for label, cols in (("they lack", lacks), ("they add", extra)) if cols]
    if not parts:
        return " (same names, other types)"
    return f" ({'; '.join(parts)}: written by another version of kvsweep?)"


def _reason(exc: BaseException) -> str:
    """``No space left on device``: the OS's words when there are some, else the message."""
    text = str(getattr(exc, "strerror", None) or exc)
    # pyarrow says "Error writing bytes to file. Detail: [errno 28] No space left on device"
    found = re.search(r"\[errno (\d+)\]", text)
    if found:
        text = os.strerror(int(found.group(1)))
    return " ".join(text.split())[:300]


@contextmanager
def _writing(path: str, what: str = "write") -> Iterator[None]:
    """Turn a failed file operation on ``path`` into an :class:`OutputError`."""
    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        raise OutputError(f"cannot {what} {path}: {_reason(exc)}") from None


# Parquet writer options. Page checksums let a resume verify every page it reads back. Arrow
# does not check dictionary-encoded pages (measured: a byte flipped there went unnoticed), so
# dictionaries are off: a runs part of 1,000 distinct rows is no bigger for it (414 vs 469 KB).
PARQUET_OPTIONS: dict[str, Any] = {"write_page_checksum": True, "use_dictionary": False}
# Min/max statistics of long text (1.4 KB of JSON, twice, per page header and again in the
# footer) help no reader filter and sit outside the checksums: a part is 26% smaller without.
_NO_STATISTICS = ("config_json", "error")
LOCK_FILE = ".kvsweep.lock"
QUARANTINE_DIR = "_quarantine"


@dataclass
class Scan:
    """What :meth:`Dataset.scan` found in ``runs/``."""

    present: dict[str, str] = field(default_factory=dict)  # run_id -> status, first occurrence
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (part path, why)
    duplicates: dict[str, set[str]] = field(default_factory=dict)  # part path -> run_ids held earlier
    parts: int = 0  # parts read whole


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
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def __str__(self) -> str:
        return self.uri

    # ---- small file helpers ----------------------------------------------------------------

    def _exists(self, path: str) -> bool:
        return bool(self.fs.get_file_info(path).type != pafs.FileType.NotFound)

    def _read_text(self, path: str) -> str:
        with self.fs.open_input_stream(path) as f:
            return bytes(f.read()).decode("utf-8")

    def _write_atomic(self, path: str, write: Callable[[str], None]) -> None:
        """``write(tmp_path)`` then rename to ``path``: readers see the whole file or none.

        Raises :class:`OutputError` when either step fails; whatever stops it (a Ctrl-C in the
        middle of a write too) deletes the temporary first."""
        folder, name = path.rsplit("/", 1)
        tmp = f"{folder}/.{name}.{secrets.token_hex(4)}.tmp"
        try:
            with _writing(path):
                write(tmp)
                self.fs.move(tmp, path)
        except BaseException:
            try:
                self.fs.delete_file(tmp)
            except (OSError, pa.ArrowException):
                pass  # never created, moved already, or the disk is gone: prepare() removes it next time
            raise

    def _write_text(self, path: str, text: str) -> None:
        def write(tmp: str) -> None:
            with self.fs.open_output_stream(tmp) as f:
                f.write(text.encode("utf-8"))

        self._write_atomic(path, write)

    def _write_table(self, path: str, table: pa.Table) -> None:
        stats = [name for name in table.column_names if name not in _NO_STATISTICS]
        self._write_atomic(path, lambda tmp: pq.write_table(
            table, tmp, filesystem=self.fs, write_statistics=stats, **PARQUET_OPTIONS))

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

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``DIR/.kvsweep.lock`` while writing, so two sweeps never write one dataset at once.

        Local paths only (object stores have no exclusive create). A lock whose process is gone
        (same host, pid dead or reused) is stale and taken over. Raises :class:`ConfigError`
        when another live kvsweep holds it, :class:`OutputError` when DIR cannot be written.
        """
        if not self.local:
            yield
            return
        path = os.path.join(self.root, LOCK_FILE)
        with _writing(self.root, "create"):
            if os.path.exists(self.root) and not os.path.isdir(self.root):
                raise ConfigError(f"--out {self.uri} is a file, not a folder: choose another --out")
            os.makedirs(self.root, exist_ok=True)
        me = _process_id()
        with _writing(path):
            for _ in range(2):
                try:
                    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    holder = _read_lock(path)
                    if holder is None and time.time() - os.path.getmtime(path) < 10:
                        holder = {"pid": "?", "host": "?", "since": "just now"}  # being written
                    if holder is not None and _alive(holder):
                        raise ConfigError(_in_use(self.uri, path, holder)) from None
                    os.unlink(path)  # stale: its kvsweep was killed
                    continue
                with os.fdopen(fd, "w") as fh:
                    json.dump(me, fh)
                break
            else:
                raise ConfigError(f"--out {self.uri}: another kvsweep took {path} just now: try again")
        try:
            yield
        finally:
            if _read_lock(path) == me:
                os.unlink(path)

    def prepare(self, sweep: str, spec_yaml: str, schema: pa.Schema, version: str) -> bool:
        """Create the dataset, or check that the one there is the same sweep with the same schema.

        Returns whether it already existed. Raises :class:`ConfigError` when DIR holds something
        else and :class:`OutputError` when DIR cannot be written. Leftover temporary files of an
        interrupted run are removed.
        """
        meta_path = f"{self.root}/{META_FILE}"
        with _writing(self.root, "read"):
            is_file = self.fs.get_file_info(self.root).type == pafs.FileType.File
            resumed = self._exists(meta_path)
        if is_file:
            raise ConfigError(f"--out {self.uri} is a file, not a folder: choose another --out")
        if resumed:
            conflict = self.conflict(sweep, spec_yaml)
            if conflict:
                raise ConfigError(conflict)
            self._remove_temporaries()
            self._probe()
            return True
        with _writing(self.runs_dir, "create"):
            self.fs.create_dir(self.runs_dir, recursive=True)
        self._remove_temporaries()  # a run killed before it wrote _kvsweep.json
        self._write_text(f"{self.root}/{SPEC_FILE}", spec_yaml)
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        meta = {"version": version, "sweep": sweep, "created": created}
        self._write_text(meta_path, json.dumps(meta, indent=2) + "\n")
        return False

    def conflict(self, sweep: str, spec_yaml: str) -> str | None:
        """Why this folder cannot take sweep ``sweep`` of spec ``spec_yaml`` (another sweep, or the
        same sweep from a different spec), or None when it can (empty, or the same spec: resume).
        Raises :class:`ConfigError` when its metadata is damaged."""
        meta_path = f"{self.root}/{META_FILE}"
        with _writing(self.root, "read"):
            if not self._exists(meta_path):
                return None
        meta = self._load_meta(meta_path)
        if meta.get("sweep") != sweep:
            return f"--out {self.uri} holds sweep {meta.get('sweep')!r}, not {sweep!r}: choose another --out"
        spec_path = f"{self.root}/{SPEC_FILE}"
        old_spec = self._load_yaml(spec_path) if self._exists(spec_path) else None
        if old_spec is not None and old_spec != yaml.safe_load(spec_yaml):
            return (f"--out {self.uri} holds sweep {sweep!r} from a different spec ({spec_path}):"
                    " rerun with that spec to resume, or choose another --out")
        return None

    def _load_meta(self, path: str) -> dict[str, Any]:
        try:
            meta = json.loads(self._read_text(path))
        except (ValueError, OSError) as exc:
            raise ConfigError(f"{path} is damaged ({_reason(exc)}): if {self.uri} holds this sweep,"
                              " delete that file and rerun (kvsweep writes it again)") from None
        if not isinstance(meta, dict):
            raise ConfigError(f"{path} is damaged (not a JSON object): if {self.uri} holds this sweep,"
                              " delete that file and rerun")
        return meta

    def _load_yaml(self, path: str) -> Any:
        try:
            return yaml.safe_load(self._read_text(path))
        except (ValueError, OSError, yaml.YAMLError) as exc:
            reason = _reason(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"{path} is damaged ({reason}): if {self.uri} holds this sweep, delete"
                              " that file and rerun (kvsweep writes it again)") from None

    def _probe(self) -> None:
        """Fail now, before any run, if ``runs/`` cannot be written."""
        probe = f"{self.runs_dir}/.probe.{secrets.token_hex(4)}.tmp"
        with _writing(self.runs_dir):
            self.fs.create_dir(self.runs_dir, recursive=True)
            with self.fs.open_output_stream(probe) as f:
                f.write(b"kvsweep")
            self.fs.delete_file(probe)

    def _remove_temporaries(self) -> None:
        """Delete what killed writers left: ``.<name>.<hex>.tmp`` under DIR (requests/ included)."""
        with _writing(self.root, "clean up"):
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True, recursive=True))
            for info in infos:
                if (info.type == pafs.FileType.File and info.base_name.startswith(".")
                        and info.base_name.endswith(".tmp")):
                    self.fs.delete_file(info.path)

    # ---- reading back ------------------------------------------------------------------------

    def _check_part(self, path: str, schema: pa.Schema | None) -> tuple[pa.Table | None, str]:
        """The whole part, or ``(None, why it is damaged)``."""
        try:
            with self.fs.open_input_file(path) as f:
                size = f.size()
                head = f.read(4)
                f.seek(max(size - 4, 0))
                tail = f.read(4)
            if size < 12 or head != b"PAR1" or tail != b"PAR1":
                return None, f"not a whole Parquet file ({size} bytes; truncated?)"
            table = pq.read_table(path, filesystem=self.fs, page_checksum_verification=True)
        except (OSError, pa.ArrowException) as exc:
            return None, f"unreadable: {_reason(exc)}"
        if schema is not None and not table.schema.equals(schema):
            return table, "schema"
        if "run_id" not in table.column_names or "status" not in table.column_names:
            return None, "it has no run_id or status column"
        if table.column("run_id").null_count:
            return None, "a row has no run_id"
        statuses = set(pc.unique(table.column("status")).to_pylist())
        if not statuses <= set(STATUSES):
            odd = sorted(str(s) for s in statuses - set(STATUSES))
            return None, f"unknown status {', '.join(odd)}"
        return table, ""

    def scan(self, schema: pa.Schema | None = None) -> Scan:
        """Read every part back in full (see the module docstring); changes nothing.

        With ``schema``, a part with other columns is damaged, unless no part has this schema:
        then DIR holds another sweep and :class:`ConfigError` is raised.
        """
        found = Scan()
        other_schema: list[str] = []
        other_columns: list[str] = []
        for _, path in self._parts():
            table, why = self._check_part(path, schema)
            if why == "schema":
                other_schema.append(path)
                other_columns = other_columns or (table.column_names if table is not None else [])
                continue
            if table is None:
                found.damaged.append((path, why))
                continue
            found.parts += 1
            ids = table.column("run_id").to_pylist()
            statuses = table.column("status").to_pylist()
            for run_id, status in zip(ids, statuses, strict=True):
                if run_id in found.present:
                    found.duplicates.setdefault(path, set()).add(run_id)
                else:
                    found.present[run_id] = status
        if other_schema and not found.parts:
            raise ConfigError(f"--out {self.uri}: runs/ parts have other columns than this sweep writes"
                              f"{_column_change(other_columns, schema)}: choose another --out")
        found.damaged += [(p, "its columns differ from the other parts'") for p in other_schema]
        found.damaged.sort()
        return found

    def repair(self, found: Scan) -> list[str]:
        """Quarantine damaged parts and drop duplicated rows; returns one warning line for each."""
        warnings = []
        for path, why in found.damaged:
            name = path.rsplit("/", 1)[1]
            folder = f"{self.root}/{QUARANTINE_DIR}/runs"
            target = f"{folder}/{name}"
            with _writing(target, "move a damaged part to"):
                self.fs.create_dir(folder, recursive=True)
                n = 1
                while self._exists(target):
                    target, n = f"{folder}/{name}.{n}", n + 1
                self.fs.move(path, target)
            warnings.append(f"{self._rel(path)} is damaged ({why}): moved to {self._rel(target)};"
                            " its runs will be done again")
        for path, run_ids in sorted(found.duplicates.items()):
            table = pq.read_table(path, filesystem=self.fs)
            keep = pc.invert(pc.is_in(table.column("run_id"), value_set=pa.array(sorted(run_ids))))
            kept = table.filter(keep)
            if kept.num_rows:
                self._write_table(path, kept)
            else:
                with _writing(path, "delete"):
                    self.fs.delete_file(path)
            warnings.append(f"{self._rel(path)} repeated {len(run_ids)} runs held by an earlier part:"
                            " dropped them there")
        return warnings

    def _rel(self, path: str) -> str:
        return f"{self.uri.rstrip('/')}/{path[len(self.root) + 1:]}" if path.startswith(self.root) else path

    def existing(self) -> dict[str, str]:
        """run_id -> status of every row of the parts that read back whole."""
        return self.scan().present

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
                with _writing(path, "delete"):
                    self.fs.delete_file(path)
        return dropped

    def write_requests(self, run_id: str, table: pa.Table) -> None:
        folder = f"{self.requests_dir}/run_id={run_id}"
        with _writing(folder, "create"):
            self.fs.create_dir(folder, recursive=True)
        self._write_table(f"{folder}/part-0.parquet", table)

    def write_capacity(self, table: pa.Table) -> None:
        """Replace ``capacity/part-0.parquet``: a capacity search's answers, one row per cell
        (:mod:`sweep.capacity`). Rewritten whole each time: it follows from the probes in runs/."""
        folder = f"{self.root}/{CAPACITY_DIR}"
        with _writing(folder, "create"):
            self.fs.create_dir(folder, recursive=True)
        self._write_table(f"{folder}/part-0.parquet", table)

    def writer(self, schema: pa.Schema, part_rows: int = 1000, flush_s: float = 60.0) -> RunsWriter:
        parts = self._parts()
        return RunsWriter(self, schema, parts[-1][0] + 1 if parts else 0, part_rows, flush_s)


def _process_id() -> dict[str, Any]:
    """Who holds a lock: host, pid and the process's start time (so a reused pid is told apart)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_ticks(os.getpid()),
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _start_ticks(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks); None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _read_lock(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            holder = json.load(fh)
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the lock's process may still run (on another host we cannot tell: assume so)."""
    if holder.get("host") != socket.gethostname():
        return True  # another host's, or one being written just now
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    start = holder.get("start")
    return start is None or _start_ticks(pid) in (start, None)


def _in_use(uri: str, path: str, holder: dict[str, Any]) -> str:
    who = f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
    return (f"--out {uri} is being written by another kvsweep ({who}): wait for it to finish or choose"
            f" another --out (if none runs, delete {path})")


class RunsWriter:
    """Buffers rows and writes them as ``runs/`` parts of ``part_rows`` rows, or of whatever has
    arrived after ``flush_s`` seconds, so a killed driver loses at most that much finished work.

    A row that does not fit the schema (a metric beyond int64, say) is stored as a ``failed``
    row saying why, rather than failing the part: :meth:`add` returns the row as stored. A part
    that cannot be written raises :class:`OutputError`; its rows are lost (their runs are then
    missing, so a resume does them)."""

    def __init__(self, dataset: Dataset, schema: pa.Schema, seq: int, part_rows: int, flush_s: float) -> None:
        self.dataset = dataset
        self.schema = schema
        self.seq = seq
        self.part_rows = part_rows
        self.flush_s = flush_s
        self.rows: list[dict[str, Any]] = []
        self.parts_written = 0
        self.rows_written = 0
        self._last = time.monotonic()

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        """Buffer one row (writing a part when due); returns it as it will be stored."""
        for key, value in row.items():  # the one misfit seen in practice, checked cheaply here
            if type(value) is int and not _INT64[0] <= value <= _INT64[1]:
                row = _failed(row, f"{key} = {value} does not fit a 64-bit integer column")
                break
        self.rows.append(row)
        if len(self.rows) >= self.part_rows or time.monotonic() - self._last >= self.flush_s:
            self.flush()
        return row

    def flush(self) -> None:
        self._last = time.monotonic()
        if not self.rows:
            return
        rows, self.rows = self.rows, []
        table = self._table(rows)
        name = f"part-{self.seq:05d}-{secrets.token_hex(4)}.parquet"
        self.seq += 1  # a failed write leaves no file, but never reuse its number
        self.dataset._write_table(f"{self.dataset.runs_dir}/{name}", table)
        self.parts_written += 1
        self.rows_written += len(rows)

    def _table(self, rows: list[dict[str, Any]]) -> pa.Table:
        try:
            return self._build(rows)
        except _UNFIT:
            pass  # some row does not fit: find it (rare, so the common path stays one call)
        fixed = []
        for row in rows:
            try:
                self._build([row])
                fixed.append(row)
            except _UNFIT as exc:
                failed = _failed(row, f"{type(exc).__name__}: {' '.join(str(exc).split())}")
                try:
                    self._build([failed])
                except _UNFIT:  # an axis value itself: keep what identifies the run
                    keep = ("run_id", "sweep", "kvsweep_version", "config_json", "status", "error")
                    failed = {k: failed.get(k) for k in keep}
                fixed.append(failed)
        return self._build(fixed)

    def _build(self, rows: list[dict[str, Any]]) -> pa.Table:
        columns = {name: [row.get(name) for row in rows] for name in self.schema.names}
        return pa.Table.from_pydict(columns, schema=self.schema)


_UNFIT = (pa.ArrowException, OverflowError, TypeError, ValueError)
_INT64 = (-(2**63), 2**63 - 1)


def _failed(row: dict[str, Any], why: str) -> dict[str, Any]:
    """A failed row in place of one that cannot be stored: its metrics dropped, the reason kept."""
    kept = {k: v for k, v in row.items() if k not in SUMMARY_FIELDS}
    return {**kept, "status": "failed", "error": f"row cannot be stored: {why}"[:2000]}


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
