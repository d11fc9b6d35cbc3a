"""A sweep spec (YAML) and its expansion into runs with stable ids.

A spec is a base run config plus axes::

    name: quickstart
    base:                         # a SimConfig, inline or a path to a run YAML beside the spec
      model: Llama-3.2-1B
      gpu: A100-40GB
      workload: {kind: chat, users: 8}
    grid:                         # cartesian product of every axis
      workload.users: [4, 16, 64]
      engine.prefix_caching: [off, prefix]
    zip:                          # each group varies together (equal lengths), then joins the product
      - model: [Llama-3.2-1B, Llama-3.1-8B]
        engine.tensor_parallel: [1, 2]
    seeds: 3                      # a count (0, 1, 2) or a list of seeds; omitted: the base's run.seed

Runs are numbered in mixed radix: grid axes in YAML order, then zip groups, then seeds (the last
varies fastest). Each run's config is built by setting every axis value on a copy of the raw base
dict (shorter paths first, so ``gpu`` then ``gpu.memory_gib``; a catalog name met on the way, as in
``gpu: H100-SXM-80GB``, becomes ``{name: H100-SXM-80GB}``) and validated as a :class:`SimConfig`.
``run_id`` is the first 16 hex digits of the SHA-256 of the validated config's canonical JSON,
so it does not depend on key order, axis order or how a value was spelled.

Every error raised here is a :class:`ConfigError` naming the file, the axis and the value. Beyond
what :class:`SimConfig` checks, a sweep refuses what its dataset could not hold or a worker could
not run: integers beyond int64, numbers that are not finite, negative seeds, and (with
``max_runs``) more runs than asked for, refused before any run is built. :func:`check_traces`
reads the traces the runs replay, so a bad trace line is refused before any work too.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from simcore.config import SimConfig, TraceWorkload
from simcore.errors import ConfigError, format_validation_error
from sweep.search import SearchSpec

SEED_PATH = "run.seed"
# Axes whose values, when all are catalog names, are already columns as "<path>.name".
_CATALOG_PATHS = ("model", "gpu")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# Integer columns are int64; numpy seeds must be non-negative.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_NOT_DIGITS = str.maketrans({chr(c): " " for c in range(128) if not chr(c).isdigit()})
# A seed count beyond this is refused even without --max-runs: the list would not fit in memory.
MAX_SEED_COUNT = 10**7


def canonical_json(cfg: SimConfig) -> str:
    """The resolved config as sorted-key JSON: the identity of a run."""
    return json.dumps(cfg.model_dump(mode="json"), sort_keys=True)


def run_id_of(config_json: str) -> str:
    """16 hex digits of SHA-256 over :func:`canonical_json`."""
    return hashlib.sha256(config_json.encode()).hexdigest()[:16]


class SweepSpec(BaseModel):
    """The validated spec. ``base`` stays a raw dict: axes are set on it before validation."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(description="sweep name: the `sweep` column and the default output folder")
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict, description="a SimConfig as a raw mapping")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted path -> values")
    zip: list[dict[str, list[Any]]] = Field(default_factory=list, description="groups varied together")
    seeds: list[int] | None = Field(default=None, description="a list, or a count n meaning 0..n-1")
    search: SearchSpec | None = Field(default=None, description="an SLO capacity search over one more axis")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("use letters, digits, '_', '-' and '.', starting with a letter or digit")
        return value

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_count(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ValueError("a seed count must be at least 1")
            max_runs = (info.context or {}).get("max_runs")
            if max_runs is not None and value > max_runs:
                raise ValueError(f"{value:,} seeds alone are more runs than --max-runs {max_runs:,}:"
                                 " give fewer seeds or raise --max-runs")
            if value > MAX_SEED_COUNT:
                raise ValueError(f"{value:,} seeds are too many: give at most {MAX_SEED_COUNT:,}")
            return list(range(value))
        return value

    @field_validator("seeds")
    @classmethod
    def _seed_range(cls, value: list[int] | None) -> list[int] | None:
        for seed in value or []:
            if not 0 <= seed <= _INT_MAX:
                raise ValueError(f"seed {seed} is out of range: seeds must be in [0, 2**63)")
        return value

    @model_validator(mode="after")
    def _check_axes(self) -> SweepSpec:
        seen: set[str] = set()
        groups: list[tuple[str, dict[str, list[Any]]]] = [("grid", self.grid)]
        groups += [(f"zip[{i}]", group) for i, group in enumerate(self.zip)]
        for where, group in groups:
            if where != "grid" and not group:
                raise ValueError(f"{where} is empty: give it at least one axis")
            lengths = {len(values) for values in group.values()}
            if where != "grid" and len(lengths) > 1:
                shown = ", ".join(f"{p} has {len(v)}" for p, v in group.items())
                raise ValueError(f"{where}: axes that vary together need equal lengths ({shown})")
            for path, values in group.items():
                if not _PATH_RE.match(path):
                    raise ValueError(f"{where} axis {path!r} is not a dotted path like engine.kv_budget_gib")
                if path == SEED_PATH:
                    raise ValueError(f"{where} axis {path}: give seeds with the top-level `seeds:` key")
                if path in seen:
                    raise ValueError(f"{where} axis {path} appears twice: keep one")
                if not values:
                    raise ValueError(f"{where} axis {path} has no values: give at least one")
                seen.add(path)
        if self.seeds is not None:
            if not self.seeds:
                raise ValueError("seeds is empty: give a count or at least one seed")
            known: set[int] = set()
            for seed in self.seeds:
                if seed in known:
                    raise ValueError(f"seeds list {seed} twice: list each seed once")
                known.add(seed)
        if self.search is not None and self.search.axis in seen:
            raise ValueError(f"search.axis {self.search.axis} is also a grid or zip axis: the search sets it,"
                             " so drop it from the grid")
        for axis in self.axes()[: len(self.grid) + len(self.zip)]:
            buckets: dict[Any, list[tuple[Any, ...]]] = {}  # by _bucket: linear, not quadratic
            for value in axis.values:
                bucket = buckets.setdefault(_bucket(value), [])
                if any(_same(v, value) for v in bucket):
                    twice = value[0] if len(value) == 1 else value
                    names = ", ".join(axis.paths)
                    raise ValueError(f"{axis.where} axis {names} lists {twice!r} twice: keep one")
                bucket.append(value)
        return self

    # ---- loading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, max_runs: int | None = None) -> SweepSpec:
        """Read a spec file; ``base`` may name a run YAML relative to the spec's folder.

        ``max_runs`` refuses a seed count above it before the seed list is built (the whole
        count is checked by the caller, with :meth:`count`, before :meth:`expand`)."""
        path = Path(path)
        data = read_yaml(path, "sweep spec")
        if isinstance(data.get("base"), str):
            data["base"] = read_yaml(path.parent / data["base"], "base run config")
        try:
            return cls.model_validate(data, context={"max_runs": max_runs})
        except ValidationError as exc:
            first = exc.errors()[0]
            if not first["loc"]:  # a whole-spec check (_check_axes) says which axis itself
                raise ConfigError(f"{path}: {first['msg'].removeprefix('Value error, ')}") from None
            raise ConfigError(format_validation_error(exc, source=str(path), model=cls)) from None

    def to_yaml(self) -> str:
        """The resolved spec (base inline, seeds listed), as written beside the dataset."""
        text: str = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, default_flow_style=None)
        return text

    # ---- expansion -------------------------------------------------------------------------

    def axes(self) -> list[Axis]:
        """Grid axes, then zip groups, then seeds: the digits of a run's index, last fastest."""
        out = [Axis((path,), tuple((v,) for v in values), "grid") for path, values in self.grid.items()]
        for i, group in enumerate(self.zip):
            paths = tuple(group)
            out.append(Axis(paths, tuple(zip(*(group[p] for p in paths), strict=True)), f"zip[{i}]"))
        if self.seeds is not None:
            out.append(Axis((SEED_PATH,), tuple((s,) for s in self.seeds), "seeds"))
        return out

    def count(self) -> int:
        return math.prod(len(axis.values) for axis in self.axes())

    def expand(self, source: str = "") -> Plan:
        """Validate every run; return their ids in index order and the axis columns' types.

        With a ``search``, the runs are the cells' templates (every axis but the searched one,
        times the seeds) and each is validated with the searched axis at ``low`` and at ``high``.
        Raises :class:`ConfigError` on the first invalid run, naming the axis value at fault.
        """
        expander = _Expander(self, source)
        run_ids: list[str] = []
        seen: dict[str, int] = {}
        kinds: dict[str, set[str]] = {col: set() for col in expander.columns}
        traces: set[tuple[str, str, float, int | None]] = set()
        for index in range(expander.count):
            run = expander.run_at(index)
            expander.check_numbers(run, index)
            workload = run.config.workload
            if isinstance(workload, TraceWorkload):
                traces.add((workload.path, workload.format, workload.time_scale, workload.limit))
            if run.run_id in seen:
                other = expander.describe(seen[run.run_id])
                raise ConfigError(
                    f"{source or self.name}: runs {other} and {expander.describe(index)} resolve to the"
                    " same config: drop one of the values"
                )
            seen[run.run_id] = index
            run_ids.append(run.run_id)
            for col, value in run.axis_values.items():
                kinds[col].add(_kind(value))
            if self.search is not None:
                for end in ("low", "high"):
                    value = getattr(self.search, end)
                    value = int(value) if float(value).is_integer() else value  # 8, not 8.0, in messages
                    extra = {self.search.axis: value}
                    probe = expander.run_at(index, extra=extra, extra_where=f"search.{end}")
                    expander.check_numbers(probe, index)
                    value = _resolved(probe.config, self.search.axis)
                    kinds.setdefault(self.search.axis, set()).add(_kind(value))
        types = {col: _column_type(k) for col, k in kinds.items()}
        if self.search is not None:
            self.search.check_type(types[self.search.axis], source or self.name)
        return Plan(self, source, run_ids, types, expander, traces)


