"""Executors run tasks (one simulation each) and yield one :class:`Outcome` per task as runs finish.

* :class:`SerialExecutor` runs them one after another in this process (for debugging).
* :class:`RayExecutor` sends batches of tasks to Ray workers: an embedded single-node Ray by
  default, an existing cluster with ``address`` (or ``RAY_ADDRESS``), the code shipped there as a
  runtime env. At most ``max_in_flight`` batches are out at a time, so the driver holds only those.

Whatever happens to one run, the sweep goes on, and every task yields exactly one outcome:

* an exception inside a simulation becomes a ``failed`` row (in :func:`run_one`);
* a run past its wall-time limit (``run_timeout``, ``--run-timeout``) is stopped and becomes a
  ``failed`` row whose error starts ``timeout:``. The simulation checks the limit itself
  (``simulate(cfg, wall_limit_s)``); a SIGALRM backstop, a little later, stops a run stuck
  outside the engine loop (Ray runs tasks on its workers' main thread, where signals work);
* a task whose worker process or node dies (SIGKILL, OOM killer, node lost) is retried by the
  driver, not by Ray, so it knows: a batch of several runs is split in halves and both are
  sent again (a crash that one run causes is cornered in log2(batch) steps, a random kill costs
  one resend); a one-run task is tried ``max_retries`` more times, then becomes a ``failed`` row
  ``worker died: ...``. ``lost_tasks`` and ``retried_runs`` count what was resent.

Executors read ``tasks`` lazily: they take the next task only when they have room for it, and
only after the caller has handled every outcome yielded so far. So ``tasks`` may be an iterator
that is empty now and holds more later (a capacity search puts a cell's next probe in it when
the cell's last one comes back); the executor is done when ``tasks`` is empty and nothing is in
flight.

Test hook: ``KVSWEEP_TEST_FAULTS="raise:<run_id>,exit:<run_id>,hang:<run_id>"`` (read by the
driver, shipped with every batch) makes those runs raise inside the simulation, kill their worker
process with ``os._exit`` (the serial executor raises instead, since the worker is the driver), or
sleep for ever outside the engine (where only the backstop stops them).
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from types import FrameType
from typing import Any

import pyarrow as pa

from simcore.api import simulate
from simcore.config import SimConfig
from simcore.engine import SimulationTimeout
from simcore.errors import ConfigError
from simcore.metrics import empty_summary

FAULTS_ENV = "KVSWEEP_TEST_FAULTS"
_FAULT_KINDS = ("raise", "exit", "hang")
_ERROR_CHARS = 2000


@dataclass(frozen=True)
class Task:
    """One run to do: its config as canonical JSON and the row columns known before running.

    Only ``run_id`` and ``config_json`` travel to a worker; ``head`` stays with the driver."""

    run_id: str
    config_json: str
    head: dict[str, Any]  # run_id, sweep, seed, context and axis columns, kvsweep_version, config_json


@dataclass(frozen=True)
class Result:
    """What a worker sends back for one run."""

    status: str  # ok | no_data | infeasible | failed
    error: str | None
    summary: dict[str, Any]  # every key of simcore.metrics.SUMMARY_FIELDS
    requests: pa.Table | None = None
    wall_s: float = 0.0  # seconds this run took in its worker, validation included


@dataclass(frozen=True)
class Outcome:
    """One finished run: its full ``runs/`` row and, if asked for, its per-request table."""

    row: dict[str, Any]
    requests: pa.Table | None = None
    wall_s: float = 0.0

    @property
    def status(self) -> str:
        return str(self.row["status"])


def finish(task: Task, result: Result) -> Outcome:
    row = {**task.head, "status": result.status, "error": result.error, **result.summary}
    return Outcome(row, result.requests, result.wall_s)


def failed_outcome(task: Task, error: str) -> Outcome:
    return finish(task, Result("failed", error[:_ERROR_CHARS], empty_summary()))


def parse_faults(text: str | None) -> dict[str, str]:
    """``"raise:ab12,exit:cd34"`` -> ``{"ab12": "raise", "cd34": "exit"}`` (the test hook)."""
    faults: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        kind, _, run_id = item.partition(":")
        if kind not in _FAULT_KINDS or not run_id:
            raise ConfigError(f"{FAULTS_ENV}: {item!r} is not raise:<run_id> or exit:<run_id>"
                              " (or hang:<run_id>)")
        faults[run_id] = kind
    return faults


class RunTimeout(Exception):
    """Raised by the SIGALRM backstop in a run past its limit (not a RuntimeError, so that no
    ``except RuntimeError`` in the simulation swallows it)."""


def _backstop_after(timeout_s: float) -> float:
    """When the backstop fires: the simulation's own check comes first, within a few hundred
    engine iterations; a second or 10% more is ample for that."""
    return timeout_s * 1.1 + 1.0


@contextmanager
def _backstop(timeout_s: float | None) -> Iterator[None]:
    """Raise :class:`RunTimeout` in this thread once ``timeout_s`` (plus grace) has passed.

    Only on the main thread of a Unix process (Ray workers run tasks there); elsewhere a no-op,
    leaving the simulation's own check."""
    usable = (timeout_s is not None and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return
    assert timeout_s is not None
    after = _backstop_after(timeout_s)

    def fire(signum: int, frame: FrameType | None) -> None:
        raise RunTimeout(f"run exceeded --run-timeout {timeout_s:g} s: stopped after {after:.3g} s"
                         " outside the engine loop")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, after)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _one_line(exc: BaseException) -> str:
    """``ValueError: bad thing (at engine.py:120 in step)``: the error column of a failed row."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    return text[:_ERROR_CHARS]


def run_one(run_id: str, config_json: str, *, save_requests: bool, faults: dict[str, str],
            in_worker: bool, timeout_s: float | None = None) -> Result:
    """Simulate one run, within ``timeout_s`` seconds of wall time if given.

    Never raises (a ``KeyboardInterrupt`` aside): errors, timeouts included, become failed results."""
    from sweep.store import requests_table  # pyarrow only where rows are built

    start = time.perf_counter()
    try:
        with _backstop(timeout_s):
            fault = faults.get(run_id)
            if fault == "exit" and in_worker:
                os._exit(17)
            if fault == "hang":
                while True:
                    time.sleep(0.05)
            if fault is not None:
                raise RuntimeError(f"injected fault ({fault}) for run {run_id}")
            cfg = SimConfig.model_validate_json(config_json)
            if save_requests and not cfg.run.record_requests:
                cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"record_requests": True})})
            result = simulate(cfg, wall_limit_s=timeout_s)
            requests = requests_table(result.requests) if result.requests is not None else None
        return Result(result.status, result.error, result.summary, requests, time.perf_counter() - start)
    except (SimulationTimeout, RunTimeout) as exc:
        error = f"timeout: {' '.join(str(exc).split())}"[:_ERROR_CHARS]
        return Result("failed", error, empty_summary(), None, time.perf_counter() - start)
    except Exception as exc:  # one run's bug must not end the sweep
        return Result("failed", _one_line(exc), empty_summary(), None, time.perf_counter() - start)


def run_batch(
    jobs: list[tuple[str, str]], save_requests: bool, faults: dict[str, str], in_worker: bool,
    timeout_s: float | None = None,
) -> list[Result]:
    """The body of one Ray task: several ``(run_id, config_json)``, so the task overhead is paid once."""
    return [
        run_one(run_id, config, save_requests=save_requests, faults=faults, in_worker=in_worker,
                timeout_s=timeout_s)
        for run_id, config in jobs
    ]


class SerialExecutor:
    """Runs every task in this process, in order. For debugging: a breakpoint in simcore works."""

    name = "serial"

    def __init__(self, *, save_requests: bool = False, faults: dict[str, str] | None = None,
                 run_timeout: float | None = None) -> None:
        self.save_requests = save_requests
        self.faults = faults or {}
        self.run_timeout = run_timeout
        self.workers = 1
        self.lost_tasks = 0
        self.retried_runs = 0

    def __enter__(self) -> SerialExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def describe(self) -> str:
        return "serial executor (this process)"

    def run(self, tasks: Iterator[Task], total: int) -> Generator[Outcome, None, None]:
        for task in tasks:
            result = run_one(task.run_id, task.config_json, save_requests=self.save_requests,
                             faults=self.faults, in_worker=False, timeout_s=self.run_timeout)
            yield finish(task, result)


class BatchSizer:
    """How many runs go into the next Ray task.

    A task costs about 1-2 ms of scheduling and transfer on top of its runs. Batches aim at
    ``target_s`` seconds of work (0.5 s keeps that overhead near 0.3%, far under 5%), but shrink
    so that at least ``tail_tasks`` tasks per worker remain for the runs left: the end of the
    sweep then stays spread over every worker. Until a first run is timed, a batch is one run.
    A fixed ``runs_per_task`` overrides all of this.
    """

    def __init__(self, fixed: int | None = None, target_s: float = 0.5, tail_tasks: int = 4,
                 max_size: int = 1000) -> None:
        self.fixed = fixed
        self.target_s = target_s
        self.tail_tasks = tail_tasks
        self.max_size = max_size
        self.runs = 0
        self.seconds = 0.0

    def observe(self, results: list[Result]) -> None:
        self.runs += len(results)
        self.seconds += sum(r.wall_s for r in results)

    def size(self, remaining: int, workers: int) -> int:
        if self.fixed is not None:
            return self.fixed
        if self.runs == 0:
            return 1
        per_run = max(self.seconds / self.runs, 1e-6)
        by_time = math.ceil(self.target_s / per_run - 1e-9)
        by_tail = math.ceil(remaining / (self.tail_tasks * max(workers, 1)))
        return max(1, min(by_time, by_tail, self.max_size))


class RayExecutor:
    """Batches of runs as Ray tasks, with a bounded number in flight.

    ``address=None`` and no ``RAY_ADDRESS``: an embedded single-node Ray with ``num_cpus`` CPUs
    (default all). With an address, joins that cluster; ``ship_code`` ("auto": when joining a
    cluster) sends the ``simcore`` and ``sweep`` packages along as a runtime env (``py_modules``),
    so the nodes need only the third-party dependencies. If Ray is already initialised in this
    process it is used as it is and left running.
    """

    name = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        runs_per_task: int | None = None,
        max_in_flight: int | None = None,
        max_retries: int = 3,
        ship_code: str = "auto",
        save_requests: bool = False,
        faults: dict[str, str] | None = None,
        run_timeout: float | None = None,
    ) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.sizer = BatchSizer(runs_per_task)
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.ship = ship_code == "always" or (ship_code == "auto" and self.address is not None)
        self.save_requests = save_requests
        self.faults = faults or {}
        self.run_timeout = run_timeout
        self.workers = 1
        self.lost_tasks = 0  # tasks whose worker or node died
        self.retried_runs = 0  # runs sent again because of that
        self._owned = False
        self._remote: Any = None
        self._checked_at = 0.0

    def __enter__(self) -> RayExecutor:
        import ray

        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
            if self.ship:
                kwargs["runtime_env"] = runtime_env()
            if self.address is None:
                kwargs.update(num_cpus=self.num_cpus, include_dashboard=False)
            try:
                ray.init(address=self.address, **kwargs)
            except ConnectionError as exc:
                raise ConfigError(f"--address {self.address}: no Ray cluster there ({exc})") from None
            self._owned = True
        # Ray does not retry (max_retries=0): the driver does, so that it can split the batch and
        # count what was lost (see the module docstring).
        self._remote = ray.remote(run_batch).options(num_cpus=1, max_retries=0, retry_exceptions=False)
        self._refresh_workers(force=True)
        return self

    def __exit__(self, *exc: object) -> None:
        import ray

        if self._owned:
            ray.shutdown()
            self._owned = False

    def describe(self) -> str:
        import ray

        where = f"cluster at {self.address}" if self.address else "embedded local Ray"
        shipped = ", code shipped as runtime env" if self.ship else ""
        return f"Ray {ray.__version__}, {where}, {self.workers} CPUs{shipped}"

    def _refresh_workers(self, force: bool = False) -> None:
        """Cluster CPUs, re-read every 10 s so an autoscaling cluster gets more tasks in flight."""
        import ray

        now = time.monotonic()
        if force or now - self._checked_at > 10.0:
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
            self._checked_at = now

    def run(self, tasks: Iterator[Task], total: int) -> Generator[Outcome, None, None]:
        """Yield outcomes as batches finish.

        Closing the generator early (Ctrl-C) abandons the batches in flight rather than calling
        ``ray.cancel``: cancelling a task as it completes crashes the driver in Ray 2.60 ("Tried to
        complete task that was not pending"), and ``ray.shutdown`` or the driver's exit ends them.
        """
        import ray
        from ray.exceptions import RayError, RayTaskError, RuntimeEnvSetupError

        pending: dict[Any, tuple[list[Task], int]] = {}  # ref -> (batch, tries of a one-run batch)
        retry: deque[tuple[list[Task], int]] = deque()  # batches whose worker died, to send again
        remaining = total
        source = iter(tasks)
        while True:
            self._refresh_workers()
            limit = self.max_in_flight or 2 * self.workers
            while len(pending) < limit:
                if retry:
                    batch, tries = retry.popleft()
                else:
                    batch, tries = list(islice(source, self.sizer.size(remaining, self.workers))), 0
                    remaining -= len(batch)
                    if not batch:
                        break
                jobs = [(task.run_id, task.config_json) for task in batch]
                ref = self._remote.remote(jobs, self.save_requests, self.faults, True, self.run_timeout)
                pending[ref] = (batch, tries)
            if not pending:
                return
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                batch, tries = pending.pop(ref)
                try:
                    results: list[Result] = ray.get(ref)
                except (RayTaskError, RuntimeEnvSetupError) as exc:
                    raise _task_error(exc) from None
                except RayError as exc:  # the worker or its node died: nothing of the batch is kept
                    self.lost_tasks += 1
                    if len(batch) > 1:
                        half = len(batch) // 2
                        retry.extend([(batch[:half], 0), (batch[half:], 0)])
                    elif tries < self.max_retries:
                        retry.append((batch, tries + 1))
                    else:
                        reason = " ".join(str(exc).split())[:300]
                        tried = f"{tries + 1} tries with this run alone in its task"
                        error = f"worker died: {type(exc).__name__}: {reason} ({tried})"
                        yield failed_outcome(batch[0], error)
                        continue
                    self.retried_runs += len(batch)
                    continue
                self.sizer.observe(results)
                for task, result in zip(batch, results, strict=True):
                    yield finish(task, result)


def _task_error(exc: Exception) -> Exception:
    """A Ray task that failed outside any run: most likely the nodes cannot import kvsweep."""
    found = re.findall(r"((?:ImportError|ModuleNotFoundError): [^\n]*)", str(exc))
    if isinstance(getattr(exc, "cause", None), ImportError) or found:
        reason = found[-1] if found else str(exc.cause)  # type: ignore[attr-defined]
        return ConfigError(
            f"the Ray workers cannot import kvsweep ({reason.strip()[:200]}):"
            " install its dependencies on the nodes, or use --ship-code always"
        )
    if "RuntimeEnv" in type(exc).__name__:
        reason = " ".join(str(exc).split())[:300]
        return ConfigError(f"Ray could not set up the runtime env on a node: {reason}")
    return exc


def runtime_env() -> dict[str, Any]:
    """Ship this checkout's ``simcore`` and ``sweep`` packages to the cluster's workers."""
    import simcore
    import sweep

    return {
        "py_modules": [str(Path(simcore.__file__).parent), str(Path(sweep.__file__).parent)],
        "excludes": ["__pycache__", "*.pyc"],
    }


def make_executor(kind: str, **options: Any) -> SerialExecutor | RayExecutor:
    if kind == "serial":
        return SerialExecutor(save_requests=options.get("save_requests", False), faults=options.get("faults"),
                              run_timeout=options.get("run_timeout"))
    return RayExecutor(**options)
