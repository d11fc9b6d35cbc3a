"""BlockPool: the mechanism of a paged KV cache with hash-chained prefix caching (vLLM v1 rules).

The pool owns the blocks, their reference counts, the hash -> block map and the free queue. It
knows nothing about requests (see ``kvcache.py``) or scheduling (see ``scheduler.py``).

Block 0 is the reserved null block, so ``num_blocks`` N gives N - 1 usable blocks. The free queue
is the order in which free blocks are reused; a free block that still holds a hash is "cached"
and reusing it evicts that hash::

    head                                                           tail
    [ unhashed freed blocks | never-used blocks 1,2,3.. | hashed freed blocks, LRU -> MRU ]
      (stack: last freed      (a counter: never               (OrderedDict: O(1) append,
       group is reused         materialised, so N may           pop-front and removal from
       first)                  be huge or infinite)             the middle when a hit touches it)

Rules (vLLM v1, ``v1/core/block_pool.py``): ``allocate`` takes from the head; ``touch`` (a
prefix hit) increments the count and takes a free cached block out of the queue; ``free`` walks
a request's blocks deepest-first and puts blocks that reach count 0 at the tail if hashed (so
the tail of a chain is evicted before its root) and at the head if unhashed, those as one group
in walk order (freeing unhashed [1, 2, 3] leaves the head reading 3, 2, 1). Several blocks can hold
one hash (two requests computed the same content at once); lookups return the first cached.

"No room" is a return value (``allocate`` returns ``None``); misuse (freeing a free block,
hashing a hashed block) raises ``RuntimeError``.

``spill``: set it to a list and the pool appends every hash that leaves it (the eviction of the
last block holding it), in order, for a CPU tier (``simcore/tiers.py``) to take.
"""

from __future__ import annotations

import math
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from itertools import islice

NULL_BLOCK = 0


def check_num_blocks(num_blocks: float) -> None:
    """Raise ValueError unless ``num_blocks`` is a pool size: a whole number >= 2, or math.inf."""
    if not num_blocks >= 2:
        raise ValueError(f"num_blocks={num_blocks!r}: need at least 2 (one is the null block)")
    if num_blocks != math.inf and num_blocks != int(num_blocks):
        raise ValueError(f"num_blocks={num_blocks!r}: must be a whole number or math.inf")