@dataclass(frozen=True)
class Axis:
    """One digit of the run index: a grid axis, a zip group, or the seeds."""

    paths: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]  # per position, one value for each path
    where: str  # "grid", "zip[i]" or "seeds"


@dataclass(frozen=True)
class RunSpec:
    """One run: its id, validated config and canonical JSON, and its axis columns' values."""

    index: int
    run_id: str
    config: SimConfig
    config_json: str
    axis_values: dict[str, Any]  # column (dotted path) -> scalar value

    @property
    def seed(self) -> int:
        return self.config.run.seed


@dataclass(frozen=True)
class Plan:
    """A validated expansion: ids of every run (cheap to hold) and runs rebuilt on demand, so a
    20,000-run sweep never holds 20,000 configs."""

    spec: SweepSpec
    source: str
    run_ids: list[str]  # in index order
    axis_types: dict[str, str]  # axis column -> "int" | "float" | "str" | "bool"
    _expander: _Expander
    traces: set[tuple[str, str, float, int | None]] = field(default_factory=set)  # see check_traces

    def __len__(self) -> int:
        return len(self.run_ids)

    def run_at(self, index: int) -> RunSpec:
        return self._expander.run_at(index, self.axis_types)

    def runs(self, indices: list[int] | range | None = None) -> Iterator[RunSpec]:
        for index in range(len(self)) if indices is None else indices:
            yield self.run_at(index)

    def describe(self, index: int) -> str:
        """``workload.users=4 engine.prefix_caching='off' seed=0``: the axis values of one run, as
        resolved where they are columns (``off`` rather than YAML's ``False``)."""
        return self._expander.describe(index, self.run_at(index).axis_values)

    def probe_at(self, index: int, extra: dict[str, Any]) -> RunSpec:
        """Run ``index`` with more paths set (a capacity search's probe: the searched axis and the
        per-request SLO); the id follows the same rule as every run's, from the resolved config."""
        return self._expander.run_at(index, self.axis_types, extra=extra)

    @property
    def seeds_per_cell(self) -> int:
        """Runs per cell: the seeds axis is the last digit of the run index."""
        axes = self._expander.axes
        return len(axes[-1].values) if axes and axes[-1].where == "seeds" else 1


