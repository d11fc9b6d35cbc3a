"""Continuous batching with chunked prefill, admission and preemption (vLLM v1 policy).

:class:`Scheduler` is the reference: :meth:`advance` runs exactly one engine step, touching every
running request. ``fastforward.FastScheduler`` gives the same results with fewer Python
operations; tests hold the two to the same per-request times and cache figures.

One step, in order (vLLM v1 ``Scheduler.schedule``):
1. Running requests, oldest admission first, each get ``min(remaining known tokens, budget)``
   tokens. If the KV cache has no room, the most recently admitted running request is
   preempted (its blocks freed, computed tokens reset, put at the head of the waiting queue),
   until the request fits or it was itself the one preempted.
2. Only if nothing was preempted: waiting requests, first in first out, while the token budget
   and ``max_num_seqs`` allow. Each looks up its cached prefix; if its blocks don't fit, stop.
3. The step's time comes from the cost model; at its end every request whose computed tokens
   reach its known tokens emits one output token; finished requests free their blocks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from simcore.blocks import BlockPool
from simcore.costmodel import CostModel, chunk_terms
from simcore.kvcache import LOADING, KVCacheManager
from simcore.metrics import Counters
from simcore.request import Request


class Scheduler:
    def __init__(
        self,
        kv: KVCacheManager,
        cost: CostModel,
        counters: Counters,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
    ) -> None:
        self.kv = kv
        self.pool: BlockPool = kv.pool
        self.block_size = kv.block_size
        self.cost = cost
        self.counters = counters
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.running: dict[int, Request] = {}  # admit_seq -> request, in admission order
        self.waiting: deque[Request] = deque()
        self._admissions = 0
        # the first admission after the block pool first evicted (it had filled), or None: the
        # cache's warm-up lasts at least until then (see metrics.py)
        self.cache_full_s: float | None = None
        self.plan: tuple[float, int, float] | None = None  # never set here (see fastforward.py)
        # requests admitted to wait for copies from the CPU tier or the shared pool, with when
        # those land (load_time gives it: the engine's links); the engine takes them after each
        # advance
        self.loads: list[tuple[Request, float]] = []
        self.load_time: Callable[[float, Request], float] | None = None
        self.in_flight = 0  # requests whose copies have not landed

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def add(self, req: Request) -> None:
        self.waiting.append(req)

    def advance(self, now: float, horizon: float) -> tuple[float, list[Request]]:
        """Run engine work starting at ``now``; return (end time, requests finished at the end).

        ``horizon`` is the time of the next outside event (an arrival); the reference scheduler
        ignores it and always runs one step.
        """
        return self._explicit_step(now)

    # ---- the reference step ----------------------------------------------------------------
    def _explicit_step(self, now: float) -> tuple[float, list[Request]]:
        budget = self.max_num_batched_tokens
        sched: list[tuple[Request, int]] = []
        preempted = False
        for req in list(self.running.values()):
            if budget == 0 or req.admit_seq not in self.running:
                break  # out of budget, or this and every later request was preempted
            n = min(req.num_tokens - req.num_computed, budget)
            while not self.kv.append(req, n):
                preempted = True
                if self._preempt_last() is req:
                    break
            else:
                sched.append((req, n))
                budget -= n
                continue
            break
        if not preempted or not sched:  # (vLLM admits nothing in a step that preempted, but a
            # step that preempted every running request would run nothing: possible only when
            # requests whose copies landed hold the blocks, and they need none)
            sched += self._admit_waiting(now, budget)
        if not sched:
            if self.in_flight:  # what could run waits for CPU tier copies: no step until one lands
                return now, []
            raise RuntimeError("engine step with nothing scheduled: a request cannot make progress")
        tokens = attn = kv = 0
        for req, n in sched:
            a, k = chunk_terms(req.num_computed, n)
            tokens += n
            attn += a
            kv += k
        end = self._account(now, tokens, attn, kv, len(sched))
        finished = [req for req, n in sched if self._complete_chunk(req, n, end)]
        return end, finished

    def _admit_waiting(self, now: float, budget: int) -> list[tuple[Request, int]]:
        """Admit waiting requests FCFS while budget, sequence slots and KV blocks allow."""
        out: list[tuple[Request, int]] = []
        waiting = self.waiting
        while waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            req = waiting[0]
            n = self.kv.admit_waiting(req, budget)
            if n < 0:
                if n != LOADING:
                    break
                waiting.popleft()  # it waits for its copies outside the batch (see loaded)
                self._first_admission(req, now)
                assert self.load_time is not None
                self.loads.append((req, self.load_time(now, req)))
                self.in_flight += 1
                continue
            waiting.popleft()
            req.admit_computed = req.num_computed
            req.admit_seq = self._admissions
            self._admissions += 1
            self.running[req.admit_seq] = req
            if not req.admitted:  # hit-rate figures count first admissions only (as vLLM)
                req.admitted = True
                rec = req.record
                rec.admitted_s = now
                rec.cached_tokens = req.num_computed
                if self.cache_full_s is None and self.pool.evictions:
                    self.cache_full_s = now
            out.append((req, n))
            budget -= n
        return out

    def _first_admission(self, req: Request, now: float) -> None:
        """Hit-rate figures count first admissions only (as vLLM); this one, of a request that
        waits for copies, counts them as hits from CPU memory or the shared pool."""
        if not req.admitted:
            req.admitted = True
            req.record.admitted_s = now
            shared = req.loading_shared * self.block_size
            cpu = req.loading * self.block_size - shared
            req.record.cached_tokens = req.num_computed + cpu + shared
            req.record.cpu_cached_tokens = cpu
            req.record.shared_cached_tokens = shared
            if self.cache_full_s is None and self.pool.evictions:
                self.cache_full_s = now

    def loaded(self, req: Request) -> None:
        """A request's copies have landed: it goes back to the head of the queue."""
        self.kv.loaded(req)
        self.waiting.appendleft(req)
        self.in_flight -= 1

    def _preempt_last(self) -> Request:
        """Preempt the most recently admitted running request (recompute later). It goes back
        to the head of the queue, behind any request whose copies have landed: those hold the
        blocks of their whole prompt and need none, while the victim needs blocks that they may
        hold (ahead of them, it could wait forever with nothing running)."""
        _, victim = self.running.popitem()
        self.kv.free(victim)
        # tokens below its high-water mark computed since this admission were computed again
        done = victim.num_computed
        victim.recomputed += max(0, min(done, victim.high_water) - victim.admit_computed)
        victim.high_water = max(victim.high_water, done)
        victim.num_computed = 0
        victim.record.preemptions += 1
        self.counters.preemptions += 1
        waiting = self.waiting
        if waiting and waiting[0].blocks:  # copies landed (only those wait holding blocks)
            i = 1
            while i < len(waiting) and waiting[i].blocks:
                i += 1
            waiting.insert(i, victim)
        else:
            waiting.appendleft(victim)
        return victim

    def _account(self, now: float, tokens: int, attn: int, kv: int, seqs: int) -> float:
        """Charge one step to the counters; return its end time."""
        dt = self.cost.step_time(tokens, attn, kv, seqs)
        c = self.counters
        used = self.pool.num_used()
        c.steps += 1
        c.busy_s += dt
        c.batch_seq_s += seqs * dt
        c.used_block_s += used * dt
        if used > c.peak_used_blocks:
            c.peak_used_blocks = used
        return now + dt

    def _complete_chunk(self, req: Request, n: int, end: float) -> bool:
        """Apply a computed chunk at step end; True if the request finished."""
        req.num_computed += n
        if req.num_computed < req.num_tokens:
            return False
        req.num_generated += 1
        if req.num_generated == 1:
            req.record.first_token_s = end
        if req.num_generated < req.output_len:
            return False
        self._finish(req, end)
        return True

    def _finish(self, req: Request, end: float) -> None:
        del self.running[req.admit_seq]
        self.kv.free(req)
        rec = req.record
        rec.finish_s = end
        rec.status = "completed"
        rec.prefill_computed_tokens = req.prompt_len - rec.cached_tokens
        # it computed every token from this admission's hit up, its high-water mark included
        rec.recomputed_tokens = req.recomputed + max(0, req.high_water - req.admit_computed)
