"""The SimPy side: the engine loop as a process, requests submitted by workload processes.

Timing rule (both scheduler modes): a request that arrives at or before the end of a step is
seen by the next step's schedule. The engine enforces it by letting every event due at the
current time run before it schedules: its own events are :class:`Late` (SimPy runs events due at
one time by priority, and these come after every ordinary event), so when the loop resumes,
everything else due then has run, however many engines share the environment.

Front-end latency (``engine.cost.frontend_latency_s``, d): the API server's path outside the
engine (HTTP, tokenising, the hop to the engine core and the first token's way back). Every
request pays the same d, which is the same as the request reaching the engine d after it was
sent: the engine's dynamics do not change, every client-visible time moves by d. So the engine
runs on arrival times, a client's completion event fires d later (before its think time), and
:meth:`Engine.run` adds d to every first-token and finish time at the end. The first token's
streaming lag (``first_token_lag_steps``, k) is client-side too: the client sees its first
text k of the request's own mean decode steps after the engine produced it (never after the
finish), which moves TTFT only.

CPU tier (``engine.cpu_offload_gib``, ``simcore/tiers.py``): blocks the GPU pool evicts are kept
in CPU memory. A request whose cached prefix continues there leaves the queue to wait for its
copies (``kvcache.LOADING``); they cross the replica's host link one copy at a time at
``gpu.host_bandwidth`` (``costmodel.host_load_seconds``), and when they land the request goes
back to the head of the queue with those tokens computed. Only that request waits.

Shared pool (``cluster.shared_pool_gib``, ``simcore/tiers.py``): one pool for all replicas,
written through by every block a replica computes (or, ``shared_pool_policy: on_eviction``,
fed by what leaves each replica's last local tier); a request's cached prefix may continue there
past its GPU and CPU runs. Its shared hits cross the network and the GPU's host link at the
slower of the two (``costmodel.shared_load_seconds``), in the same copy as its CPU hits, queued
on the same link (a replica's copies take it one at a time). Every step stores what it computed
(or evicted, :meth:`KVCacheManager.drain`) in the pool before the next event, so the stores of
all replicas enter it in simulated-time order; in fast mode the cluster's replicas are then
eager, each run only up to the next event (see ``simcore/cluster.py``), and a fast step stores
in the reference's order (``FastScheduler``).
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Generator, Sequence
from functools import partial
from typing import Any

import simpy
from simpy.events import EventPriority

from simcore.blocks import BlockPool, native_pool_class
from simcore.config import SimConfig
from simcore.costmodel import CostModel, cpu_tier_blocks, host_load_seconds, shared_load_seconds
from simcore.fastforward import FastScheduler
from simcore.hashing import TokenSeq
from simcore.kvcache import KVCacheManager, blocks_for
from simcore.metrics import Counters, RequestRecord
from simcore.request import Request
from simcore.scheduler import Scheduler
from simcore.steady import SteadyMonitor
from simcore.tiers import LruTier

STEADY_FIRST_CHECK = 200  # completions before until: steady first checks the run
STEADY_CHECK_GROWTH = 1.1  # ... then each time the completions grow by this factor
STEADY_MIN_STEP = 100  # ... and by at least this many


ROUNDING_S = 1e-9  # a completion this much in the past is due now (see Completion.fire_after)
LATE = EventPriority(2)  # after SimPy's NORMAL (1): an engine's own events run after all others due then


class Late(simpy.Event):
    """Fires ``delay`` seconds from now, after every ordinary event due at that time."""

    def __init__(self, env: simpy.Environment, delay: float) -> None:
        # Event.__init__'s fields set here directly: one call less per engine step
        self.env = env
        self.callbacks = []
        self._ok = True
        self._value = None
        env.schedule(self, LATE, delay)


def limit_reached(arrived: int, max_requests: float, now: float, stop_at: float
                  ) -> tuple[str, float | None] | None:
    """None while a run's limits allow another arrival; else why arrivals stop and when (the
    duration; None for the request count: the last arrival's time)."""
    if arrived < max_requests and now < stop_at:
        return None
    return ("num_requests", None) if arrived >= max_requests else ("duration_s", stop_at)


class SimulationTimeout(RuntimeError):
    """The run exceeded its wall-clock budget (``simulate(cfg, wall_limit_s=...)``)."""