class _Expander:
    def __init__(self, spec: SweepSpec, source: str) -> None:
        self.spec = spec
        self.source = source or spec.name
        self.axes = spec.axes()
        self.count = spec.count()
        # Setting shorter paths first lets `gpu.memory_gib` refine a `gpu` axis value.
        self.order = sorted(
            ((a, j) for a, axis in enumerate(self.axes) for j in range(len(axis.paths))),
            key=lambda aj: self.axes[aj[0]].paths[aj[1]].count("."),
        )
        self.columns = [
            path
            for axis in self.axes
            if axis.where != "seeds"
            for j, path in enumerate(axis.paths)
            if not (path in _CATALOG_PATHS and all(isinstance(v[j], str) for v in axis.values))
        ]
        self.radix = [len(axis.values) for axis in self.axes]

    def positions(self, index: int) -> list[int]:
        pos = [0] * len(self.axes)
        for a in range(len(self.axes) - 1, -1, -1):
            index, pos[a] = divmod(index, self.radix[a])
        return pos

    def describe(self, index: int, resolved: dict[str, Any] | None = None) -> str:
        return self._describe(self.positions(index), resolved or {})

    def _describe(self, pos: list[int], resolved: dict[str, Any]) -> str:
        parts = []
        for a, axis in enumerate(self.axes):
            for j, path in enumerate(axis.paths):
                name = "seed" if path == SEED_PATH else path
                parts.append(f"{name}={resolved.get(path, axis.values[pos[a]][j])!r}")
        return " ".join(parts) or "(the base config)"

    def run_at(self, index: int, types: dict[str, str] | None = None, extra: dict[str, Any] | None = None,
               extra_where: str = "search") -> RunSpec:
        """Run ``index``; ``extra`` paths (a search's axis) are set last, and are columns too."""
        pos = self.positions(index)
        raw = dict(self.spec.base)  # set_path copies what it changes: base and values stay intact
        for a, j in self.order:
            path = self.axes[a].paths[j]
            set_path(raw, path, self.axes[a].values[pos[a]][j], self._where(a, path))
        for path, value in (extra or {}).items():
            set_path(raw, path, value, f"{self.source}: {extra_where} {path}")
        try:
            cfg = SimConfig.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(self._blame(exc, pos, extra or {}, extra_where)) from None
        config_json = canonical_json(cfg)
        values = {}
        for a, axis in enumerate(self.axes):
            for j, path in enumerate(axis.paths):
                if path in self.columns:
                    value = _column_value(cfg, path, axis.values[pos[a]][j])
                    values[path] = value if types is None else coerce(value, types[path])
        if self.spec.search is not None and extra and self.spec.search.axis in extra:
            path = self.spec.search.axis
            value = _column_value(cfg, path, extra[path])
            values[path] = value if types is None or path not in types else coerce(value, types[path])
        return RunSpec(index, run_id_of(config_json), cfg, config_json, values)

    def check_numbers(self, run: RunSpec, index: int) -> None:
        """Refuse what a run's row or its simulation cannot take: integers beyond int64 (the
        columns' type), numbers that are not finite, a negative seed (numpy's rule)."""
        text = run.config_json
        # A quick look at the JSON text first (15 us; a walk of the parsed JSON costs 100 us a
        # run): "Infinity", "NaN", or a run of 19 digits (2**63 has 19; a float's JSON has <= 17).
        longest = max(map(len, text.translate(_NOT_DIGITS).split()), default=0)
        if not (run.seed < 0 or "Infinity" in text or "NaN" in text or longest >= 19):
            return
        bad = _bad_number(json.loads(text), ())
        if bad is None:
            return
        loc, value, why = bad
        dotted = ".".join(loc)
        pos = self.positions(index)
        for a, axis in enumerate(self.axes):
            for j, path in enumerate(axis.paths):
                if _related(path.split("."), list(loc)):
                    shown = axis.values[pos[a]][j]
                    raise ConfigError(f"{self.source}: {axis.where} axis {path} = {shown!r}:"
                                      f" {dotted} = {value!r}: {why}")
        where = "base" if not self.axes else f"base (run {self._describe(pos, {})})"
        raise ConfigError(f"{self.source}: {where}: {dotted} = {value!r}: {why}")

    def _where(self, a: int, path: str) -> str:
        return f"{self.source}: {self.axes[a].where} axis {path}"

    def _blame(self, exc: ValidationError, pos: list[int], extra: dict[str, Any], extra_where: str) -> str:
        """Name the axis value the first error is about, or the base when no axis matches."""
        loc = [str(x) for x in exc.errors()[0]["loc"]]
        for path, value in extra.items():
            if _related(path.split("."), loc):
                return (f"{self.source}: {extra_where} = {value!r} ({path}): "
                        + format_validation_error(exc, model=SimConfig))
        for a, axis in enumerate(self.axes):
            for j, path in enumerate(axis.paths):
                if _related(path.split("."), loc):
                    value = axis.values[pos[a]][j]
                    head = f"{self.source}: {axis.where} axis {path} = {value!r}: "
                    return head + format_validation_error(exc, model=SimConfig)
        where = "base" if not self.axes else f"base (run {self._describe(pos, {})})"
        return f"{self.source}: {where}: " + format_validation_error(exc, model=SimConfig)


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    """A YAML mapping from ``path``; any problem is a one-line :class:`ConfigError`."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: {_not_utf8(raw, exc)}: save the {what} as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        position = getattr(exc, "position", None)  # a ReaderError: a character YAML does not allow
        if mark is None and isinstance(position, int):
            at = f" at line {text.count(chr(10), 0, position) + 1}"
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{at}: {' '.join(str(problem).split())}") from None
    except RecursionError:
        raise ConfigError(f"{path}: the {what} is nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the {what} must be a YAML mapping, got {type(data).__name__}")
    return data


def _not_utf8(raw: bytes, exc: UnicodeDecodeError) -> str:
    """``not UTF-8 text: byte 0xff at line 3, column 7``."""
    line = raw.count(b"\n", 0, exc.start) + 1
    column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
    return f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at line {line}, column {column}"


def check_traces(plan: Plan) -> None:
    """Read every trace the runs replay (once each, as the runs will), so that a missing file or
    a bad line is a :class:`ConfigError` naming the file and line before any run starts."""
    from simcore.traces import load_trace

    for path, fmt, scale, limit in sorted(plan.traces, key=str):
        where = f"{plan.source}: workload.path {path}"
        try:
            load_trace(path, fmt, scale, limit)
        except ConfigError as exc:  # it names the file and line already
            raise ConfigError(f"{plan.source}: workload.path: {exc}") from None
        except UnicodeDecodeError as exc:
            raw = Path(path).read_bytes()
            raise ConfigError(f"{where}: {_not_utf8(raw, exc)}: save the trace as UTF-8") from None
        except csv.Error as exc:
            raw = Path(path).read_bytes()
            line = raw.count(b"\n", 0, raw.find(b"\0")) + 1 if b"\0" in raw else None
            at = f" at line {line}" if line else ""
            raise ConfigError(f"{where}: malformed CSV{at}: {' '.join(str(exc).split())}") from None
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read the trace: {exc.strerror or exc}") from None


def _bad_number(node: Any, loc: tuple[str, ...]) -> tuple[tuple[str, ...], Any, str] | None:
    """The first (location, value, why) in a config's JSON that a run cannot take, or None."""
    if isinstance(node, dict):
        for key, value in node.items():
            bad = _bad_number(value, (*loc, str(key)))
            if bad is not None:
                return bad
    elif isinstance(node, list):
        for i, value in enumerate(node):
            bad = _bad_number(value, (*loc, str(i)))
            if bad is not None:
                return bad
    elif isinstance(node, bool):
        return None
    elif isinstance(node, int):
        if not _INT_MIN <= node <= _INT_MAX:
            return loc, node, "too large: integers must fit in 64 bits"
        if loc == tuple(SEED_PATH.split(".")) and node < 0:
            return loc, node, "seeds must be >= 0"
    elif isinstance(node, float) and not math.isfinite(node):
        return loc, node, "must be a finite number"
    return None


