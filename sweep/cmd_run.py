"""``kvsweep plan SPEC`` and ``kvsweep run SPEC --out DIR``.

``plan`` expands and validates a sweep spec and shows its axes and a few runs. ``run`` executes
the runs not yet in DIR (on Ray by default) and appends them to DIR's Parquet dataset; running
the same command again resumes, after checking every part DIR holds (damaged ones are moved to
DIR/_quarantine/ and their runs done again; see :mod:`sweep.store`).

All input is checked before any work: the spec, every run's config, the traces they replay, and
the number of runs (``--max-runs``). Exit status: 0 when every run of this invocation is ok,
infeasible or no_data (a server vLLM would refuse, a run that measured nothing: answers about the
input, not failures of the tool; no_data runs get a warning line, since their figures are empty);
1 when some failed (their rows hold the error; timeouts start ``timeout:``); 2 for bad input or
an output location that cannot be written, with nothing run; 3 when writing failed mid-sweep
(disk full, say): what finished is saved in whole parts, rerun to resume; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Generator, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

from simcore import __version__
from sweep.progress import Progress
from sweep.spec import Plan, RunSpec, SweepSpec

if TYPE_CHECKING:
    from sweep.executors import Outcome, Task
    from sweep.search import SearchDriver
    from sweep.store import Dataset, OutputError, RunsWriter

DEFAULT_OUT = "results/{name}"
DEFAULT_MAX_RUNS = 1_000_000
EXIT_OUTPUT = 3


def _load(path: str, max_runs: int = DEFAULT_MAX_RUNS) -> Plan:
    """Validate everything about the input before any work; bad input is a :class:`ConfigError`."""
    from simcore.errors import ConfigError
    from sweep.spec import check_traces

    try:
        spec = SweepSpec.load(path, max_runs=max_runs)
        count = spec.count()
        if count > max_runs:
            sizes = " x ".join(str(len(axis.values)) for axis in spec.axes())
            raise ConfigError(f"{path}: the sweep expands to {count:,} runs ({sizes}), more than --max-runs"
                              f" {max_runs:,}: shrink the grid or raise --max-runs")
        plan = spec.expand(source=path)
        check_traces(plan)
    except ConfigError:
        raise
    except Exception as exc:  # never a traceback for bad input
        text = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        raise ConfigError(f"{path}: cannot use this spec ({text}); if the spec looks right, this is a"
                          " kvsweep bug: please report it") from None
    return plan


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value > 0 and value < 10**9):
        raise argparse.ArgumentTypeError(f"{text} must be a number of seconds above 0")
    return value


def _add_max_runs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-runs", type=_positive, default=DEFAULT_MAX_RUNS, metavar="N",
                        help="refuse a sweep of more runs than this, before any work"
                             f" (default {DEFAULT_MAX_RUNS:,})")


# ---- plan ------------------------------------------------------------------------------------


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="sweep spec YAML (e.g. configs/sweeps/quickstart.yaml)")
    parser.add_argument("--examples", type=int, default=5, metavar="N", help="runs to show (default 5)")
    parser.add_argument("--out", metavar="DIR", help="also say how many runs DIR already holds")
    parser.add_argument("--probe-runs", type=int, default=5, metavar="N",
                        help="time N of the runs here, spread over the grid, to estimate the sweep's"
                             " run time (default 5; 0: no estimate)")
    parser.add_argument("--num-cpus", type=_positive, metavar="N",
                        help="CPUs the estimate divides the work over (default: this machine's)")
    _add_max_runs(parser)


def _show(value: Any) -> str:
    """A value as YAML would print it: ``false``, ``null``, ``4``, ``prefix``."""
    return json.dumps(value) if value is None or isinstance(value, (bool, dict, list)) else str(value)


def _values_text(values: list[str], limit: int = 8) -> str:
    return ", ".join(values[:limit]) + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def main_plan(args: argparse.Namespace) -> int:
    plan = _load(args.spec, args.max_runs)
    spec = plan.spec
    axes = spec.axes()
    about = f" - {spec.description}" if spec.description else ""
    cells = len(plan) // plan.seeds_per_cell
    size = f"{len(plan)} runs" if spec.search is None else f"capacity search of {cells} cells"
    print(f"sweep {spec.name} ({args.spec}): {size}{about}")
    width = max([len(", ".join(a.paths)) for a in axes] + [5])
    for axis in axes:
        names = "seeds" if axis.where == "seeds" else ", ".join(axis.paths)
        values = [_show(v[0]) if len(v) == 1 else "(" + ", ".join(map(_show, v)) + ")" for v in axis.values]
        print(f"  {axis.where:<7} {names:<{width}}  {len(values):>3} x  {_values_text(values)}")
    if spec.search is not None:
        return _plan_search(args, plan)
    if axes:
        print(f"  = {' x '.join(str(len(a.values)) for a in axes)} = {len(plan)} runs")
    else:
        print("  no axes: the base config is the one run")
    _axis_columns(plan)
    shown = min(args.examples, len(plan))
    if shown:
        print(f"examples ({shown} of {len(plan)}):")
        step = max(1, len(plan) // shown)
        for index in range(0, step * shown, step):
            print(f"  {plan.run_ids[index]}  {plan.describe(index)}")
    todo = list(range(len(plan)))
    if args.out:
        todo = _show_out(plan, args.out)
    if args.probe_runs > 0 and todo:
        runs = [plan.run_at(i) for i in _spread(todo, args.probe_runs)]
        print(estimate(runs, len(todo), args.num_cpus or os.cpu_count() or 1))
    return 0


def _axis_columns(plan: Plan) -> None:
    from sweep.store import runs_columns

    extra = [c for c in runs_columns(plan.axis_types) if c in plan.axis_types]
    print(f"axis columns in runs/: {', '.join(extra) if extra else '(none beyond the context columns)'}")


def _plan_search(args: argparse.Namespace, plan: Plan) -> int:
    """The plan of a capacity search: its cells, the searched range and a bound on the runs."""
    from sweep.search import probe_settings

    search = plan.spec.search
    assert search is not None
    seeds = plan.seeds_per_cell
    cells = len(plan) // seeds
    bisection = search.bisection(plan.axis_types[search.axis] == "int")
    most = bisection.max_probes()
    want = "most" if search.direction == "max" else "least"
    print(f"  search  {search.axis}: the {want} meeting {search.objective.describe()}, from {search.low:g} to"
          f" {search.high:g} in steps of {bisection.step:g} ({len(bisection.points)} values)")
    dense = len(plan) * len(bisection.points)
    print(f"  = {cells} cells x {seeds} seed(s); at most {most} probes per cell (exponential, then binary"
          f" search), so at most {cells * seeds * most:,} runs; a dense grid would be {dense:,}")
    _axis_columns(plan)
    if args.out:
        _show_out(plan, args.out, search=True)
    if args.probe_runs > 0:
        start = bisection.value(bisection.start)
        runs = [plan.probe_at(i, probe_settings(search, start)) for i in _spread(list(range(len(plan))),
                                                                                   args.probe_runs)]
        print(estimate(runs, cells * seeds * most, args.num_cpus or os.cpu_count() or 1, bound=True))
    return 0


def _spread(indices: list[int], count: int) -> list[int]:
    """``count`` of ``indices``, evenly spread (the middle of each of ``count`` equal slices)."""
    step = len(indices) / min(count, len(indices))
    return [indices[int(step * (k + 0.5))] for k in range(min(count, len(indices)))]


def _show_out(plan: Plan, out: str, search: bool = False) -> list[int]:
    """Say what ``out`` already holds of the plan (or warn, as `run` refuses, when it holds another
    sweep); return the indices of the runs still to do."""
    from sweep.store import Dataset

    dataset = Dataset(out)
    conflict = dataset.conflict(plan.spec.name, plan.spec.to_yaml())
    if conflict:
        print(f"kvsweep plan: warning: {conflict} (`kvsweep run` would refuse it)", file=sys.stderr)
        return list(range(len(plan)))
    found = dataset.scan()
    present = found.present
    if search:
        print(f"in {out}: {len(present)} probe runs, which a resumed search uses instead of running them")
        return []
    counts = Counter(present[rid] for rid in plan.run_ids if rid in present)
    have = sum(counts.values())
    shown = ", ".join(f"{k.replace('_', ' ')} {counts[k]}" for k in ("ok", "no_data", "infeasible", "failed"))
    print(f"in {out}: {have} present ({shown}), {len(plan) - have} to do")
    for path, why in found.damaged:
        print(f"  damaged: {path} ({why}): `kvsweep run` moves it aside and does its runs again")
    return [i for i, rid in enumerate(plan.run_ids) if rid not in present]


def estimate(runs: list[RunSpec], total: int, cpus: int, bound: bool = False) -> str:
    """Run ``runs`` here and extrapolate their mean wall time to ``total`` runs spread over
    ``cpus`` workers (``bound``: ``total`` is an upper bound). Rough: runs differ in cost."""
    from sweep.executors import run_one
    from sweep.progress import format_duration

    times = []
    for run in runs:
        result = run_one(run.run_id, run.config_json, save_requests=False, faults={}, in_worker=False)
        times.append(result.wall_s)
    mean = sum(times) / len(times)
    work = mean * total
    # the sweep cannot end sooner than its slowest run, nor spread fewer runs than CPUs over all CPUs
    wall = max(work / min(cpus, total), max(times))
    spread = f"{min(times):.2g}-{max(times):.2g} s" if len(times) > 1 else f"{times[0]:.2g} s"
    upto = "at most " if bound else ""
    return (f"estimate: {len(times)} probe run(s) took {spread} (mean {mean:.2g} s): {upto}{total:,} runs"
            f" ~ {upto}{format_duration(work)} of CPU time, ~ {upto}{format_duration(wall)} on {cpus} CPUs"
            f" (rough: runs differ in cost; --probe-runs N times more of them)")


# ---- run ---------------------------------------------------------------------------------------


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="sweep spec YAML (e.g. configs/sweeps/quickstart.yaml)")
    parser.add_argument("--out", metavar="DIR",
                        help="dataset location: a path or a pyarrow.fs URI such as s3://bucket/prefix"
                             f" (default {DEFAULT_OUT.format(name='<sweep name>')})")
    parser.add_argument("--executor", choices=("ray", "serial"), default="ray",
                        help="ray (default) or serial: every run in this process, for debugging")
    parser.add_argument("--address", metavar="ADDR",
                        help="join this Ray cluster (default: $RAY_ADDRESS, else an embedded local Ray)")
    parser.add_argument("--num-cpus", type=_positive, metavar="N",
                        help="CPUs of the embedded local Ray (default: all)")
    parser.add_argument("--ship-code", choices=("auto", "always", "never"), default="auto",
                        help="send simcore/ and sweep/ to the workers as a Ray runtime env"
                             " (auto: when joining a cluster)")
    parser.add_argument("--runs-per-task", type=_positive, metavar="N",
                        help="runs per Ray task (default: sized so each task has ~0.5 s of work)")
    parser.add_argument("--max-in-flight", type=_positive, metavar="N",
                        help="Ray tasks out at a time (default: 2 x cluster CPUs)")
    parser.add_argument("--max-retries", type=int, default=3, metavar="N",
                        help="times a run is sent again when its worker or node dies, once alone in"
                             " its task (default 3); then it is a failed row")
    parser.add_argument("--run-timeout", type=_seconds, metavar="SECONDS",
                        help="stop a run after this much wall time and record it as failed"
                             " (error `timeout: ...`); the sweep goes on (default: no limit)")
    _add_max_runs(parser)
    parser.add_argument("--save-requests", action="store_true",
                        help="also write every request of every run under DIR/requests/")
    parser.add_argument("--retry-failed", action="store_true", help="run again the runs DIR holds as failed")
    parser.add_argument("--part-rows", type=_positive, default=1000, metavar="N",
                        help="rows per runs/ part file (default 1000)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar (default: a bar on a terminal, else a line every 30 s);"
                             " --no-progress prints none")


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main_run(args: argparse.Namespace) -> int:
    from sweep.executors import FAULTS_ENV, make_executor, parse_faults
    from sweep.store import Dataset, runs_schema

    started = time.monotonic()
    plan = _load(args.spec, args.max_runs)
    faults = parse_faults(os.environ.get(FAULTS_ENV))
    out = args.out or DEFAULT_OUT.format(name=plan.spec.name)
    dataset = Dataset(out)
    schema = runs_schema(plan.axis_types)
    with dataset.lock():
        dataset.prepare(plan.spec.name, plan.spec.to_yaml(), schema, __version__)
        found = dataset.scan(schema)
        for warning in dataset.repair(found):
            print(f"kvsweep run: warning: {warning}", file=sys.stderr)
        dropped = dataset.drop_failed() if args.retry_failed else 0
        present = {k: v for k, v in found.present.items() if not (dropped and v == "failed")}
        if plan.spec.search is not None:
            return _run_search(args, plan, dataset, present, started, faults)
        todo = [i for i, run_id in enumerate(plan.run_ids) if run_id not in present]
        skipped = len(plan) - len(todo)
        note = f", {dropped} failed rows dropped to retry" if dropped else ""
        print(f"kvsweep run: sweep {plan.spec.name}: {len(plan)} runs, {skipped} already in {out}{note},"
              f" {len(todo)} to do", file=sys.stderr)
        if not todo:
            print(f"kvsweep run: nothing to do: {out} holds every run of {args.spec}", file=sys.stderr)
            return 0
        with make_executor(args.executor, **_executor_options(args, faults)) as executor:
            print(f"kvsweep run: on {executor.describe()}", file=sys.stderr)
            writer = dataset.writer(schema, part_rows=args.part_rows)
            progress = Progress(len(todo), plan.spec.name, bar=args.progress)
            stop = _drive(executor.run(_tasks(plan, todo), len(todo)), dataset, writer, progress)
            lost, retried = executor.lost_tasks, executor.retried_runs
    return _summary(args, out, started, progress, writer, skipped, stop, lost, retried)


def _executor_options(args: argparse.Namespace, faults: dict[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {"save_requests": args.save_requests, "faults": faults,
                               "run_timeout": args.run_timeout}
    if args.executor == "ray":
        options.update(
            address=args.address, num_cpus=args.num_cpus, runs_per_task=args.runs_per_task,
            max_in_flight=args.max_in_flight, max_retries=args.max_retries, ship_code=args.ship_code,
        )
    return options


def _run_search(args: argparse.Namespace, plan: Plan, dataset: Dataset, present: dict[str, str],
                started: float, faults: dict[str, str]) -> int:
    """A capacity search (:mod:`sweep.search`): probes as runs until every cell's boundary is
    known; the answers to DIR/capacity/. Probes already in DIR are used, not run again."""
    import pyarrow as pa

    from sweep.capacity import summary_lines
    from sweep.executors import make_executor
    from sweep.search import SearchDriver
    from sweep.store import runs_schema

    search = plan.spec.search
    assert search is not None
    driver = SearchDriver(plan, _known_rows(dataset, present), __version__)
    driver.start()
    print(f"kvsweep run: capacity search {plan.spec.name}: {len(driver.cells)} cells x {plan.seeds_per_cell}"
          f" seed(s), {search.axis} from {search.low:g} to {search.high:g} ({search.direction} meeting"
          f" {driver.slo.describe()}); {driver.reused} probe runs already in {dataset}, {len(driver.feed)}"
          " to start", file=sys.stderr)
    schema = runs_schema(plan.axis_types)
    writer = dataset.writer(schema, part_rows=args.part_rows)
    progress = Progress(driver.remaining_bound, f"{plan.spec.name} (at most)", bar=args.progress)
    stop: OutputError | bool = False
    lost = retried = 0
    if len(driver.feed):
        with make_executor(args.executor, **_executor_options(args, faults)) as executor:
            print(f"kvsweep run: on {executor.describe()}", file=sys.stderr)
            stop = _drive(_tracking(driver.drive(executor), driver, progress), dataset, writer, progress)
            lost, retried = executor.lost_tasks, executor.retried_runs
    else:
        progress.close()
    table = driver.capacity()
    if not isinstance(stop, Exception):
        dataset.write_capacity(pa.Table.from_pandas(table, preserve_index=False))
    done = sum(cell.done for cell in driver.cells)
    print(f"kvsweep run: {done} of {len(driver.cells)} cells found -> {dataset}/capacity/", file=sys.stderr)
    for line in summary_lines(table):
        print(line)
    return _summary(args, str(dataset), started, progress, writer, driver.reused, stop, lost, retried)


def _tracking(outcomes: Generator[Outcome, None, None], driver: SearchDriver,
              progress: Progress) -> Generator[Outcome, None, None]:
    """Pass outcomes on; after each is stored, shrink the progress total to what may still come."""
    try:
        for outcome in outcomes:
            yield outcome
            progress.set_total(progress.done + driver.remaining_bound)
    finally:
        outcomes.close()


def _known_rows(dataset: Dataset, present: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The rows of the runs the dataset holds, by run_id (a resumed search reads its probes here)."""
    from sweep.analysis import load, runs_dataset

    if not present:
        return {}
    names = [c for c in runs_dataset(str(dataset)).schema.names if c != "config_json"]
    frame = load(str(dataset), columns=names)
    frame = frame[frame["run_id"].isin(list(present))]
    return {str(row["run_id"]): row for row in frame.to_dict("records")}