class Completion(simpy.Event):
    """A request's completion event; it can fire a delay after the request completes.

    A client's think time follows every completed request, so folding it into the completion
    (``fire_after``) saves one SimPy event per request; a Timeout sets the same fields.
    """

    def fire_after(self, delay: float, value: Any) -> None:
        if delay < 0:  # SimPy's queue does not check: a past time would break event order
            if delay < -ROUNDING_S:
                raise ValueError(f"completion scheduled {delay:g} s in the past")
            # the clock passed the completion's time by a rounding error: SimPy's time after
            # a wait of t - now is now + (t - now), which need not be t (a replica's loop that
            # wakes at its lookahead, end + wait, then finds a request due at exactly end + wait)
            delay = 0.0
        self._ok = True
        self._value = value
        self.env.schedule(self, delay=delay)


class Engine:
    """One serving engine: a block pool, a scheduler and the SimPy loop that drives them.

    Alone, it owns its SimPy environment and request list. As a replica of a cluster
    (``simcore/cluster.py``) it shares both with the other replicas (``env``, ``records``: request
    ids and the run's request count are cluster-wide), runs its work up to the ``horizon`` the
    cluster computes instead of the next event in the environment, reports each event a
    workload may react to (a completion) through ``note`` and, for the cluster's steady check,
    its finished requests through ``on_finished``; the cluster then decides when arrivals stop
    (``decides_stop`` False: ``until: steady`` included).

    ``outstanding_requests`` / ``outstanding_tokens``: requests submitted here that have not
    finished, and their prompt tokens (what a router may ask; they change with the engine's
    state, at the start of the step that finishes a request, in both scheduler modes).

    In a cluster, fast mode plans decode windows instead of running them (``fastforward.py``)
    and defers its next step to its lookahead (:attr:`_defer`); whatever asks the engine for
    state that changed since, or sends it a request, first runs it up to that moment
    (:meth:`_cut`), so every answer is the one the reference mode gives.
    """

    def __init__(
        self, cfg: SimConfig, num_blocks: int, wall_limit_s: float | None = None, *,
        env: simpy.Environment | None = None, records: list[RequestRecord] | None = None, replica: int = 0,
        horizon: Callable[[], float] | None = None, note: Callable[[float], None] | None = None,
        on_finished: Callable[[Sequence[Request]], None] | None = None, decides_stop: bool = True,
        shared: LruTier | None = None,
    ) -> None:
        self.cfg = cfg
        self._deadline = None if wall_limit_s is None else time.perf_counter() + wall_limit_s
        self._wall_limit_s = wall_limit_s
        self.env = env if env is not None else simpy.Environment()
        self.replica = replica
        self._horizon = horizon if horizon is not None else self.env.peek
        self._note = note
        self._on_finished = on_finished
        self._outstanding_requests = 0
        self._outstanding_tokens = 0
        # the client waits of outstanding requests (request id -> wait), for the cluster's
        # lookahead, a min-heap of (wait, id) over them with stale entries popped lazily, and
        # their least (exact unless _min_stale: a request with the least wait finished since)
        self._wait_of: dict[int, float] = {}
        self._waits: list[tuple[float, int]] = []
        self._min_wait = math.inf
        self._min_stale = False
        self.next_start = 0.0  # when the loop runs next (inf while idle)
        self.lookahead = math.inf  # see _next
        self._was_cut = False
        self._resume_at = 0.0  # where the last cut left the loop's next step (see _cut)
        self._wake_at = -math.inf  # when the loop's timed wake fires (-inf: it waits for none)
        self.counters = Counters()
        e = cfg.engine
        caching = e.prefix_caching != "off"
        fast = cfg.run.mode == "fast"
        # the reference mode keeps the pure-Python pool; fast mode takes the compiled one if built
        pool_cls = (native_pool_class() or BlockPool) if fast else BlockPool
        self.pool = pool_cls(num_blocks, enable_caching=caching)
        blocks = cpu_tier_blocks(cfg) if caching else 0
        self.cpu = LruTier(blocks) if blocks else None
        self.shared = shared if caching else None  # the cluster's shared pool
        self.kv = KVCacheManager(self.pool, e.block_size, caching, hinted_lookup=fast, cpu=self.cpu,
                                 shared=self.shared,
                                 write_through=cfg.cluster.shared_pool_policy == "write_through")
        cls = FastScheduler if fast else Scheduler
        self.scheduler: Scheduler = cls(
            self.kv, CostModel(cfg), self.counters,
            max_num_seqs=e.max_num_seqs, max_num_batched_tokens=e.max_num_batched_tokens,
        )
        if isinstance(self.scheduler, FastScheduler) and note is not None:  # a replica of a cluster
            self.scheduler.tentative = True
            self.scheduler.horizon_fn = self._horizon  # asked for only when needed
        # a replica's planned window, and its next step after a cut, run when what they do
        # could first complete (its lookahead), not when they are due: anything that needs
        # this engine sooner runs them then (_cut). Not with a CPU tier or a shared pool: a copy
        # started by a path run late could land in the past
        self._defer = (isinstance(self.scheduler, FastScheduler) and note is not None and self.cpu is None
                       and self.shared is None)
        self.scheduler.load_time = self._load_time
        self._link_free = 0.0  # when the host link finishes the copies queued on it
        self._loads_at: list[float] = []  # when the CPU tier copies under way land (a min-heap)
        self.records: list[RequestRecord] = records if records is not None else []
        self._wake: simpy.Event | None = None
        run = cfg.run
        self._max_requests = cfg.max_requests if cfg.max_requests is not None else math.inf
        self._stop_s = run.duration_s if run.duration_s is not None else math.inf
        # when arrivals stopped and why (see stop_s); None while the run accepts them
        self.stop_reason: str | None = None
        self._stopped_at: float | None = None
        # until: steady checks the run after this many completions (see _check_steady); in a
        # cluster the cluster checks
        self._monitor = SteadyMonitor(cfg) if cfg.until_steady and decides_stop else None
        self._completed = 0
        self._next_check: float = STEADY_FIRST_CHECK if self._monitor is not None else math.inf
        self._frontend_s = e.cost.frontend_latency_s
        # a request of at most this many tokens (prompt + output) always fits: max_model_len and cache
        self._fits_tokens = min(cfg.max_model_len, (self.pool.usable_blocks * e.block_size) + 1)
        self._proc = self.env.process(self._loop())

    # ---- used by workloads -----------------------------------------------------------------
    def may_submit(self) -> bool:
        """Whether the run still accepts arrivals (request count, duration and the steady check)."""
        if self.stop_reason is None:
            reached = limit_reached(len(self.records), self._max_requests, self.env.now, self._stop_s)
            if reached is None:
                return True
            self.stop_reason, self._stopped_at = reached
        return False

    @property
    def stop_s(self) -> float:
        """When the run stopped accepting arrivals: the duration, the steady check's time, else
        the last arrival (its request count reached, or its workload ended)."""
        if self._stopped_at is not None:
            return self._stopped_at
        return self.records[-1].arrival_s if self.records else 0.0

    def timeout(self, delay: float) -> simpy.Timeout:
        self.counters.events += 1
        return self.env.timeout(delay)

    def submit(
        self, seq: TokenSeq, prompt: int, output: int, *, then_wait_s: float = 0.0,
        session_id: int = -1, turn: int = 0, profile: int = 0,
    ) -> simpy.Event:
        """Create and enqueue a request; the returned event fires ``then_wait_s`` simulated
        seconds after it completes (value True; a client's think time), or at once if it
        fails (value False)."""
        now = self.env.now
        req = Request(seq, prompt, output, rid=len(self.records), session_id=session_id, turn=turn,
                      profile=profile, arrival_s=now)
        req.record.replica = self.replica
        self.records.append(req.record)
        req.done = Completion(self.env)
        req.then_wait_s = then_wait_s + self._frontend_s
        self.counters.events += 1
        reason = self._never_fits(req)
        if reason:
            req.record.status = "failed"
            req.record.error = reason
            req.record.finish_s = now
            req.done.succeed(False)
            return req.done
        cut = self._behind(now)
        if cut:
            self._cut()
        self._outstanding_requests += 1
        self._outstanding_tokens += prompt
        if self._note is not None:
            wait = req.then_wait_s
            self._wait_of[req.rid] = wait
            heapq.heappush(self._waits, (wait, req.rid))
            if wait < self._min_wait:
                self._min_wait = wait
            # it completes after the loop's next step, no sooner than its wait after that (an
            # idle loop, next_start inf, runs again now, woken by this request)
            start = self.next_start if self.next_start < math.inf else now
            if start + wait < self.lookahead:
                self.lookahead = start + wait
        self.scheduler.add(req)
        if cut or self._defer:
            self._retarget()
        if self._wake is not None:
            self._wake.succeed()
            self._wake = None
        return req.done

    def _never_fits(self, req: Request) -> str:
        """Why ``req`` can never run (too long for the context or the whole cache), or ""."""
        if req.prompt_len + req.output_len <= self._fits_tokens:  # the bound both checks imply
            return ""
        ctx = self.cfg.max_model_len
        if req.prompt_len + req.output_len > ctx:
            return (f"prompt {req.prompt_len} + output {req.output_len} tokens exceed max_model_len {ctx}"
                    " (vLLM rejects the request)")
        need = blocks_for(req.max_kv_tokens, self.kv.block_size)
        if need > self.pool.usable_blocks:
            return f"needs {need} KV blocks but the cache holds {int(self.pool.usable_blocks)}"
        return ""

    # ---- the loop --------------------------------------------------------------------------
    def _loop(self) -> Generator[Any, Any, None]:
        env = self.env
        sched = self.scheduler
        clustered = self._note is not None  # only a replica keeps a lookahead (see _next)
        defer = self._defer
        # a replica's fast scheduler asks for the horizon itself, only when it needs it
        lazy = isinstance(sched, FastScheduler) and sched.horizon_fn is not None
        shared = self.shared is not None
        n = 0
        start = 0.0  # when the next step starts: now, or earlier after a deferred window (_defer)
        while True:
            n += 1
            if self._deadline is not None and n % 256 == 0 and time.perf_counter() > self._deadline:
                raise SimulationTimeout(
                    f"simulation exceeded its wall-time limit of {self._wall_limit_s:g} s "
                    f"at simulated time {env.now:.1f} s"
                )
            if not sched.has_work():
                yield from self._idle()
                start = env.now
                continue
            now = env.now
            horizon = math.inf if lazy else self._horizon()
            if self._loads_at and self._loads_at[0] < horizon:
                horizon = self._loads_at[0]
            end, finished = sched.advance(start, horizon)
            if shared:  # what the step evicted enters the shared pool now
                self.kv.drain()
            due = self._finished(now, finished) if finished else False
            if sched.loads:
                self._start_loads(now)
            if end == start:  # no step: what could run waits for CPU tier copies; a landing wakes us
                yield from self._idle()
                start = env.now
                continue
            if sched.plan is None:
                if end < now:  # a deferred start's chain stopped short (CHAIN paths): go on
                    start = (yield from self._let_due_run(end)) if due else end
                    continue
                self.counters.events += 1
                if clustered:
                    self._next(end)
                    self._wake_at = end
                yield Late(env, end - now)
                self._wake_at = -math.inf
                start = end
                continue
            self.counters.events += 1
            # a planned window runs when it ends (or, deferred, when its completions could
            # first fire), unless a router needs it sooner (_cut)
            end = sched.plan[2]
            self._next(end)
            wake = self.lookahead if defer and self.lookahead < math.inf else end
            assert wake >= now, "a deferred window's completions would fire in the past"
            self._was_cut = False
            yield from self._sleep_until(wake)
            now = env.now
            if self._was_cut:
                start = self._resume_at  # (earlier than now when deferred, see _retarget)
                continue
            start = now
            assert isinstance(sched, FastScheduler)  # only it plans windows
            end, finished = sched.run_plan(math.inf)
            if finished and self._finished(start, finished):
                start = yield from self._let_due_run(end)
                continue
            start = end

    def _idle(self) -> Generator[Any, Any, None]:
        """Wait for a submission (or a landing CPU tier copy), then let everything else due at
        that moment run before the schedule."""
        self._wake = self.env.event()
        self.counters.events += 1
        self._next(math.inf)
        yield self._wake
        self._next(self.env.now)
        self.counters.events += 1
        yield Late(self.env, 0.0)

    def _finished(self, now: float, finished: list[Request]) -> bool:
        """Schedule the completion events of requests the last advance finished; whether one
        of them is due now (see :meth:`_let_due_run`)."""
        note = self._note
        tokens = 0
        wait_of = self._wait_of
        least = self._min_wait
        due = False
        for req in finished:
            delay = req.completion_delay(now)
            if delay <= 0:
                due = True
            req.done.fire_after(delay, True)
            tokens += req.prompt_len
            if note is not None:  # a replica: the cluster learns when it fires; its wait leaves
                note(now + delay)
                del wait_of[req.rid]
                if req.then_wait_s == least:  # the least wait may have left: recompute it when asked
                    self._min_stale = True
        if note is not None:
            waits = self._waits
            if len(waits) > 2 * len(wait_of) + 64:  # mostly finished requests: rebuild (bounded memory)
                waits[:] = [(w, rid) for rid, w in wait_of.items()]
                heapq.heapify(waits)
        self._outstanding_tokens -= tokens
        self._outstanding_requests -= len(finished)
        if self._on_finished is not None:
            self._on_finished(finished)
        self._completed += len(finished)
        if self._completed >= self._next_check:
            self._check_steady(finished)
        return due

    def _let_due_run(self, start: float) -> Generator[Any, Any, float]:
        """A completion is due now (no client wait, or a replica's loop that woke at its
        lookahead, which is exactly when a finished request's client acts): let it, and what
        its client does, run before the next schedule, which starts at ``start``, or where a
        cut meanwhile left it. (A replica's horizon counts workload events due by now as run,
        so without this its next paths would run on past an arrival due now.)"""
        if self._note is not None:
            self._next(start)  # (a cut meanwhile runs the steps from start up to now)
        self._was_cut = False
        self.counters.events += 1
        yield from self._sleep_until(self.env.now)
        return self._resume_at if self._was_cut else start

    def _sleep_until(self, wake: float) -> Generator[Any, Any, None]:
        """Wait until ``wake`` (when the loop's next work is due), and on while a cut made
        meanwhile left the loop's next step later than that: a cut keeps the wake the loop has
        unless it must come sooner (:meth:`_retarget`); a deferred replica then waits for its
        lookahead, else for that step."""
        env = self.env
        now = env.now
        while True:
            self._wake_at = wake
            yield Late(env, wake - now)
            self._wake_at = -math.inf
            now = env.now
            if not self._was_cut or self._resume_at <= now:
                return
            wake = self._wake_after_cut()

    def _check_steady(self, finished: list[Request]) -> None:
        """``until: steady``: check the run at each ``_next_check``-th completion, in completion
        order, with what is known at that completion's finish time; stop the arrivals there when
        it is steady (or overloaded beyond doubt).

        Fast mode learns of several steps' completions at once, ahead of the clock; the check's
        data stop at the completion's finish time, and no arrival falls between the start of
        the step that finished it and the moment the check runs (in either mode), so both modes
        take the same decisions at the same times. Checks come after ``STEADY_FIRST_CHECK``
        completions, then each time the count grows by ``STEADY_CHECK_GROWTH``: each costs
        O(requests so far), all together a small multiple of the run's requests."""
        assert self._monitor is not None
        before = self._completed - len(finished)
        while self.stop_reason is None and self._completed >= self._next_check:
            at = finished[int(self._next_check) - before - 1].record.finish_s  # a whole count
            self._next_check = max(self._next_check + STEADY_MIN_STEP,
                                   math.ceil(self._next_check * STEADY_CHECK_GROWTH))
            verdict = self._monitor.check(self.records, at, self.scheduler.cache_full_s)
            if verdict is not None:
                self.stop_reason, self._stopped_at = verdict, at

    # ---- the CPU tier and the shared pool ------------------------------------------------------
    def _load_time(self, now: float, req: Request) -> float:
        """When the copy of ``req``'s CPU and shared hits, queued now on the host link, lands
        (copies take the link one at a time, first come first served)."""
        start = self._link_free if self._link_free > now else now
        shared = req.loading_shared
        took = host_load_seconds(self.cfg, req.loading - shared)
        if shared:
            took += shared_load_seconds(self.cfg, shared)
        self._link_free = start + took
        return self._link_free

    def _start_loads(self, now: float) -> None:
        """Time the copies the last advance started: each request comes back when its lands."""
        sched = self.scheduler
        for req, ready in sched.loads:
            self.counters.cpu_loaded_blocks += req.loading - req.loading_shared
            self.counters.shared_loaded_blocks += req.loading_shared
            self.counters.events += 1
            heapq.heappush(self._loads_at, ready)
            ev = self.env.timeout(ready - now)
            ev.callbacks.append(partial(self._landed, req))
        sched.loads.clear()

    def _landed(self, req: Request, _: simpy.Event) -> None:
        heapq.heappop(self._loads_at)  # the earliest: copies land in the order they were queued
        if self.scheduler.plan is not None:
            self._settle()
        self.scheduler.loaded(req)
        if self._wake is not None:
            self._wake.succeed()
            self._wake = None

    def _behind(self, now: float) -> bool:
        """Whether this replica's state is not yet its state at ``now``: a planned window (one
        that has not started is dropped: it assumed no new request), or a deferred next step
        (:attr:`_defer`) that started before now."""
        return self.scheduler.plan is not None or (self._defer and self.next_start < now)

    def _settle(self) -> None:
        """Bring the state to now for a question about it (see :meth:`_cut`)."""
        self._cut()
        self._retarget()

    def _cut(self) -> None:
        """Run the planned window's steps that started before now (a router needs this engine
        now), and, when the window was deferred past its end or the next step was deferred
        (:attr:`_defer`), every path after it that started before now; the loop's next step
        starts where the last of them ends (:attr:`_resume_at`). The caller then re-times the
        loop's wake (:meth:`_retarget`)."""
        now = self.env.now
        sched = self.scheduler
        assert isinstance(sched, FastScheduler)  # only it plans windows
        if sched.plan is not None:
            end, finished = sched.run_plan(now)
            if finished:
                self._finished(now, finished)
        else:
            end = self.next_start  # a deferred next step
        if end < now and sched.has_work():  # deferred: run on to now, as the loop would have
            # windows run up to now at once (a plan would only be cut), and now is the horizon
            sched.tentative, sched.horizon_fn = False, None
            while end < now and sched.has_work():
                step_end, finished = sched.advance(end, now)
                if finished:
                    self._finished(now, finished)
                assert not sched.loads and step_end > end, "no deferral with a CPU tier"
                end = step_end
            sched.tentative, sched.horizon_fn = True, self._horizon
        end = max(end, now)  # (nothing left to run: the loop goes idle now)
        self._next(end)
        self._resume_at = end
        self._was_cut = True

    def _retarget(self) -> None:
        """After a cut: the loop runs its next step at :attr:`_resume_at`, or, deferred, as late
        as the lookahead (what it would run by then cannot complete sooner; anything that needs
        this engine earlier runs it then, as for a deferred window). It wakes sooner than it
        waits now only through a new event (what SimPy's interrupt does inside, without raising
        an exception in the loop); a later time keeps the wake it has, which is then early."""
        wake = self._wake_after_cut()
        if wake >= self._wake_at:
            return
        now = self.env.now
        proc = self._proc
        proc.target.callbacks.remove(proc._resume)
        late = Late(self.env, wake - now)
        late.callbacks.append(proc._resume)
        proc._target = late
        self._wake_at = wake
        self.counters.events += 1

    def _wake_after_cut(self) -> float:
        """When the loop runs after a cut: at the step the cut left next, or, deferred, as late
        as the lookahead (see :meth:`_retarget`)."""
        ahead = self.lookahead
        return ahead if self._defer and ahead < math.inf else self._resume_at

    def report_finished(self) -> None:
        """Report every request that finished before now: run a deferred window that ended
        before now, and what followed it (see :attr:`_defer`)."""
        plan = self.scheduler.plan
        now = self.env.now
        if plan[2] < now if plan is not None else self._defer and self.next_start < now:
            self._settle()

    def _finished_unrun(self) -> Sequence[Request]:
        """Requests that have finished by now (a request counts as finished once the step that
        finishes it has started) which a planned window has not run yet: its last step's
        finishers once that step has started. A window deferred past its end is run instead
        (the paths after it may finish more)."""
        sched = self.scheduler
        plan = sched.plan
        now = self.env.now
        if plan is None:
            if self._behind(now):  # a deferred next step
                self._settle()
            return ()
        if now <= plan[0]:  # no step of the window has started
            return ()
        assert isinstance(sched, FastScheduler)  # only it plans windows
        if now > plan[2]:
            self._settle()
            return ()
        return sched.plan_finishers() if now > sched.plan_last_start() else ()

    @property
    def outstanding_requests(self) -> int:
        unrun = self._finished_unrun()  # (first: it may run the window)
        return self._outstanding_requests - len(unrun)

    @property
    def outstanding_tokens(self) -> int:
        unrun = self._finished_unrun()  # (first: it may run the window)
        return self._outstanding_tokens - sum(req.prompt_len for req in unrun)

    def _next(self, start: float) -> None:
        """The loop runs next at ``start``; update :attr:`lookahead`: the earliest time a request
        outstanding here could complete (its completion event, when its client may submit
        again), no sooner than then plus the least client wait among them; inf with nothing
        outstanding. (Requests submitted later arrive with events the cluster waits for; a
        request that finishes leaves a lower bound until the next update.)"""
        self.next_start = start
        if self._loads_at and self._loads_at[0] < start:  # a landing copy may wake the loop then
            start = self._loads_at[0]
        if self._min_stale:
            waits, wait_of = self._waits, self._wait_of
            while waits and waits[0][1] not in wait_of:
                heapq.heappop(waits)
            self._min_wait = waits[0][0] if waits else math.inf
            self._min_stale = False
        self.lookahead = start + self._min_wait

    # ---- a router's questions (read-only) ------------------------------------------------------
    def cached_prefix_tokens(self, hashes: Sequence[int], cpu_weight: float = 1.0) -> float:
        """Tokens of the longest leading run of ``hashes`` held here (whole blocks; those found
        only in the CPU tier count ``cpu_weight`` each).

        A planned window's steps that started before now count: the blocks they evicted are
        gone (the hashes they added are their members' replies, which no prompt arriving now
        can hold). The pool answers as if those evictions had happened, so the window goes on
        uncut; with a CPU tier (evictions feed it) or a hash held twice, the window is run up
        to now instead, as is one deferred past its end."""
        sched = self.scheduler
        plan = sched.plan
        now = self.env.now
        if plan is None:
            if self._behind(now):  # a deferred next step
                self._settle()
        elif now > plan[0]:
            assert isinstance(sched, FastScheduler)  # only it plans windows
            if now <= plan[2] and self.cpu is None:
                # usually no block of the prompt's run is among those the whole window evicts
                n = self.pool.leading_run_spared(hashes, len(hashes), sched.plan_evictions())
                if n < 0:
                    n = self.pool.leading_run_evicting(hashes, len(hashes), sched.plan_evictions_before(now))
                if n >= 0:
                    return n * self.kv.block_size
            elif now <= plan[2] and not sched.plan_evictions_before(now):
                return self.kv.cached_prefix_tokens(hashes, cpu_weight)
            self._settle()
        return self.kv.cached_prefix_tokens(hashes, cpu_weight)

    def held_hashes(self) -> tuple[frozenset[int], frozenset[int]]:
        """Every hash held here now, in GPU memory and in the CPU tier (a router's snapshot: kept
        for later questions, it needs the hashes a planned window added too)."""
        if self._behind(self.env.now):
            self._settle()
        if self.cpu is None:
            return self.pool.cached_hashes(), frozenset()
        self.kv.drain()
        return self.pool.cached_hashes(), self.cpu.cached_hashes()

    def run(self) -> None:
        self.env.run()
        self.collect()
        for rec in self.records:
            if rec.status == "pending":
                raise RuntimeError(f"request {rec.request_id} never finished: engine bug")
        self._client_times()

    def collect(self) -> None:
        """Copy the pool's own tallies into the counters (once the run is over)."""
        self.counters.evictions = self.pool.evictions

    def _client_times(self) -> None:
        """Move first-token and finish times to what the client sees (see the module notes)."""
        d = self._frontend_s
        k = self.cfg.engine.cost.first_token_lag_steps
        if not d and not k:
            return
        for rec in self.records:
            if rec.status == "completed":
                rec.first_token_s, rec.finish_s = client_times(
                    rec.first_token_s, rec.finish_s, rec.output_tokens, d, k
                )


def client_times(first_s: float, finish_s: float, output_tokens: int, frontend_s: float, lag_steps: float
                 ) -> tuple[float, float]:
    """(first token, finish) as the client sees them, from the engine's: the first token comes
    ``lag_steps`` of the request's own mean decode steps later (never after the finish), and
    both ``frontend_s`` later still."""
    if lag_steps and output_tokens > 1:
        step = (finish_s - first_s) / (output_tokens - 1)
        first_s = min(first_s + lag_steps * step, finish_s)
    return first_s + frontend_s, finish_s + frontend_s