def _bucket(value: tuple[Any, ...]) -> Any:
    """A hashable stand-in under which :func:`_same` values always fall together."""
    key = tuple((type(v), v) for v in value)
    try:
        hash(key)
    except TypeError:  # a mapping or list value: compare by type and size
        return tuple((type(v), len(v) if hasattr(v, "__len__") else 0) for v in value)
    return key


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same types (YAML's ``1`` and ``true`` are different values)."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def set_path(raw: dict[str, Any], path: str, value: Any, where: str) -> None:
    """Set ``a.b.c`` in ``raw``, creating missing levels; a catalog name becomes ``{name: ...}``.

    Copy on write: every nested dict on the path is replaced by a shallow copy before it is
    changed, so a shallow copy of a base dict can be varied without touching the base (and
    without a deep copy per run). ``where`` starts the error message.
    """
    *parents, leaf = path.split(".")
    node = raw
    for i, key in enumerate(parents):
        child = node.get(key)
        if child is None:
            child = {}
        elif isinstance(child, str):
            child = {"name": child}
        elif isinstance(child, dict):
            child = dict(child)
        else:
            above = ".".join(parents[: i + 1])
            raise ConfigError(f"{where} = {value!r}: {above} is {child!r}, not a mapping: vary {above}")
        node[key] = child
        node = child
    node[leaf] = value


def _related(path: list[str], loc: list[str]) -> bool:
    """Whether an error location is at, above or below an axis path (union tags in loc skipped)."""
    shorter, longer = (path, loc) if len(path) <= len(loc) else (loc, path)
    if not shorter or shorter[0] != longer[0]:
        return False
    it = iter(longer)
    return all(part in it for part in shorter)


def _resolved(cfg: SimConfig, path: str) -> Any:
    node: Any = cfg
    for key in path.split("."):
        node = node.get(key) if isinstance(node, dict) else getattr(node, key, None)
    return node


def _column_value(cfg: SimConfig, path: str, raw: Any) -> Any:
    """The resolved value when it is a scalar (``off`` -> "off"), else the value as written when
    that is a scalar (``user_tokens: 200``, ``model: Llama-3.2-1B``), else canonical JSON."""
    value = _resolved(cfg, path)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if raw is None or isinstance(raw, (bool, int, float, str)):
        return raw
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return json.dumps(value, sort_keys=True)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def _column_type(kinds: set[str]) -> str:
    kinds = kinds - {"null"}
    if len(kinds) == 1:
        return kinds.pop()
    if kinds == {"int", "float"}:
        return "float"
    return "str"  # mixed (or all null): written as JSON text


def coerce(value: Any, kind: str) -> Any:
    """Make an axis value fit its column type (ints in a float column, JSON text in a str one)."""
    if value is None:
        return None
    if kind == "float":
        return float(value)
    if kind == "str" and not isinstance(value, str):
        return json.dumps(value)
    return value


# Old private names, still imported by sweep/cmd_simulate.py.
_read_yaml = read_yaml
_set_path = set_path