def _tasks(plan: Plan, todo: list[int]) -> Iterator[Task]:
    from sweep.executors import Task
    from sweep.store import row_head

    for index in todo:
        run = plan.run_at(index)
        yield Task(run.run_id, run.config_json, row_head(run, plan.spec.name, __version__))


def _summary(args: argparse.Namespace, out: str, started: float, progress: Progress, writer: RunsWriter,
             skipped: int, stop: OutputError | bool, lost: int, retried: int) -> int:
    """Print how the sweep ended; return the exit status (or raise KeyboardInterrupt: 130)."""
    from sweep.progress import format_duration

    elapsed = format_duration(time.monotonic() - started)
    how = "interrupted after" if stop is True else "stopped after" if stop else "done:"
    saved = f"{writer.rows_written} saved" if stop else f"{writer.parts_written} new parts"
    survived = f"; {lost} tasks lost with their worker or node, {retried} runs sent again" if lost else ""
    print(
        f"kvsweep run: {how} {progress.done} runs in {elapsed} ({progress.status_text()}){survived};"
        f" {skipped} were already there -> {out} (runs/: {saved})",
        file=sys.stderr,
    )
    if isinstance(stop, Exception):
        print(f"kvsweep run: error: {stop}; finished runs are saved in whole parts: fix that and rerun the"
              " same command to resume", file=sys.stderr)
        return EXIT_OUTPUT
    if stop:
        print("kvsweep run: rerun the same command to resume", file=sys.stderr)
        raise KeyboardInterrupt
    no_data = progress.counts["no_data"]
    if no_data:
        print(f"kvsweep run: warning: {no_data} runs measured no request (status no_data): see their `error`"
              " column; lengthen those runs or lower run.warmup_s", file=sys.stderr)
    failed = progress.counts["failed"]
    if failed:
        print(f"kvsweep run: {failed} runs failed: see their `error` column; --retry-failed runs them again",
              file=sys.stderr)
        return 1
    return 0


