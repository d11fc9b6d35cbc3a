"""FastScheduler: the reference policy, with decode runs advanced in closed form.

Why: a chat run has ~5 engine steps per request and ~64 sequences per step; touching every
sequence every step (the reference) costs O(steps x batch). Here sequences in decode (exactly one
known token without KV) form a *decode group* whose state is implicit in the global step count
``D``: a member that joined at step ``d0`` with ``c0`` computed and ``g0`` generated tokens has,
at the start of step ``D``, ``c0 + D - d0`` computed and ``g0 + D - d0`` generated. Per step the
group costs O(1) (its attention and KV sums grow by R per step); the only per-member work is at
block boundaries (a new block every ``block_size`` tokens, a full block to hash) and at finishes
(a heap). Members advance in lock step, so a member's position within its block, (c0 - d0 + D)
mod block_size, has a fixed *phase* c0 - d0: members are kept in one bucket per phase, sorted by
admission order, and step D visits exactly the buckets whose members start or fill a block, in
the reference's order (no per-step heap traffic).

``advance`` picks one of three paths:
- *window*: every running request decodes and no waiting request can be admitted: run k pure
  decode steps up to the first finish, the next outside event (``horizon``), or the step where
  the free blocks could run out;
- *mixed step*: one step with prefill chunks and admissions when the token budget is not binding
  and the free blocks cover every allocation (so no preemption);
- *fallback*: anything else (preemption, binding budget): materialise the group, run the
  reference step, rebuild the group. Exact by construction, O(batch) per step.

One ``advance`` call runs such paths back to back until a step ends at or after the next
event that could change the batch: an outside event (``horizon``) or the completion event of
a request that finished (its client may submit again then). The engine loop would have made
the same calls one by one with nothing happening in between, so the result is the same with
fewer SimPy events.

A shared pool written through (``cluster.shared_pool_gib``) takes every hash a step adds, in the
reference's order: step by step, and within a step in admission order (members and prefill
chunks merged, then the step's admissions); the window's block events then run in Python,
where that order is at hand.

*Planned windows* (``tentative``, for a replica of a cluster, where every routing anywhere is
an outside event): a window is not run up to the horizon but *planned* to its natural end
(first finish, or the free-block bound) without touching any state; the engine runs it
(:meth:`run_plan`) when it ends, or earlier, up to the moment a router sends this engine a
request or needs state the window changes. Running a plan up to a limit is ``_window`` with
that limit as its horizon, so the result is the same as stopping at every routing event.
"""

from __future__ import annotations

import heapq
import math
from array import array
from bisect import insort
from collections.abc import Callable
from operator import itemgetter
from typing import TypeAlias

from simcore import native
from simcore.costmodel import Terms, chunk_terms, step_seconds
from simcore.kvcache import blocks_for
from simcore.request import Request
from simcore.scheduler import Scheduler

_Entry = tuple[int, int, int, Request]  # (step, admit_seq, epoch, request)
# a decode member in its phase bucket: (admit_seq, request, its block table, its block hashes,
# c0 - d0); the tables are the request's own arrays (they only grow while it is a member)
Member: TypeAlias = "tuple[int, Request, array[int], array[int], int]"
_SEQ = itemgetter(0)
# decode_steps' result: (end time, last step, end of the first step, busy s, seq-s, block-s, peak,
# blocks in use after the last step)
StepsResult: TypeAlias = "tuple[float, int, float, float, float, float, int, int]"
CHAIN = 64  # most paths one advance() runs back to back


