"""The SimPy side: the engine loop as a process, requests submitted by workload processes.

Timing rule (both scheduler modes): a request that arrives at or before the end of a step is
seen by the next step's schedule. The engine enforces it by letting every event due at the
current time run before it schedules (``_settle``).

Front-end latency (``engine.cost.frontend_latency_s``, d): the API server's path outside the
engine (HTTP, tokenising, the hop to the engine core and the first token's way back). Every
request pays the same d, which is the same as the request reaching the engine d after it was
sent: the engine's dynamics do not change, every client-visible time moves by d. So the engine
runs on arrival times, a client's completion event fires d later (before its think time), and
:meth:`Engine.run` adds d to every first-token and finish time at the end. The first token's
streaming lag (``first_token_lag_steps``, k) is client-side too: the client sees its first
text k of the request's own mean decode steps after the engine produced it (never after the
finish), which moves TTFT only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from typing import Any

import simpy

from simcore.blocks import BlockPool, native_pool_class
from simcore.config import SimConfig
from simcore.costmodel import CostModel
from simcore.fastforward import FastScheduler
from simcore.hashing import TokenSeq
from simcore.kvcache import KVCacheManager, blocks_for
from simcore.metrics import Counters, RequestRecord
from simcore.request import Request
from simcore.scheduler import Scheduler
from simcore.steady import SteadyMonitor

STEADY_FIRST_CHECK = 200  # completions before until: steady first checks the run
STEADY_CHECK_GROWTH = 1.1  # ... then each time the completions grow by this factor
STEADY_MIN_STEP = 100  # ... and by at least this many


class SimulationTimeout(RuntimeError):
    """The run exceeded its wall-clock budget (``simulate(cfg, wall_limit_s=...)``)."""


class Completion(simpy.Event):
    """A request's completion event; it can fire a delay after the request completes.

    A client's think time follows every completed request, so folding it into the completion
    (``fire_after``) saves one SimPy event per request; a Timeout sets the same fields.
    """

    def fire_after(self, delay: float, value: Any) -> None:
        if delay < 0:  # SimPy's queue does not check: a past time would break event order
            raise ValueError(f"completion scheduled {delay:g} s in the past")
        self._ok = True
        self._value = value
        self.env.schedule(self, delay=delay)


class Engine:
    """One serving engine: a block pool, a scheduler and the SimPy loop that drives them."""

    def __init__(self, cfg: SimConfig, num_blocks: int, wall_limit_s: float | None = None) -> None:
        self.cfg = cfg
        self._deadline = None if wall_limit_s is None else time.perf_counter() + wall_limit_s
        self._wall_limit_s = wall_limit_s
        self.env = simpy.Environment()
        self.counters = Counters()
        e = cfg.engine
        caching = e.prefix_caching != "off"
        fast = cfg.run.mode == "fast"
        # the reference mode keeps the pure-Python pool; fast mode takes the compiled one if built
        pool_cls = (native_pool_class() or BlockPool) if fast else BlockPool
        self.pool = pool_cls(num_blocks, enable_caching=caching)
        self.kv = KVCacheManager(self.pool, e.block_size, caching, hinted_lookup=fast)
        cls = FastScheduler if fast else Scheduler
        self.scheduler: Scheduler = cls(
            self.kv, CostModel(cfg), self.counters,
            max_num_seqs=e.max_num_seqs, max_num_batched_tokens=e.max_num_batched_tokens,
        )
        self.records: list[RequestRecord] = []
        self._wake: simpy.Event | None = None
        run = cfg.run
        self._max_requests = cfg.max_requests if cfg.max_requests is not None else math.inf
        self._stop_s = run.duration_s if run.duration_s is not None else math.inf
        # when arrivals stopped and why (see stop_s); None while the run accepts them
        self.stop_reason: str | None = None
        self._stopped_at: float | None = None
        # until: steady checks the run after this many completions (see _check_steady)
        self._monitor = SteadyMonitor(cfg) if cfg.until_steady else None
        self._completed = 0
        self._next_check: float = STEADY_FIRST_CHECK if self._monitor is not None else math.inf
        self._frontend_s = e.cost.frontend_latency_s
        # a request of at most this many tokens (prompt + output) always fits: max_model_len and cache
        self._fits_tokens = min(cfg.max_model_len, (self.pool.usable_blocks * e.block_size) + 1)
        self.env.process(self._loop())

    # ---- used by workloads -----------------------------------------------------------------
    def may_submit(self) -> bool:
        """Whether the run still accepts arrivals (request count, duration and the steady check)."""
        if self.stop_reason is None:
            if len(self.records) < self._max_requests and self.env.now < self._stop_s:
                return True
            if len(self.records) >= self._max_requests:
                self.stop_reason = "num_requests"
            else:
                self.stop_reason, self._stopped_at = "duration_s", self._stop_s
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
        self.scheduler.add(req)
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
        n = 0
        while True:
            n += 1
            if self._deadline is not None and n % 256 == 0 and time.perf_counter() > self._deadline:
                raise SimulationTimeout(
                    f"simulation exceeded its wall-time limit of {self._wall_limit_s:g} s "
                    f"at simulated time {env.now:.1f} s"
                )
            while env.peek() <= env.now:  # settle: everything due now runs before the schedule
                self.counters.events += 1
                yield env.timeout(0)
            if not sched.has_work():
                self._wake = env.event()
                self.counters.events += 1
                yield self._wake
                continue
            now = env.now
            end, finished = sched.advance(now, env.peek())
            for req in finished:
                req.done.fire_after(req.completion_delay(now), True)
            self._completed += len(finished)
            if self._completed >= self._next_check:
                self._check_steady(finished)
            self.counters.events += 1
            yield env.timeout(end - now)

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

    def run(self) -> None:
        self.env.run()
        self.counters.evictions = self.pool.evictions
        for rec in self.records:
            if rec.status == "pending":
                raise RuntimeError(f"request {rec.request_id} never finished: engine bug")
        self._client_times()

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