def _drive(
    outcomes: Generator[Outcome, None, None], dataset: Dataset, writer: RunsWriter, progress: Progress
) -> OutputError | bool:
    """Store outcomes as they come. Ctrl-C (or SIGTERM) stops it with whatever finished written
    as whole parts; returns True when interrupted, the :class:`OutputError` when DIR could not be
    written (the sweep stops: every further run would be lost too), else False."""
    from sweep.store import OutputError

    previous = _install(signal.SIGTERM, _sigterm_as_interrupt)  # after ray.init, which sets its own
    stop: OutputError | bool = False
    try:
        for outcome in outcomes:
            if outcome.requests is not None:
                dataset.write_requests(outcome.row["run_id"], outcome.requests)
            stored = writer.add(outcome.row)
            progress.update(str(stored["status"]))
    except KeyboardInterrupt:
        stop = True
    except OutputError as exc:
        stop = exc
    finally:
        outcomes.close()  # stops submitting; Ray ends what is still out
        if not isinstance(stop, Exception):
            try:
                writer.flush()  # finished runs become one more whole part
            except OutputError as exc:
                stop = exc
        progress.close()
        if previous is not _NOT_SET:
            _install(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    return stop


_NOT_SET = object()


def _install(signum: int, handler: Any) -> Any:
    """Set a signal handler where possible (only the main thread may); return the previous one,
    or ``_NOT_SET`` when nothing was changed."""
    try:
        return signal.signal(signum, handler)
    except ValueError:  # not the main thread
        return _NOT_SET
