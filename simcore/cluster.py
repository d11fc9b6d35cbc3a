"""A serving cluster: N engine replicas in one SimPy environment behind a router.

Workloads submit to the cluster as they would to one engine (``env``, ``timeout``,
``may_submit``, ``submit``); the router (``simcore/router.py``) picks the replica for each
request through read-only views of the engines, and the chosen engine takes the request as if it
had been submitted to it alone. Request ids, the request count and the end of arrivals are
cluster-wide; every request's record names its replica. With one replica the router steps
aside and the cluster is exactly the single engine.

Fast mode across replicas. An engine's fast path runs steps back to back up to a *horizon*,
the earliest time anything could change its batch, or a router could look at it. Alone, that is
the next event in the environment. In a cluster the other engines' own step events are in the
environment too, and stopping at each of them would cut every engine's runs N times as often;
what matters is only when a router can act: at a workload event (an arrival, a client's
completion, a snapshot), all of which the cluster records as they are scheduled (``note``), or
at a completion another engine has not computed yet. An engine B cannot complete anything
before its loop runs again plus the least client wait among its outstanding requests
(:attr:`Engine.lookahead`), so::

    horizon(A) = min(next workload event, min over B != A of B.lookahead)

(the lookahead of conservative parallel discrete-event simulation). No router acts before it,
so every engine's state is exact whenever a router reads it, in fast and reference mode alike.

Lazy replicas (fast mode). Past that horizon a replica's work is not run ahead but planned or
deferred, and run when something needs it:

- a decode window is *planned* to its natural end (first finish, or free blocks) without
  touching any state (``fastforward.py``); a request sent to the replica runs it up to that
  moment (a *cut*) and drops the rest, as the reference would have stopped there;
- the replica's loop does not wake when the window ends, nor at the step after a cut, but at
  its lookahead (the earliest time anything it would run could complete); a cut, a router's
  read or the steady check that comes sooner runs it up to then instead (``Engine._cut``),
  which is what usually happens: a replica's next request often comes before its lookahead;
- a router's read does not cut a window that is still running: the load counts the last
  step's finishers once that step has started, and the cache answers as if the blocks the
  window's steps so far evicted were gone (``BlockPool.leading_run_spared`` / ``_evicting``).

All of these run exactly the steps the engine loop would have run one call at a time, so fast
mode still equals reference mode, replica for replica (``tests/test_fast_vs_reference.py``).
Which router is used does not change the horizon: in the standard chat scenario a replica's
runs end at a planned window every time, so a narrower horizon (only the events that could
reach it) would save nothing.

Eager replicas (a shared pool, ``cluster.shared_pool_gib``). The pool's LRU order is the
order in which all replicas' stores happen, and every lookup sees every store made before it,
in simulated time; lazy replicas run their steps late, at a cut, so their stores (and the
lookups of the requests they admit) would enter the pool out of that order. So with a shared
pool the replicas are eager: each runs its fast paths only up to the next event in the
environment, the other replicas' steps included, as a single engine does alone. Every step
then starts before any other replica's next step, and a step stores in the pool when it starts
(in the reference's order within the step, ``FastScheduler``), so the pool sees the reference's
stores and lookups in the reference's order: fast mode still equals reference mode, and it is
several times faster (its decode steps cost O(1) per step, not O(batch)), but slower than lazy
replicas (a replica's windows end at every other replica's step).

When arrivals stop. With several replicas the cluster decides (an engine sees only its own
completions): at the request count, at the duration, or (``until: steady``) at the finish of
the n-th completion cluster-wide, counted in finish-time order, with what was known then (as
one engine does; see ``steady.py``). It checks lazily, when the next arrival asks whether it
may come (and at the end of the run): by then every completion that finished earlier has been
reported, whichever engine ran it and however far ahead, so the checks and the stops are the
same in both modes. The KV cache counts as full (the warm-up lasts at least until then) when
the last of the replicas that filled did so.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Generator, Sequence
from functools import partial
from typing import Any

import simpy

from simcore.config import SimConfig
from simcore.costmodel import shared_pool_blocks
from simcore.engine import STEADY_CHECK_GROWTH, STEADY_FIRST_CHECK, STEADY_MIN_STEP, Engine, limit_reached
from simcore.hashing import TokenSeq
from simcore.metrics import RequestRecord
from simcore.request import Request
from simcore.router import Router, RouteRequest, make_router
from simcore.steady import SteadyMonitor
from simcore.tiers import LruTier


class SnapshotView:
    """A router's view of an engine whose cache state is refreshed every so often
    (``cluster.snapshot_interval_s``); load figures stay exact (the router counts its own
    requests, as llm-d's active-request scorer does)."""

    __slots__ = ("engine", "block_size", "_gpu", "_cpu")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.block_size = engine.kv.block_size
        self._gpu: frozenset[int] = frozenset()
        self._cpu: frozenset[int] = frozenset()

    @property
    def outstanding_requests(self) -> int:
        return self.engine.outstanding_requests

    @property
    def outstanding_tokens(self) -> int:
        return self.engine.outstanding_tokens

    def refresh(self) -> None:
        self._gpu, self._cpu = self.engine.held_hashes()

    def cached_prefix_tokens(self, hashes: Sequence[int], cpu_weight: float = 1.0) -> float:
        """As :meth:`Engine.cached_prefix_tokens` (GPU run, then its continuation in the CPU
        tier, whose tokens count ``cpu_weight`` each), on the snapshot."""
        n = 0
        gpu = self._gpu
        while n < len(hashes) and hashes[n] in gpu:
            n += 1
        m = n
        cpu = self._cpu
        while m < len(hashes) and hashes[m] in cpu:
            m += 1
        return (n + cpu_weight * (m - n)) * self.block_size


class Cluster:
    """``cfg.cluster.replicas`` engines sharing one environment, behind ``cfg.cluster.router``."""

    def __init__(self, cfg: SimConfig, num_blocks: int, wall_limit_s: float | None = None) -> None:
        shared_blocks = shared_pool_blocks(cfg)
        self.cfg = cfg
        self.shared = LruTier(shared_blocks) if shared_blocks else None
        c = cfg.cluster
        self.env = simpy.Environment()
        self.records: list[RequestRecord] = []
        self.events = 0  # the cluster's own SimPy events (workload timeouts, snapshots)
        self._pending: list[float] = []  # times of scheduled workload events (a min-heap)
        self.block_size = cfg.engine.block_size
        n = c.replicas
        alone = n == 1
        steady = cfg.until_steady and not alone  # the cluster decides; engines report completions
        # lazy replicas (module notes); eager ones (a shared pool) run up to the next event
        self._lazy = not alone and self.shared is None
        self.engines = [
            Engine(cfg, num_blocks, wall_limit_s, env=self.env, records=self.records, replica=i,
                   horizon=self._horizon_for(i) if self._lazy else None,
                   note=partial(heapq.heappush, self._pending) if self._lazy else None,  # (_note, in C)
                   on_finished=self._finished if steady else None, decides_stop=alone, shared=self.shared)
            for i in range(n)
        ]
        # when arrivals stop (several replicas; one engine decides alone): see the module notes
        self._max_requests = cfg.max_requests if cfg.max_requests is not None else math.inf
        self._stop_at = cfg.run.duration_s if cfg.run.duration_s is not None else math.inf
        self._stop_reason: str | None = None
        self._stopped_at: float | None = None
        self._monitor = SteadyMonitor(cfg) if steady else None
        self._done: list[float] = []  # finish times of completions not yet counted (a min-heap)
        self._counted = 0
        self._next_check: float = STEADY_FIRST_CHECK
        self.router = None if alone else make_router(
            c.router, seed=cfg.run.seed, load_metric=c.load_metric, prefix_weight=c.prefix_weight,
            load_weight=c.load_weight, cpu_hit_weight=c.cpu_hit_weight,
        )
        # a router that may have fixed a conversation's replica answers without a RouteRequest
        fixes = self.router is not None and type(self.router).pinned is not Router.pinned
        self._pinned = self.router.pinned if fixes else None  # type: ignore[union-attr]
        self.views: Sequence[Any] = self.engines
        cache_router = self.router is not None and self.router.uses_cache
        self._snapshot_s = c.snapshot_interval_s if cache_router else None
        self._snapshotting = False
        if self._snapshot_s is not None:
            self.views = [SnapshotView(e) for e in self.engines]

    # ---- what workloads use (the interface of an Engine) ----------------------------------
    def may_submit(self) -> bool:
        """Whether the run still accepts arrivals (request count, duration, the steady check)."""
        if self.router is None:
            return self.engines[0].may_submit()
        if self._stop_reason is None:
            now = self.env.now
            if self._monitor is not None:
                for e in self.engines:  # completions a deferred window holds back count too
                    e.report_finished()
                self._check_steady(now)
            if self._stop_reason is None:
                reached = limit_reached(len(self.records), self._max_requests, now, self._stop_at)
                if reached is None:
                    return True
                self._stop_reason, self._stopped_at = reached
        return False

    @property
    def stop_reason(self) -> str | None:
        return self.engines[0].stop_reason if self.router is None else self._stop_reason

    @property
    def stop_s(self) -> float:
        """When the run stopped accepting arrivals (see :attr:`Engine.stop_s`)."""
        if self.router is None:
            return self.engines[0].stop_s
        if self._stopped_at is not None:
            return self._stopped_at
        return self.records[-1].arrival_s if self.records else 0.0

    def cache_full_s(self, at: float = math.inf) -> float | None:
        """When the KV cache counts as full (see the module notes), as known at ``at``."""
        times = [e.scheduler.cache_full_s for e in self.engines]
        full = [t for t in times if t is not None and t <= at]
        return max(full) if full else None

    def timeout(self, delay: float) -> simpy.Timeout:
        if self.router is None:
            return self.engines[0].timeout(delay)
        self.events += 1
        self._note(self.env.now + delay)
        return self.env.timeout(delay)

    def submit(
        self, seq: TokenSeq, prompt: int, output: int, *, then_wait_s: float = 0.0,
        session_id: int = -1, turn: int = 0, profile: int = 0,
    ) -> simpy.Event:
        """Route the request, then submit it to the chosen engine (see :meth:`Engine.submit`)."""
        i = 0
        if self.router is not None:
            if self._snapshot_s is not None and not self._snapshotting:
                for v in self.views:  # quiescent until now: this is the state at the last multiple
                    v.refresh()
                self._snapshotting = True
                self.env.process(self._snapshots(self._snapshot_s))
            home = self._pinned(session_id) if self._pinned is not None else None
            if home is not None:  # (session affinity, a conversation it has placed)
                i = home
            else:
                hashes: Sequence[int] = ()
                if self.router.uses_cache:  # only a cache-aware router reads the prompt's blocks
                    hashes = seq.ensure_hashes(prompt)[: prompt // self.block_size]
                i = self.router.route(RouteRequest(session_id, hashes, prompt), self.views)
        return self.engines[i].submit(seq, prompt, output, then_wait_s=then_wait_s, session_id=session_id,
                                      turn=turn, profile=profile)

    def run(self) -> None:
        self.env.run()
        if self._monitor is not None and self._stop_reason is None:
            self._check_steady(math.inf)  # the checks no arrival asked for
        for e in self.engines:
            e.collect()
        for rec in self.records:
            if rec.status == "pending":
                raise RuntimeError(f"request {rec.request_id} never finished: engine bug")
        self.engines[0]._client_times()  # the records are shared: once for all

    # ---- until: steady across replicas ----------------------------------------------------------
    def _finished(self, finished: Sequence[Request]) -> None:
        for req in finished:
            heapq.heappush(self._done, req.record.finish_s)

    def _check_steady(self, now: float) -> None:
        """Count completions that finished before ``now`` in finish-time order; at each checked
        count, ask the steady monitor with what was known at that completion's finish."""
        assert self._monitor is not None
        done = self._done
        while done and done[0] < now and self._stop_reason is None:
            at = heapq.heappop(done)
            self._counted += 1
            if self._counted < self._next_check:
                continue
            self._next_check = max(self._next_check + STEADY_MIN_STEP,
                                   math.ceil(self._next_check * STEADY_CHECK_GROWTH))
            verdict = self._monitor.check(self.records, at, self.cache_full_s(at))
            if verdict is not None:
                self._stop_reason, self._stopped_at = verdict, at

    # ---- fast mode across replicas ------------------------------------------------------------
    def _note(self, t: float) -> None:
        """A workload event is scheduled at ``t``: no lazy engine may run past it unexamined
        (and the snapshots go on while one is ahead)."""
        pending = self._pending
        heapq.heappush(pending, t)
        if not self._lazy:  # no horizon pops the past: drop it here
            now = self.env.now
            while pending[0] < now:
                heapq.heappop(pending)

    def _horizon_for(self, i: int) -> Callable[[], float]:
        """Engine ``i``'s horizon (module notes), as a function of the moment it is asked."""
        pending = self._pending
        env = self.env

        others: list[Engine] = []

        def horizon() -> float:
            if not others:
                others.extend(e for j, e in enumerate(self.engines) if j != i)
            now = env.now
            while pending and pending[0] <= now:  # every event due by now has run (settled)
                heapq.heappop(pending)
            h = pending[0] if pending else math.inf
            for e in others:
                if e.lookahead < h:
                    h = e.lookahead
            return h

        return horizon

    def _snapshots(self, interval: float) -> Generator[Any, Any, None]:
        """Refresh every view's cache snapshot at each multiple of ``interval`` while something
        is still to happen (a workload event ahead, or work in an engine). Once nothing is,
        the cluster is quiescent and :meth:`submit` restarts the refreshes: the state it then
        snapshots is the state at the last multiple, since nothing has changed."""
        env = self.env
        k = math.floor(env.now / interval)
        while True:
            k += 1
            while k * interval <= env.now:  # (floor of a rounded quotient may lag a step)
                k += 1
            grid = k * interval
            self.events += 1
            self._note(grid)
            yield env.timeout(grid - env.now)
            for v in self.views:
                v.refresh()
            pending = self._pending
            while pending and pending[0] <= env.now:  # past, or due now (its own note among them)
                heapq.heappop(pending)
            if not (pending or any(e._outstanding_requests for e in self.engines)):
                self._snapshotting = False
                return