class BlockPool:
    """``num_blocks`` blocks including the null block; ``math.inf`` gives an unbounded pool."""

    def __init__(self, num_blocks: float, enable_caching: bool = True) -> None:
        check_num_blocks(num_blocks)
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.ref_cnt: list[int] = [1]  # index = block id; the null block is never freed
        self.block_hash: list[int | None] = [None]
        self._unhashed_free: list[int] = []  # head of the queue: a stack
        self._next_fresh = 1  # never-used blocks are [_next_fresh, num_blocks)
        self._cached_free: OrderedDict[int, None] = OrderedDict()  # tail: LRU first
        self._hash_to_block: dict[int, int] = {}
        self._dup_blocks: dict[int, list[int]] = {}  # hash -> further blocks holding it
        self.evictions = 0
        # a list to collect every hash that leaves the pool (its last block evicted), in order,
        # for a CPU tier to store (see simcore/tiers.py); None: not collected
        self.spill: list[int] | None = None

    # ---- queries ---------------------------------------------------------------------------
    @property
    def usable_blocks(self) -> float:
        return self.num_blocks - 1

    def num_free(self) -> float:
        """Blocks that can be allocated now (free, cached or never used)."""
        return len(self._unhashed_free) + (self.num_blocks - self._next_fresh) + len(self._cached_free)

    def num_free_uncached(self) -> float:
        """Free blocks that hold no hash: what can be allocated without evicting anything."""
        return len(self._unhashed_free) + (self.num_blocks - self._next_fresh)

    def num_used(self) -> int:
        """Blocks with a reference count above zero (null block excluded)."""
        return int(self._next_fresh - 1 - len(self._unhashed_free) - len(self._cached_free))

    def num_cached(self) -> int:
        """Distinct hashes that a lookup can find."""
        return len(self._hash_to_block)

    def cached_block(self, block_hash: int) -> int | None:
        return self._hash_to_block.get(block_hash)

    def cached_hashes(self) -> frozenset[int]:
        """Every hash a lookup can find now (a snapshot: later changes do not show in it)."""
        return frozenset(self._hash_to_block)

    def hash_of(self, block_id: int) -> int | None:
        """The hash a block holds, or None."""
        return self.block_hash[block_id]

    def is_free(self, block_id: int) -> bool:
        return self.ref_cnt[block_id] == 0

    def free_queue(self) -> list[int]:
        """The free queue head to tail, materialised (for tests and debugging; O(N))."""
        fresh = range(self._next_fresh, int(min(self.num_blocks, self._next_fresh + 10**6)))
        return [*reversed(self._unhashed_free), *fresh, *self._cached_free]

    def longest_hit(self, hashes: Sequence[int], max_blocks: int) -> list[int]:
        """Block ids of the longest leading run of ``hashes`` that is cached, at most ``max_blocks``."""
        # map() runs the dict lookups in C; the first miss ends the run
        found = list(map(self._hash_to_block.get, hashes[:max_blocks]))
        try:
            return found[: found.index(None)]  # type: ignore[return-value]
        except ValueError:
            return found  # type: ignore[return-value]

    def leading_run(self, hashes: Sequence[int], max_blocks: int) -> int:
        """``len(longest_hit(hashes, max_blocks))``: how many leading hashes are cached."""
        get = self._hash_to_block.get
        n = 0
        for h in hashes[:max_blocks]:
            if get(h) is None:
                break
            n += 1
        return n

    def leading_run_evicting(self, hashes: Sequence[int], max_blocks: int, m: int) -> int:
        """:meth:`leading_run` as it will be once the next allocations have evicted the ``m``
        least recently used cached free blocks; -1 (no answer) while a hash has a second
        holder (an eviction may then move it instead of dropping it)."""
        return -1 if self._dup_blocks else self._run_to_gone(hashes, max_blocks, m)[0]

    def leading_run_spared(self, hashes: Sequence[int], max_blocks: int, m: int) -> int:
        """:meth:`leading_run` when none of its blocks is among the ``m`` least recently used
        cached free blocks (the next allocations that evict ``m`` blocks leave it whole), else
        -1; -1 too while a hash has a second holder."""
        if self._dup_blocks:
            return -1
        n, gone = self._run_to_gone(hashes, max_blocks, m)
        return -1 if gone else n

    def _run_to_gone(self, hashes: Sequence[int], max_blocks: int, m: int) -> tuple[int, bool]:
        """The leading run up to the first block missing or among the ``m`` least recently used
        cached free blocks, and whether such a block ended it."""
        gone = set(islice(self._cached_free, m))
        get = self._hash_to_block.get
        n = 0
        for h in hashes[:max_blocks]:
            b = get(h)
            if b is None:
                break
            if b in gone:
                return n, True
            n += 1
        return n, False

    def longest_hit_hinted(
        self, hashes: Sequence[int], max_blocks: int, hint: Sequence[int] | None = None
    ) -> list[int]:
        """:meth:`longest_hit`, exactly, with fewer dict lookups.

        ``hint``: block ids this chain held when it was last released (the previous turn's).
        While no hash has a second holder, a hint block that still holds the chain's hash at its
        position is exactly what the dict would return, so the leading run of such blocks is
        taken by comparing hashes; dict lookups resume where the hint stops matching. The hint may
        come from another pool (a conversation a router moved to another replica): its ids are
        only compared by what they hold here, and one this pool never allocated holds nothing.
        """
        hi = min(max_blocks, len(hashes))
        m = 0
        if hint and not self._dup_blocks:
            n = min(len(hint), hi)
            bh = self.block_hash
            held = [bh[b] if b < len(bh) else None for b in hint[:n]]
            m = n if held == list(hashes[:n]) else next(j for j in range(n) if held[j] != hashes[j])
        out = list(hint[:m]) if hint and m else []
        get = self._hash_to_block.get
        for h in hashes[m:hi]:
            b = get(h)
            if b is None:
                break
            out.append(b)
        return out

    def hit_run(
        self, hashes: Sequence[int], max_blocks: int, hint: Sequence[int] | None = None
    ) -> array[int]:
        """:meth:`longest_hit_hinted` as a block table (``array('q')``, what requests hold)."""
        return array("q", self.longest_hit_hinted(hashes, max_blocks, hint))

    def count_free_in(self, block_ids: Sequence[int]) -> int:
        """How many of ``block_ids`` sit in the free queue (a hit on them uses up free capacity)."""
        rc = self.ref_cnt
        return sum(1 for b in block_ids if rc[b] == 0)

    # ---- mutations -------------------------------------------------------------------------
    def touch(self, block_ids: Sequence[int]) -> None:
        """Take a reference on each (cached) block; a free one leaves the free queue."""
        rc = self.ref_cnt
        cached = self._cached_free
        for b in block_ids:
            c = rc[b]
            if c == 0:
                del cached[b]
            rc[b] = c + 1

    def allocate_one(self) -> int | None:
        """``allocate(1)`` without the list (the decode hot path)."""
        if self._unhashed_free:
            b = self._unhashed_free.pop()
        elif self._next_fresh < self.num_blocks:
            b = self._next_fresh
            self._next_fresh += 1
            self.ref_cnt.append(1)
            self.block_hash.append(None)
            return b
        elif self._cached_free:
            b, _ = self._cached_free.popitem(last=False)
            self._evict(b)
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
        out: list[int] = []
        rc = self.ref_cnt
        while len(out) < n and self._unhashed_free:
            b = self._unhashed_free.pop()
            rc[b] = 1
            out.append(b)
        while len(out) < n and self._next_fresh < self.num_blocks:
            take = min(n - len(out), int(min(self.num_blocks, 2**62)) - self._next_fresh)
            first = self._next_fresh
            self._next_fresh += take
            out.extend(range(first, first + take))
            rc.extend([1] * take)
            self.block_hash.extend([None] * take)
        while len(out) < n:
            b, _ = self._cached_free.popitem(last=False)
            self._evict(b)
            rc[b] = 1
            out.append(b)
        return out

    def allocate_into(self, table: array[int], n: int) -> bool:
        """:meth:`allocate` appended to a block table; False (table unchanged) if no room."""
        new = self.allocate(n)
        if new is None:
            return False
        table.extend(new)
        return True

    def _evict(self, b: int) -> None:
        h = self.block_hash[b]
        self.block_hash[b] = None
        if h is None:  # a hashed-free block always has a hash; defensive for misuse
            raise RuntimeError(f"block {b} in the cached free queue has no hash")
        self.evictions += 1
        if h not in self._dup_blocks:  # the common case: the only block holding h
            del self._hash_to_block[h]
            if self.spill is not None:
                self.spill.append(h)
            return
        dups = self._dup_blocks[h]
        if self._hash_to_block[h] == b:
            self._hash_to_block[h] = dups.pop(0)
        else:
            dups.remove(b)
        if not dups:
            del self._dup_blocks[h]

    def cache_block(self, block_id: int, block_hash: int) -> None:
        """Record that a full, in-use block holds ``block_hash`` (no-op when caching is off)."""
        if not self.enable_caching:
            return
        if self.block_hash[block_id] is not None:
            raise RuntimeError(f"block {block_id} already holds a hash")
        if self.ref_cnt[block_id] <= 0:
            raise RuntimeError(f"block {block_id} is free; only blocks in use can be cached")
        self.block_hash[block_id] = block_hash
        if block_hash in self._hash_to_block:
            self._dup_blocks.setdefault(block_hash, []).append(block_id)
        else:
            self._hash_to_block[block_hash] = block_id

    def cache_blocks(self, block_ids: Sequence[int], hashes: Sequence[int]) -> None:
        """:meth:`cache_block` for each pair, in order."""
        for b, h in zip(block_ids, hashes, strict=True):
            self.cache_block(b, h)

    def free(self, block_ids: Sequence[int]) -> None:
        """Drop one reference on each block of a request, deepest (last) block first.

        Blocks that reach count 0 go back in that walk order: hashed ones appended to the
        tail, unhashed ones put at the head as one group (vLLM's ``free_blocks`` on the
        reversed table), so after freeing unhashed [1, 2, 3] the head reads 3, 2, 1.
        """
        rc = self.ref_cnt
        bh = self.block_hash
        cached = self._cached_free
        unhashed = self._unhashed_free
        start = len(unhashed)
        for b in reversed(block_ids):
            c = rc[b] - 1
            rc[b] = c
            if c == 0:
                if bh[b] is None:
                    unhashed.append(b)
                else:
                    cached[b] = None
            elif c < 0:
                rc[b] = 0
                raise RuntimeError(f"block {b} freed more often than it was taken")
        if len(unhashed) - start > 1:  # the stack's top is the head: the group goes on reversed
            unhashed[start:] = unhashed[start:][::-1]

    def check_invariants(self) -> None:
        """Raise if the pool's bookkeeping is inconsistent (for tests)."""
        in_queue = set(self._unhashed_free) | set(self._cached_free)
        for b in range(1, self._next_fresh):
            if self.ref_cnt[b] < 0:
                raise RuntimeError(f"block {b} has ref count {self.ref_cnt[b]}")
            if (self.ref_cnt[b] == 0) != (b in in_queue):
                raise RuntimeError(f"block {b}: ref count {self.ref_cnt[b]} but in_queue={b in in_queue}")
            if b in self._cached_free and self.block_hash[b] is None:
                raise RuntimeError(f"block {b} is in the cached queue without a hash")
        for h, b in self._hash_to_block.items():
            if self.block_hash[b] != h:
                raise RuntimeError(f"hash map says block {b} holds {h}, block says {self.block_hash[b]}")
        if self.num_used() + self.num_free() != self.usable_blocks:
            raise RuntimeError("blocks not conserved: used + free != usable")


def native_pool_class() -> type[BlockPool] | None:
    """The compiled pool (``simcore/_native.pyx``, same rules and results), or None when it is
    not built or turned off (see ``simcore/native.py``)."""
    from simcore import native

    return None if native.NATIVE is None else native.NATIVE.CBlockPool  # type: ignore[no-any-return]
