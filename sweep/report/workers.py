"""The models' parts of a big report drawn in worker processes, one model per task.

A report's time goes into its models' figures and tables (on the 6,804-run capacity grid, two
thirds of it), and models are independent: each task gets one model's runs and returns its
sentences, section and findings; figure files are named per model, so the page is the same
whichever process drew what. Small datasets (under :data:`PARALLEL_RUNS` runs, or one model, or
one CPU) are drawn in this process: starting workers costs more than it saves there. The
command line asks for as many workers as CPUs (``kvsweep report --jobs``); ``write_report``
draws in this process unless given ``jobs``.

Workers come from a ``forkserver`` (a clean process that has imported the report once; forking
this process would copy the threads of pyarrow's pool), and are started before the dataset is
read, so their imports overlap with the reading.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: The fewest runs for which the models are drawn in worker processes.
PARALLEL_RUNS = 1000


def cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _warm() -> None:
    """Nothing: a first task, so the workers start (and import) while the dataset is read."""


def pool_for(runs: int, models: int, jobs: int) -> Executor | None:
    """At most ``jobs`` worker processes for a report of ``runs`` runs and ``models`` models, or
    None to draw here."""
    workers = min(jobs, cpus(), models)
    if runs < PARALLEL_RUNS or workers < 2:
        return None
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["sweep.report.models"])
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    for _ in range(workers):
        pool.submit(_warm)
    return pool


def start_all(fn: Callable[[T], R], jobs: Iterable[T], pool: Executor | None) -> Callable[[], list[R]]:
    """Start ``fn`` over ``jobs`` in ``pool`` (when there is one) and return what waits for the
    results, in order; without a pool the jobs run when it is called."""
    if pool is None:
        todo = list(jobs)
        return lambda: [fn(job) for job in todo]
    futures = [pool.submit(fn, job) for job in jobs]
    return lambda: [f.result() for f in futures]
