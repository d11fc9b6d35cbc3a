"""BlockPool: the mechanism of a paged KV cache with hash-chained prefix caching (vLLM v1 rules).

The pool owns the blocks, their reference counts, the hash -> block map and the free queue. It
knows nothing about requests (see ``kvcache.py``) or scheduling (see ``scheduler.py``).

Block 0 is the reserved null block, so ``num_blocks`` N gives N - 1 usable blocks. The free queue
is the order in which free blocks are reused; a free block that still holds a hash is "cached"
and reusing it evicts that hash::

    head                                                           tail
    [ unhashed freed blocks | never-used blocks 1,2,3.. | hashed freed blocks, LRU -> MRU ]
      (stack: last freed      (a counter: never               (append-only list + per-block
       is reused first)        materialised, so N may           position; see below)
                               be huge or infinite)

The hashed part is an append-only list with lazy deletion: freeing appends the block and records
its position; a hit that takes a free block out of the queue only bumps its reference count, and
the stale entry is skipped when it reaches the head (valid iff count == 0 and position matches).
Why: a request touches and frees its whole prefix (hundreds of blocks); a list append and an
integer increment are cheaper than OrderedDict's linked-list surgery (measured with
scripts/bench_sim.py).

Rules (vLLM v1, ``v1/core/block_pool.py``): ``allocate`` takes from the head; ``touch`` (a
prefix hit) increments the count and takes a free cached block out of the queue; ``free`` walks
a request's blocks deepest-first and puts blocks that reach count 0 at the head if unhashed and
at the tail if hashed, so the tail of a chain is evicted before its root. Several blocks can hold
one hash (two requests computed the same content at once); lookups return the first cached.

"No room" is a return value (``allocate`` returns ``None``); misuse (freeing a free block,
hashing a hashed block) raises ``RuntimeError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

NULL_BLOCK = 0


class BlockPool:
    """``num_blocks`` blocks including the null block; ``math.inf`` gives an unbounded pool."""

    def __init__(self, num_blocks: float, enable_caching: bool = True) -> None:
        if not num_blocks >= 2:
            raise ValueError(f"num_blocks={num_blocks!r}: need at least 2 (one is the null block)")
        if num_blocks != math.inf and num_blocks != int(num_blocks):
            raise ValueError(f"num_blocks={num_blocks!r}: must be a whole number or math.inf")
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.ref_cnt: list[int] = [1]  # index = block id; the null block is never freed
        self._qpos: list[int] = [-1]  # absolute queue position of each block's latest entry
        self.block_hash: dict[int, int] = {}  # block id -> hash, for blocks holding one
        self._unhashed_free: list[int] = []  # head of the queue: a stack
        self._next_fresh = 1  # never-used blocks are [_next_fresh, num_blocks)
        self._q: list[int] = []  # hashed free blocks, oldest first, with stale entries
        self._qbase = 0  # absolute position of _q[0]
        self._qhead = 0  # absolute position of the first entry not yet consumed
        self._n_cached_free = 0  # valid entries in _q
        self._hash_to_block: dict[int, int] = {}
        self._dup_blocks: dict[int, list[int]] = {}  # hash -> further blocks holding it
        self.evictions = 0

    # ---- queries ---------------------------------------------------------------------------
    @property
    def usable_blocks(self) -> float:
        return self.num_blocks - 1

    def num_free(self) -> float:
        """Blocks that can be allocated now (free, cached or never used)."""
        return len(self._unhashed_free) + (self.num_blocks - self._next_fresh) + self._n_cached_free

    def num_used(self) -> int:
        """Blocks with a reference count above zero (null block excluded)."""
        return self._next_fresh - 1 - len(self._unhashed_free) - self._n_cached_free

    def num_cached(self) -> int:
        """Distinct hashes that a lookup can find."""
        return len(self._hash_to_block)

    def cached_block(self, block_hash: int) -> int | None:
        return self._hash_to_block.get(block_hash)

    def is_free(self, block_id: int) -> bool:
        return self.ref_cnt[block_id] == 0

    def _valid_queue(self) -> list[int]:
        rc, pos, base = self.ref_cnt, self._qpos, self._qbase
        start = self._qhead - base
        return [b for i, b in enumerate(self._q[start:], start + base) if rc[b] == 0 and pos[b] == i]

    def free_queue(self) -> list[int]:
        """The free queue head to tail, materialised (for tests and debugging; O(N))."""
        fresh = range(self._next_fresh, int(min(self.num_blocks, self._next_fresh + 10**6)))
        return [*reversed(self._unhashed_free), *fresh, *self._valid_queue()]

    def longest_hit(self, hashes: Sequence[int], max_blocks: int) -> list[int]:
        """Block ids of the longest leading run of ``hashes`` that is cached, at most ``max_blocks``."""
        # map() runs the dict lookups in C; the first miss ends the run
        found = list(map(self._hash_to_block.get, hashes[:max_blocks]))
        try:
            return found[: found.index(None)]  # type: ignore[return-value]
        except ValueError:
            return found  # type: ignore[return-value]

    def count_free_in(self, block_ids: Sequence[int]) -> int:
        """How many of ``block_ids`` sit in the free queue (a hit on them uses up free capacity)."""
        return list(map(self.ref_cnt.__getitem__, block_ids)).count(0)

    # ---- mutations -------------------------------------------------------------------------
    def touch(self, block_ids: Sequence[int]) -> None:
        """Take a reference on each (distinct, cached) block; a free one leaves the free queue.

        Leaving is lazy: the block's queue entry goes stale (count > 0) and is skipped later.
        """
        rc = self.ref_cnt
        taken = 0
        for b in block_ids:
            c = rc[b]
            if c == 0:
                taken += 1
            rc[b] = c + 1
        self._n_cached_free -= taken

    def _fresh(self, n: int) -> range:
        first = self._next_fresh
        self._next_fresh += n
        self.ref_cnt.extend([1] * n)
        self._qpos.extend([-1] * n)
        return range(first, first + n)

    def allocate_one(self) -> int | None:
        """``allocate(1)`` without the list (the decode hot path)."""
        if self._unhashed_free:
            b = self._unhashed_free.pop()
        elif self._next_fresh < self.num_blocks:
            return self._fresh(1)[0]
        elif self._n_cached_free:
            b = self._pop_cached()
        else:
            return None
        self.ref_cnt[b] = 1
        return b

    def allocate(self, n: int) -> list[int] | None:
        """``n`` blocks from the head of the free queue with count 1, or ``None`` if fewer are free.

        Taking a block that still holds a hash evicts that hash.
        """
        if n > self.num_free():
            return None
        stack = self._unhashed_free
        k = min(n, len(stack))
        out = stack[len(stack) - k:][::-1]
        del stack[len(stack) - k:]
        rc = self.ref_cnt
        for b in out:
            rc[b] = 1
        if len(out) < n and self._next_fresh < self.num_blocks:
            out.extend(self._fresh(int(min(n - len(out), self.num_blocks - self._next_fresh))))
        while len(out) < n:
            b = self._pop_cached()
            rc[b] = 1
            out.append(b)
        return out

    def _pop_cached(self) -> int:
        """Take the least recently freed hashed block from the queue and evict its hash."""
        q, rc, pos = self._q, self.ref_cnt, self._qpos
        p = self._qhead
        base = self._qbase
        while True:
            b = q[p - base]
            if rc[b] == 0 and pos[b] == p:
                break
            p += 1
        self._qhead = p + 1
        if p + 1 - base > 4096 and 2 * (p + 1 - base) > len(q):
            del q[: p + 1 - base]  # drop consumed entries (amortised O(1) per entry)
            self._qbase = p + 1
        self._n_cached_free -= 1
        pos[b] = -1
        self._evict(b)
        return b

    def _evict(self, b: int) -> None:
        h = self.block_hash.pop(b)
        self.evictions += 1
        if self._hash_to_block.get(h) == b:
            dups = self._dup_blocks.get(h)
            if dups:
                self._hash_to_block[h] = dups.pop(0)
                if not dups:
                    del self._dup_blocks[h]
            else:
                del self._hash_to_block[h]
        else:
            dups = self._dup_blocks[h]
            dups.remove(b)
            if not dups:
                del self._dup_blocks[h]

    def cache_block(self, block_id: int, block_hash: int) -> None:
        """Record that a full, in-use block holds ``block_hash`` (no-op when caching is off)."""
        if not self.enable_caching:
            return
        if block_id in self.block_hash:
            raise RuntimeError(f"block {block_id} already holds a hash")
        if self.ref_cnt[block_id] <= 0:
            raise RuntimeError(f"block {block_id} is free; only blocks in use can be cached")
        self.block_hash[block_id] = block_hash
        if block_hash in self._hash_to_block:
            self._dup_blocks.setdefault(block_hash, []).append(block_id)
        else:
            self._hash_to_block[block_hash] = block_id

    def free(self, block_ids: Sequence[int]) -> None:
        """Drop one reference on each (distinct) block of a request, deepest (last) block first."""
        rc = self.ref_cnt
        pos = self._qpos
        hashed = self.block_hash
        q = self._q
        end = start = self._qbase + len(q)
        for b in reversed(block_ids):
            c = rc[b] - 1
            rc[b] = c
            if c == 0:
                if b in hashed:
                    pos[b] = end
                    end += 1
                    q.append(b)
                else:
                    self._unhashed_free.append(b)
            elif c < 0:
                rc[b] = 0
                self._n_cached_free += end - start
                raise RuntimeError(f"block {b} freed more often than it was taken")
        self._n_cached_free += end - start

    def check_invariants(self) -> None:
        """Raise if the pool's bookkeeping is inconsistent (for tests)."""
        cached = self._valid_queue()
        if len(cached) != len(set(cached)) or len(cached) != self._n_cached_free:
            raise RuntimeError("cached free queue count is wrong")
        in_queue = set(self._unhashed_free) | set(cached)
        for b in range(1, self._next_fresh):
            rc = self.ref_cnt[b]
            if rc < 0:
                raise RuntimeError(f"block {b} has ref count {rc}")
            if (rc == 0) != (b in in_queue):
                raise RuntimeError(f"block {b}: ref count {rc} but in_queue={b in in_queue}")
        for b in self._unhashed_free:
            if b in self.block_hash:
                raise RuntimeError(f"block {b} is in the unhashed stack but holds a hash")
        for h, b in self._hash_to_block.items():
            if self.block_hash.get(b) != h:
                raise RuntimeError(f"hash map says block {b} holds {h}, block says {self.block_hash.get(b)}")
        if self.num_used() + self.num_free() != self.usable_blocks:
            raise RuntimeError("blocks not conserved: used + free != usable")
