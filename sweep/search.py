"""SLO capacity search: per cell, the most load (or the least memory) that meets an SLO.

A sweep spec may add::

    search:
      axis: workload.users          # or workload.request_rate / session_rate, gpu.memory_gib, ...
      slo: {ttft_p99_s: 1.0}        # every limit must hold (see sweep.slo); or "ttft_p99_s<1"
      low: 1
      high: 1024
      resolution: 1                 # grid step of the answer (default 1 on integer axes, else
                                    #   1% of high); the answer is a point of that grid
      goal: max                     # max: the most that meets it (load axes, the default);
                                    #   min: the least (memory axes, the default there)

A *cell* is one value of every grid and zip axis; the spec's seeds are run at every probe. Per
cell, :class:`sweep.boundary.Bisection` proposes values (exponential, then binary search); a
*probe* is the cell's runs at one value, one per seed, and it meets the SLO when every seed's
run does (:mod:`sweep.slo`: ok, not overloaded, every limit within). The probes are ordinary
runs: the same config rule and ``run_id`` as a grid run with that value (plus ``run.slo``, the
per-request thresholds, so the simulator counts goodput), written to ``runs/`` like any run, and
a resumed search finds them there instead of running them again. The executors do not know
they are searching: :class:`SearchDriver` hands them a :class:`TaskFeed` that grows as probes
finish, so every cell advances as soon as its own probe is done, all cells at once.

The answers, one row per cell, go to ``capacity/`` (:mod:`sweep.capacity`).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from simcore.errors import ConfigError
from sweep.boundary import Bisection
from sweep.slo import Slo

if TYPE_CHECKING:
    import pandas as pd

    from sweep.executors import Outcome, Task
    from sweep.spec import Plan

#: Axes where more is harder (the search finds the most that meets the SLO) ...
LOAD_AXES = ("workload.users", "workload.session_rate", "workload.request_rate")
#: ... and where less is harder (it finds the least).
RESOURCE_AXES = ("gpu.memory_gib", "engine.kv_budget_gib", "engine.gpu_memory_utilization")
_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class SearchSpec(BaseModel):
    """The ``search:`` block of a sweep spec (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    axis: str = Field(description="dotted path of the searched setting, e.g. workload.users")
    slo: dict[str, float] | str = Field(description="limits on run metrics: {ttft_p99_s: 1.0}")
    low: float = Field(ge=0, description="the lowest value searched")
    high: float = Field(gt=0, description="the highest value searched")
    resolution: float | None = Field(default=None, gt=0, description="grid step of the answer")
    goal: Literal["max", "min"] | None = Field(default=None, description="max: most meeting it; min: least")

    @field_validator("axis")
    @classmethod
    def _check_axis(cls, value: str) -> str:
        if not _PATH_RE.match(value):
            raise ValueError(f"{value!r} is not a dotted path like workload.users")
        if value == "run.seed":
            raise ValueError("the seed is not a setting to search: list seeds with `seeds:`")
        return value

    @field_validator("slo")
    @classmethod
    def _check_slo(cls, value: dict[str, float] | str) -> dict[str, float] | str:
        _parse_slo(value)
        return value

    @model_validator(mode="after")
    def _check_range(self) -> SearchSpec:
        if not self.low < self.high:
            raise ValueError(f"search.low ({self.low:g}) must be below search.high ({self.high:g})")
        if self.goal is None and self.axis not in LOAD_AXES + RESOURCE_AXES:
            raise ValueError(
                f"search.axis {self.axis}: say whether to find the most (goal: max) or the"
                " least (goal: min) value that meets the SLO"
            )
        return self

    @property
    def direction(self) -> str:
        """``max`` or ``min``: the goal, or the axis's usual one."""
        return self.goal or ("max" if self.axis in LOAD_AXES else "min")

    @property
    def objective(self) -> Slo:
        return _parse_slo(self.slo)

    def step(self, integer: bool) -> float:
        """The grid step: ``resolution``, else 1 on integer axes and 1% of ``high`` on others."""
        if self.resolution is not None:
            return self.resolution
        return 1.0 if integer else self.high / 100

    def check_type(self, kind: str, source: str) -> None:
        """Refuse a search the axis cannot take: a non-numeric axis, fractions on an integer one."""
        if kind not in ("int", "float"):
            raise ConfigError(
                f"{source}: search.axis {self.axis} takes {kind} values: search a numeric setting"
            )
        if kind == "int":
            for name in ("low", "high", "resolution"):
                value = getattr(self, name)
                if value is not None and not float(value).is_integer():
                    raise ConfigError(
                        f"{source}: search.{name} = {value:g}: {self.axis} is a whole number:"
                        " give a whole number"
                    )

    def bisection(self, integer: bool) -> Bisection:
        low, high = (int(self.low), int(self.high)) if integer else (self.low, self.high)
        return Bisection(low, high, self.step(integer), self.direction, integer)


def _parse_slo(value: dict[str, float] | str) -> Slo:
    try:
        return Slo.parse(value) if isinstance(value, str) else Slo.from_mapping(value, where="search.slo")
    except ConfigError as exc:
        raise ValueError(str(exc).replace("--slo ", "search.slo ")) from None


def probe_settings(search: SearchSpec, value: float | int) -> dict[str, Any]:
    """The paths a probe sets: the axis, and ``run.slo`` (the per-request thresholds behind the
    runs' goodput) when the SLO limits a TTFT, TPOT or end-to-end latency."""
    extra: dict[str, Any] = {search.axis: value}
    per_request = search.objective.per_request()
    if per_request:
        extra["run.slo"] = per_request
    return extra


class TaskFeed:
    """An iterator of tasks that can grow after it ran dry: the executors ask for more only when
    they have room and after the caller handled what they yielded (see :mod:`sweep.executors`)."""

    def __init__(self) -> None:
        self._queue: deque[Task] = deque()

    def __iter__(self) -> Iterator[Task]:
        return self

    def __next__(self) -> Task:
        if not self._queue:
            raise StopIteration
        return self._queue.popleft()

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, task: Task) -> None:
        self._queue.append(task)


