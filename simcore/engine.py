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
        self._max_requests = run.num_requests if run.num_requests is not None else math.inf
        self._stop_s = run.duration_s if run.duration_s is not None else math.inf
        self._warmup_s = run.warmup_s
        self._frontend_s = e.cost.frontend_latency_s
        # a request of at most this many tokens (prompt + output) always fits: context and cache
        self._fits_tokens = min(cfg.model.max_context, (self.pool.usable_blocks * e.block_size) + 1)
        self.env.process(self._loop())

    # ---- used by workloads -----------------------------------------------------------------
    def may_submit(self) -> bool:
        """Whether the run still accepts arrivals (request count and duration not reached)."""
        return len(self.records) < self._max_requests and self.env.now < self._stop_s

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
                      profile=profile, arrival_s=now, warmup=now < self._warmup_s)
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
        ctx = self.cfg.model.max_context
        if req.prompt_len + req.output_len > ctx:
            return f"prompt {req.prompt_len} + output {req.output_len} tokens exceed the model context {ctx}"
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
            self.counters.events += 1
            yield env.timeout(end - now)

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
            if rec.status != "completed":
                continue
            if k and rec.output_tokens > 1:
                step = (rec.finish_s - rec.first_token_s) / (rec.output_tokens - 1)
                rec.first_token_s = min(rec.first_token_s + k * step, rec.finish_s)
            rec.first_token_s += d
            rec.finish_s += d