class FastScheduler(Scheduler):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.D = 0  # steps run so far; a decode member's state is a function of it
        self.group: dict[int, Request] = {}  # admit_seq -> decode member
        self.prefill: dict[int, Request] = {}  # admit_seq -> running request not in decode
        self.sum_c0_minus_d0 = 0  # sum over members of c0 - d0: computed tokens = this + R * D
        self._finish_heap: list[_Entry] = []
        # phase -> that phase's decode members (Member tuples), sorted by admit_seq
        self._phase: list[list[Member]] = [[] for _ in range(self.block_size)]
        self._first_pending: list[Request] = []  # members whose next token is their first
        # a shared pool written through takes every hash a step adds, in the step's order
        self._shared_store = self.kv.shared.store if self.kv.write_through else None  # type: ignore[union-attr]
        # the compiled twin of _block_events, when the pool is the compiled one (and no shared
        # pool needs the hashes in order)
        mod = native.NATIVE
        self._native_events = (
            mod.decode_block_events if mod is not None and isinstance(self.pool, mod.CBlockPool)
            and self._shared_store is None else None
        )
        self._steps_fn = decode_steps if mod is None else mod.decode_steps
        self.tentative = False  # plan windows instead of running them (see the module notes)
        self.horizon_fn: Callable[[], float] | None = None  # a replica's outside horizon (see advance)

    # ---- group membership --------------------------------------------------------------
    def _decodes(self, req: Request) -> bool:
        """Whether a running request joins the decode group: exactly one known token without
        KV, and no block held past its computed tokens (what a member's block events assume).
        A request whose CPU or shared hits landed holds its whole prompt's blocks from the start
        (``KVCacheManager._admit_tiered``): its last prompt token runs as a one-token chunk, as
        in the reference, and it joins once that token is computed."""
        bs = self.block_size  # (its blocks cover its computed tokens: one more is a spare)
        return req.num_tokens - req.num_computed == 1 and len(req.blocks) * bs < req.num_computed + bs

    def _join(self, req: Request) -> None:
        req.d0, req.c0, req.g0 = self.D, req.num_computed, req.num_generated
        req.epoch += 1
        self.group[req.admit_seq] = req
        self.sum_c0_minus_d0 += req.c0 - req.d0
        finish_step = self.D + req.output_len - req.g0 - 1
        heapq.heappush(self._finish_heap, (finish_step, req.admit_seq, req.epoch, req))
        req.member = (req.admit_seq, req, req.blocks, req.seq.hashes, req.c0 - req.d0)
        bucket = self._phase[(req.c0 - req.d0) % self.block_size]
        if not bucket or bucket[-1][0] < req.admit_seq:
            bucket.append(req.member)  # the usual case: the latest admission joins last
        else:
            insort(bucket, req.member, key=_SEQ)
        if req.g0 == 0:
            self._first_pending.append(req)

    def _leave(self, req: Request, at_step: int) -> None:
        """Materialise a member's state at the start of ``at_step`` and drop it from the group."""
        steps = at_step - req.d0
        req.num_computed = req.c0 + steps
        req.num_generated = req.g0 + steps
        req.epoch += 1
        self._phase[(req.c0 - req.d0) % self.block_size].remove(req.member)
        req.member = None
        if self.kv.caching:  # block events hashed every block the member filled
            req.num_cached_blocks = req.num_computed // self.block_size
        del self.group[req.admit_seq]
        self.sum_c0_minus_d0 -= req.c0 - req.d0

    def _block_events(self, first: int, last: int) -> None:
        """Allocate and hash blocks for every member that starts or fills a block in steps
        ``first..last``, in the reference's order: step by step, admission order within a step.

        All allocations run first, then all hashes; the two kinds commute (an allocation only
        evicts free blocks, a hash only goes on a block in use, and a duplicate hash ends up with
        the same first holder either way), so the pool does each kind in one call.
        """
        if self._native_events is not None:
            self._native_events(self._phase, first, last, self.pool, self.kv.caching)
            return
        bs = self.block_size
        phase = self._phase
        order: list[Member] = []
        for step in range(first, last + 1):
            order += phase[-step % bs]
        if order:
            ids = self.pool.allocate(len(order))
            if ids is None:
                raise RuntimeError("fast path ran out of blocks; the window bound is wrong")
            for member, b in zip(order, ids, strict=True):
                member[2].append(b)
        if not self.kv.caching:
            return
        blocks: list[int] = []
        hashes: list[int] = []
        for step in range(first, last + 1):
            for _, _, table, chain, offset in phase[(-step - 1) % bs]:
                j = (offset + step + 1) // bs - 1
                blocks.append(table[j])
                hashes.append(chain[j])
        if blocks:
            self.pool.cache_blocks(blocks, hashes)
            if self._shared_store is not None:
                self._shared_store(hashes)

    def _allocs_at(self, step: int) -> int:
        return len(self._phase[-step % self.block_size])

    # ---- the three paths -----------------------------------------------------------------
    def advance(self, now: float, horizon: float) -> tuple[float, list[Request]]:
        """Run paths back to back while nothing outside is due: the engine loop would call
        again at ``end`` with the same horizon (no event lies in between). A request that
        finishes brings the horizon forward to its completion event (see
        :meth:`Request.completion_delay`), when its client may submit again. At most ``CHAIN``
        paths per call, so the loop's wall-clock check still runs.

        ``horizon_fn`` (a replica's): the outside horizon, asked for only if a path other than a
        planned window would run next (``horizon`` then holds only the caller's own bounds)."""
        end, finished = self._advance_once(now, horizon)
        new = finished
        start = now  # the last path's start
        n = 1
        outside = self.horizon_fn
        while True:
            for req in new:  # the completion's time exactly as SimPy will compute it
                horizon = min(horizon, now + req.completion_delay(now))
            if self.loads:  # a CPU tier copy that lands brings its request back
                horizon = min(horizon, *(ready for _, ready in self.loads))
            if self.plan is not None or not self.has_work() or end == start:  # (no step: in_flight)
                return end, finished
            if self.tentative and self._window_next() and self.pool.num_free() >= len(self.group):
                # a plan changes nothing until it runs, and a cut before its start drops it:
                # plan it whatever the horizon
                self._window(end, horizon)
                return end, finished
            if outside is not None and end < horizon:
                horizon = min(horizon, outside())
                outside = None
            if end >= horizon or n == CHAIN:
                return end, finished
            start = end
            end, new = self._advance_once(start, horizon)
            finished += new
            n += 1

    def _window_next(self) -> bool:
        """Whether the next path is a window (what :meth:`_advance_once` would run)."""
        r = len(self.group)
        if not r or self.prefill or r > self.max_num_batched_tokens:
            return False
        return not self.waiting or len(self.running) >= self.max_num_seqs or r == self.max_num_batched_tokens

    def _advance_once(self, now: float, horizon: float) -> tuple[float, list[Request]]:
        r = len(self.group)
        budget_left = self.max_num_batched_tokens - r
        if budget_left < 0:
            return self._fallback(now)
        blocked = not self.waiting or len(self.running) >= self.max_num_seqs or budget_left == 0
        if not self.prefill and blocked and r:
            return self._window(now, horizon)
        return self._mixed_step(now)

    def _window(self, now: float, horizon: float) -> tuple[float, list[Request]]:
        r = len(self.group)
        bs = self.block_size
        free = self.pool.num_free()
        if free < r:
            return self._fallback(now)
        # within k steps a member needs at most ceil(k / bs) new blocks
        k_mem = bs * int(min(free, 1 << 40) // r)
        k_fin = self._finish_heap[0][0] - self.D + 1
        k_max = min(k_mem, k_fin)
        if self.tentative:
            return self._plan(now, r, self.D + k_max - 1)
        t, step = self._decode_steps(now, horizon, r, self.D + k_max - 1)
        self._block_events(self.D, step)
        self.D = step + 1
        return t, self._finish_members(step, t)

    def _plan(self, now: float, r: int, last: int) -> tuple[float, list[Request]]:
        """Plan the window of steps D..last starting at ``now``: its end time, nothing run."""
        res = self._steps(now, math.inf, r, last)
        self.plan = (now, last, res[0])
        self._plan_result = res  # what running it in full applies (nothing changes until then)
        self._plan_last_start: float | None = None
        self._plan_finishers: list[Request] | None = None
        self._plan_evictions: int | None = None
        return res[0], []

    def plan_last_start(self) -> float:
        """When the planned window's last step starts (the one that finishes a member, if any)."""
        assert self.plan is not None
        if self._plan_last_start is None:
            now, last, _ = self.plan
            self._plan_last_start = now if last == self.D else self._steps(now, math.inf, len(self.group),
                                                                           last - 1)[0]
        return self._plan_last_start

    def plan_finishers(self) -> list[Request]:
        """The members the planned window's last step finishes (none when it ends for want of
        free blocks): the valid finish-heap entries at its last step, the heap's least."""
        assert self.plan is not None
        if self._plan_finishers is None:
            last = self.plan[1]
            heap = self._finish_heap
            out = []
            todo = [0] if heap else []
            while todo:  # the heap's entries at step <= last: a subtree at its root
                i = todo.pop()
                step, _, epoch, req = heap[i]
                if step > last:
                    continue
                if req.epoch == epoch:
                    out.append(req)
                todo += [c for c in (2 * i + 1, 2 * i + 2) if c < len(heap)]
            self._plan_finishers = out
        return self._plan_finishers

    def plan_evictions(self) -> int:
        """How many cached blocks the whole planned window evicts (what any of its first steps
        evict is the least recently used of these)."""
        assert self.plan is not None
        if self._plan_evictions is None:
            allocs = self._plan_result[7] - self.pool.num_used()
            self._plan_evictions = max(0, int(allocs - self.pool.num_free_uncached()))
        return self._plan_evictions

    def plan_evictions_before(self, t: float) -> int:
        """How many cached blocks the planned window's steps that start before ``t`` evict:
        the least recently used ``m`` of the free queue (allocations take the blocks without a
        hash first). Only those change what a lookup finds: the window's new hashes are its
        members' replies, which no other prompt holds."""
        assert self.plan is not None
        now, last, _ = self.plan
        if t <= now:
            return 0
        used = self.pool.num_used()
        # blocks in use after the last step that starts before t, less those in use now
        allocs = self._steps(now, t, len(self.group), last)[7] - used
        return max(0, int(allocs - self.pool.num_free_uncached()))

    def run_plan(self, limit: float) -> tuple[float, list[Request]]:
        """Run the planned window's steps that start before ``limit`` (all of them for
        ``math.inf``) and drop the plan; return (end of the last step run, or the window's start
        if none did, the requests finished)."""
        assert self.plan is not None
        now, last, end = self.plan
        self.plan = None
        if limit <= now:
            return now, []
        planned = self._plan_result if limit >= end else None  # in full: what the plan computed
        t, step = self._decode_steps(now, limit, len(self.group), last, planned)
        self._block_events(self.D, step)
        self.D = step + 1
        return t, self._finish_members(step, t)

    def _decode_steps(
        self, now: float, horizon: float, r: int, last: int, planned: StepsResult | None = None
    ) -> tuple[float, int]:
        """Time pure decode steps from step D until ``last`` or until one ends at or after
        ``horizon``; return (end time, last step run). The counters get exactly the reference's
        per-step updates, in the same order; blocks in use grow by each step's allocations.
        ``planned``: :meth:`_steps`' result for these arguments, already computed (a plan)."""
        c = self.counters
        if planned is None:
            planned = self._steps(now, horizon, r, last)
        t, step, t_first, c.busy_s, c.batch_seq_s, c.used_block_s, c.peak_used_blocks, _ = planned
        c.steps += step - self.D + 1
        if self._first_pending:
            for req in self._first_pending:
                req.record.first_token_s = t_first
            self._first_pending.clear()
        return t, step

    def _steps(self, now: float, horizon: float, r: int, last: int) -> StepsResult:
        """:func:`decode_steps` from the current state (a pure computation)."""
        c = self.counters
        attn = self.sum_c0_minus_d0 + r * self.D + r  # sum of (computed + 1) over members
        acc = (c.busy_s, c.batch_seq_s, c.used_block_s, c.peak_used_blocks)
        return self._steps_fn(  # type: ignore[no-any-return]
            now, horizon, r, self.D, last, attn, self.pool.num_used(), self._phase, self.cost.terms, acc
        )

    def _finish_members(self, step: int, end: float) -> list[Request]:
        """Members whose last token comes out of ``step`` (ending at ``end``) finish."""
        heap = self._finish_heap
        finished = []
        while heap and heap[0][0] <= step:
            _, _, epoch, req = heapq.heappop(heap)
            if req.epoch == epoch:  # else a stale entry: the request left the group since
                self._leave(req, step + 1)
                self._finish(req, end)
                finished.append(req)
        return finished

    def _mixed_step(self, now: float) -> tuple[float, list[Request]]:
        r = len(self.group)
        demand = r
        need = self._allocs_at(self.D)
        chunks: list[tuple[Request, int]] = []
        if self.prefill:
            chunks = [(req, req.num_tokens - req.num_computed) for req in self.prefill.values()]
            demand += sum(n for _, n in chunks)
            bs = self.block_size
            need += sum(blocks_for(q.num_computed + n, bs) - len(q.blocks) for q, n in chunks)
        if demand > self.max_num_batched_tokens or need > self.pool.num_free():
            return self._fallback(now)
        # members' and prefilling requests' blocks; the two groups' operations commute except
        # allocations among themselves, so give prefill chunks theirs in admission order too
        if chunks:
            self._interleaved_allocations(chunks)
        else:
            self._block_events(self.D, self.D)
        admitted = self._admit_waiting(now, self.max_num_batched_tokens - demand)
        explicit = chunks + admitted
        if not r and not explicit:
            if self.in_flight:  # what could run waits for CPU tier copies: no step until one lands
                return now, []
            raise RuntimeError("engine step with nothing scheduled: a request cannot make progress")
        tokens = r
        attn = self.sum_c0_minus_d0 + r * self.D + r
        kv = attn
        for req, n in explicit:
            a, k = chunk_terms(req.num_computed, n)
            tokens += n
            attn += a
            kv += k
        end = self._account(now, tokens, attn, kv, r + len(explicit))
        for req in self._first_pending:
            req.record.first_token_s = end
        self._first_pending.clear()
        step = self.D
        finished = self._finish_members(step, end)
        self.D = step + 1
        for req, n in explicit:
            self.prefill.pop(req.admit_seq, None)
            if self._complete_chunk(req, n, end):
                finished.append(req)
            elif self._decodes(req):
                self._join(req)
            else:
                self.prefill[req.admit_seq] = req
        return end, finished

    def _fallback(self, now: float) -> tuple[float, list[Request]]:
        """Materialise every member, run the reference step, rebuild the group."""
        for req in list(self.group.values()):
            self._leave(req, self.D)
        self._finish_heap.clear()
        for bucket in self._phase:
            bucket.clear()
        self._first_pending.clear()
        self.prefill.clear()
        end, finished = self._explicit_step(now)
        self.D += 1
        for seq, req in self.running.items():
            if self._decodes(req):
                self._join(req)
            else:
                self.prefill[seq] = req
        return end, finished

    def _interleaved_allocations(self, chunks: list[tuple[Request, int]]) -> None:
        """One step's block work when prefill chunks run beside members: allocations in
        admission order, then hashes in admission order (as the reference does them)."""
        step = self.D
        bs = self.block_size
        starts = [(m[0], 0, m[1]) for m in self._phase[-step % bs]]
        alloc_order = sorted(starts + [(q.admit_seq, 1, q) for q, _ in chunks], key=_SEQ)
        n_of = {q.admit_seq: n for q, n in chunks}
        alloc = self.pool.allocate_one
        for seq, is_chunk, req in alloc_order:
            if is_chunk:
                ok = self.kv.append(req, n_of[seq], cache=False)
                assert ok, "checked by the caller"
            else:
                req.blocks.append(alloc())  # type: ignore[arg-type]
        if not self.kv.caching:
            return
        fills = [(m[0], 0, m[1]) for m in self._phase[(-step - 1) % bs]]
        for seq, is_chunk, req in sorted(fills + [(q.admit_seq, 1, q) for q, _ in chunks], key=_SEQ):
            if is_chunk:
                self.kv.cache_full(req, req.num_computed + n_of[seq])
            else:
                j = (req.c0 + step - req.d0 + 1) // bs - 1
                self.pool.cache_block(req.blocks[j], req.seq.hashes[j])
                if self._shared_store is not None:
                    self._shared_store((req.seq.hashes[j],))

    def _preempt_last(self) -> Request:
        victim = super()._preempt_last()
        self.prefill.pop(victim.admit_seq, None)
        return victim


def decode_steps(
    now: float, horizon: float, r: int, first: int, last: int, attn: int, used: int,
    phase: list[list[Member]], terms: Terms, acc: tuple[float, float, float, int],
) -> tuple[float, int, float, float, float, float, int, int]:
    """The decode window's step loop (its compiled twin is ``simcore._native.decode_steps``).

    ``r`` members decode from step ``first``; ``attn`` is their attention length sum at that
    step. Stops after ``last`` or after the first step ending at or after ``horizon``. ``terms``
    are :attr:`CostModel.terms`; ``acc`` the counters (busy s, seq-s, block-s, peak blocks).
    Returns (end time, last step, end of the first step, *updated acc, blocks in use).
    """
    busy, batch_seq, used_s, peak = acc
    bs = len(phase)
    t = now
    t_first = -1.0
    step = first
    while True:
        used += len(phase[-step % bs])
        dt = step_seconds(terms, r, attn, attn, r)
        busy += dt
        batch_seq += r * dt
        used_s += used * dt
        if used > peak:
            peak = used
        t = t + dt
        if step == first:
            t_first = t
        if step == last or t >= horizon:
            break
        step += 1
        attn += r
    return t, step, t_first, busy, batch_seq, used_s, peak, used