@dataclass
class Cell:
    """One cell's search: its template runs (one per seed), the bisection and the probe in flight."""

    number: int
    runs: list[int]  # plan indices of the cell's seeds
    bisection: Bisection
    value: float | int | None = None  # the probe in flight
    rows: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # its runs' rows (None: running)
    probe_rows: list[dict[str, Any]] = field(default_factory=list)  # every probe run's row, for capacity/

    @property
    def done(self) -> bool:
        return self.value is None and bool(self.bisection.results)


class SearchDriver:
    """Runs the search of every cell of ``plan`` through an executor; ``known`` holds rows of
    probes already in the dataset (by ``run_id``), which are used instead of running them."""

    def __init__(self, plan: Plan, known: dict[str, dict[str, Any]], version: str) -> None:
        assert plan.spec.search is not None
        self.plan = plan
        self.search = plan.spec.search
        self.slo = self.search.objective
        self.known = known
        self.version = version
        self.feed = TaskFeed()
        self._owner: dict[str, Cell] = {}
        integer = plan.axis_types[self.search.axis] == "int"
        seeds = plan.seeds_per_cell
        self.cells = [
            Cell(n, list(range(n * seeds, (n + 1) * seeds)), self.search.bisection(integer))
            for n in range(len(plan) // seeds)
        ]
        self.reused = 0  # probe runs found in the dataset

    @property
    def remaining_bound(self) -> int:
        """At most this many runs are still to come (for the progress bar)."""
        seeds = self.plan.seeds_per_cell
        left = sum(c.bisection.max_probes() - len(c.bisection.results) for c in self.cells if not c.done)
        return max(left * seeds, len(self.feed))

    def start(self) -> None:
        """Propose every cell's first probe (and settle those the dataset holds): the feed then
        holds the runs to start with, empty when the dataset answers every cell already."""
        for cell in self.cells:
            self._advance(cell)

    def drive(self, executor: Any) -> Generator[Outcome, None, None]:
        """Run the feed through ``executor``; yield each outcome after the search took note of it
        (and put the cell's next probe in the feed). Call :meth:`start` first."""
        outcomes = executor.run(self.feed, self.remaining_bound)
        try:
            for outcome in outcomes:
                self._observe(outcome)
                yield outcome
        finally:
            outcomes.close()

    def _advance(self, cell: Cell) -> None:
        """Propose the cell's next probes; settle at once those the dataset already holds."""
        from sweep.executors import Task
        from sweep.store import row_head

        while True:
            value = cell.bisection.next()
            cell.value, cell.rows = value, {}
            if value is None:
                return
            extra = probe_settings(self.search, value)
            for index in cell.runs:
                run = self.plan.probe_at(index, extra)
                if run.run_id in self.known:
                    self.reused += 1
                    cell.rows[run.run_id] = self.known[run.run_id]
                else:
                    cell.rows[run.run_id] = None
                    self._owner[run.run_id] = cell
                    self.feed.put(
                        Task(run.run_id, run.config_json, row_head(run, self.plan.spec.name, self.version))
                    )
            if any(row is None for row in cell.rows.values()):
                return  # wait for its runs
            self._settle(cell)

    def _observe(self, outcome: Outcome) -> None:
        cell = self._owner.pop(str(outcome.row["run_id"]), None)
        if cell is None:
            return
        cell.rows[str(outcome.row["run_id"])] = outcome.row
        if all(row is not None for row in cell.rows.values()):
            self._settle(cell)
            self._advance(cell)

    def _settle(self, cell: Cell) -> None:
        import pandas as pd

        rows = [row for row in cell.rows.values() if row is not None]
        cell.probe_rows.extend(rows)
        meets = bool(self.slo.meets(pd.DataFrame(rows)).all())
        assert cell.value is not None
        cell.bisection.record(cell.value, meets)

    def capacity(self) -> pd.DataFrame:
        """One row per finished cell (see :mod:`sweep.capacity`)."""
        import pandas as pd

        from sweep.capacity import capacity_rows

        probes = [row for cell in self.cells if cell.done for row in cell.probe_rows]
        if not probes:
            return capacity_rows(pd.DataFrame(), self.search.axis, self.slo, self.search.direction, [])
        cell_keys = [c for c in self.plan.axis_types if c != self.search.axis]
        ends = (self.search.low, self.search.high)
        return capacity_rows(
            pd.DataFrame(probes), self.search.axis, self.slo, self.search.direction, cell_keys, ends=ends
        )
