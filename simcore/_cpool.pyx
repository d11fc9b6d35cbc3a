# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""CBlockPool: :class:`simcore.blocks.BlockPool` compiled, same rules, same results.

Why: a chat request touches ~170 blocks (hits taken, the chain released, evictions); in
Python each block costs a few dict/list operations, which made block bookkeeping 60% of a
simulation. Here the per-block work runs in C over flat arrays, and the LRU part of the free
queue is an intrusive doubly linked list, as vLLM's ``FreeKVCacheBlockQueue`` is.

The pure-Python ``BlockPool`` stays the reference: the tests run every BlockPool test on both
classes and hold them to identical results over random operation sequences (hypothesis).

Layout per block id ``b`` (index 0 is the null block)::

    ref[b]     reference count
    hashed[b]  whether it holds a hash; hval[b] the hash (a Python hash, fits in int64)
    prv/nxt    LRU links while it is a cached free block (-1 at the ends)

Free queue, head to tail: unhashed stack (last pushed first) | never-used ids | LRU list.
"""

from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free as c_free
from libc.stdlib cimport realloc
from libc.string cimport memset

import math

cdef Py_ssize_t NONE = -1


cdef class CBlockPool:
    cdef readonly object num_blocks
    cdef readonly bint enable_caching
    cdef public Py_ssize_t evictions
    cdef Py_ssize_t limit        # num_blocks as a C integer (2**62 when unbounded)
    cdef bint unbounded
    cdef Py_ssize_t cap          # length of the arrays
    cdef Py_ssize_t next_fresh   # never-used ids are [next_fresh, limit)
    cdef int32_t* ref
    cdef int64_t* hval
    cdef char* hashed
    cdef char* in_lru
    cdef Py_ssize_t* prv
    cdef Py_ssize_t* nxt
    cdef Py_ssize_t head, tail, n_lru
    cdef Py_ssize_t* stack
    cdef Py_ssize_t n_stack, stack_cap
    cdef dict hmap               # hash -> first block holding it
    cdef dict dups               # hash -> further blocks holding it (rare)

    def __cinit__(self, num_blocks, enable_caching=True):
        self.ref = NULL
        self.hval = NULL
        self.hashed = NULL
        self.in_lru = NULL
        self.prv = NULL
        self.nxt = NULL
        self.stack = NULL

    def __init__(self, num_blocks, enable_caching=True):
        if not num_blocks >= 2:
            raise ValueError(f"num_blocks={num_blocks!r}: need at least 2 (one is the null block)")
        if num_blocks != math.inf and num_blocks != int(num_blocks):
            raise ValueError(f"num_blocks={num_blocks!r}: must be a whole number or math.inf")
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.evictions = 0
        # ids are C integers: a pool beyond 2**62 blocks (an absurd memory size) is unbounded in
        # practice; num_free still reports its exact size
        self.unbounded = num_blocks >= 2 ** 62
        self.limit = <Py_ssize_t>(2 ** 62) if self.unbounded else int(num_blocks)
        self.cap = 0
        self._grow(1)
        self.ref[0] = 1  # the null block is never freed
        self.next_fresh = 1
        self.head = NONE
        self.tail = NONE
        self.n_lru = 0
        self.n_stack = 0
        self.stack_cap = 0
        self.hmap = {}
        self.dups = {}

    def __dealloc__(self):
        c_free(self.ref)
        c_free(self.hval)
        c_free(self.hashed)
        c_free(self.in_lru)
        c_free(self.prv)
        c_free(self.nxt)
        c_free(self.stack)

    # ---- storage -------------------------------------------------------------------------
    cdef void _grow(self, Py_ssize_t need) except *:
        """Make the arrays hold ids [0, need)."""
        if need <= self.cap:
            return
        cdef Py_ssize_t new_cap = max(need, 2 * self.cap, 1024)
        new_cap = min(new_cap, self.limit)
        cdef Py_ssize_t old = self.cap
        self.ref = <int32_t*>self._realloc(self.ref, new_cap * sizeof(int32_t))
        self.hval = <int64_t*>self._realloc(self.hval, new_cap * sizeof(int64_t))
        self.hashed = <char*>self._realloc(self.hashed, new_cap * sizeof(char))
        self.in_lru = <char*>self._realloc(self.in_lru, new_cap * sizeof(char))
        self.prv = <Py_ssize_t*>self._realloc(self.prv, new_cap * sizeof(Py_ssize_t))
        self.nxt = <Py_ssize_t*>self._realloc(self.nxt, new_cap * sizeof(Py_ssize_t))
        memset(self.ref + old, 0, (new_cap - old) * sizeof(int32_t))
        memset(self.hashed + old, 0, (new_cap - old) * sizeof(char))
        memset(self.in_lru + old, 0, (new_cap - old) * sizeof(char))
        self.cap = new_cap

    cdef void* _realloc(self, void* p, size_t size) except NULL:
        cdef void* q = realloc(p, size)
        if q == NULL:
            raise MemoryError("block pool arrays")
        return q

    cdef void _push_stack(self, Py_ssize_t b) except *:
        if self.n_stack == self.stack_cap:
            self.stack_cap = max(1024, 2 * self.stack_cap)
            self.stack = <Py_ssize_t*>self._realloc(self.stack, self.stack_cap * sizeof(Py_ssize_t))
        self.stack[self.n_stack] = b
        self.n_stack += 1

    cdef inline void _lru_append(self, Py_ssize_t b):
        self.prv[b] = self.tail
        self.nxt[b] = NONE
        if self.tail == NONE:
            self.head = b
        else:
            self.nxt[self.tail] = b
        self.tail = b
        self.in_lru[b] = 1
        self.n_lru += 1

    cdef inline void _lru_remove(self, Py_ssize_t b):
        cdef Py_ssize_t p = self.prv[b]
        cdef Py_ssize_t n = self.nxt[b]
        if p == NONE:
            self.head = n
        else:
            self.nxt[p] = n
        if n == NONE:
            self.tail = p
        else:
            self.prv[n] = p
        self.in_lru[b] = 0
        self.n_lru -= 1

    cdef inline Py_ssize_t _check_id(self, object block_id) except -1:
        cdef Py_ssize_t b = block_id
        if b < 0 or b >= self.next_fresh:
            raise IndexError(f"block {b} was never allocated")
        return b

    # ---- queries ---------------------------------------------------------------------------
    @property
    def usable_blocks(self):
        return self.num_blocks - 1

    @property
    def ref_cnt(self):
        """Reference counts of the blocks handed out so far, by id (a copy; for tests)."""
        return [self.ref[b] for b in range(self.next_fresh)]

    def num_free(self):
        """Blocks that can be allocated now (free, cached or never used)."""
        if self.unbounded:
            return self.n_stack + (self.num_blocks - self.next_fresh) + self.n_lru
        return self.n_stack + (self.limit - self.next_fresh) + self.n_lru

    def num_used(self):
        """Blocks with a reference count above zero (null block excluded)."""
        return self.next_fresh - 1 - self.n_stack - self.n_lru

    def num_cached(self):
        """Distinct hashes that a lookup can find."""
        return len(self.hmap)

    def cached_block(self, block_hash: int):
        return self.hmap.get(block_hash)

    def hash_of(self, block_id: int):
        cdef Py_ssize_t b = self._check_id(block_id)
        return self.hval[b] if self.hashed[b] else None

    def is_free(self, block_id: int):
        cdef Py_ssize_t b = self._check_id(block_id)
        return self.ref[b] == 0

    def free_queue(self):
        """The free queue head to tail, materialised (for tests and debugging; O(N))."""
        out = [self.stack[i] for i in range(self.n_stack - 1, -1, -1)]
        out.extend(range(self.next_fresh, min(self.limit, self.next_fresh + 10 ** 6)))
        cdef Py_ssize_t b = self.head
        while b != NONE:
            out.append(b)
            b = self.nxt[b]
        return out

    def longest_hit(self, hashes: list, Py_ssize_t max_blocks):
        """Block ids of the longest leading run of ``hashes`` that is cached, at most ``max_blocks``."""
        cdef Py_ssize_t n = min(max_blocks, len(hashes))
        cdef Py_ssize_t j
        cdef dict hmap = self.hmap
        out = []
        for j in range(n):
            b = hmap.get(hashes[j])
            if b is None:
                break
            out.append(b)
        return out

    def longest_hit_bisect(self, hashes: list, Py_ssize_t max_blocks, list hint=None):
        """Same as ``BlockPool.longest_hit_bisect``: O(log n) dict lookups relying on the cache
        being prefix-closed, and the previous turn's block ids verified in one C loop."""
        cdef dict hmap = self.hmap
        cdef Py_ssize_t hi = min(max_blocks, len(hashes))
        cdef Py_ssize_t lo, mid, j, b
        if hi == 0 or hashes[0] not in hmap:
            return []
        lo = 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if hashes[mid - 1] not in hmap:
                hi = mid - 1
            else:
                lo = mid
        if hint is not None and len(hint) >= lo and not self.dups:
            for j in range(lo):
                b = hint[j]
                if b < 0 or b >= self.next_fresh or not self.hashed[b] or self.hval[b] != <int64_t>hashes[j]:
                    break
            else:
                return hint[:lo]
        return [hmap.get(h) for h in hashes[:lo]]

    def count_free_in(self, block_ids: list):
        """How many of ``block_ids`` sit in the free queue (a hit on them uses up free capacity)."""
        cdef Py_ssize_t b, n = 0
        for b in block_ids:
            if self.ref[b] == 0:
                n += 1
        return n

    # ---- mutations -------------------------------------------------------------------------
    def touch(self, block_ids: list):
        """Take a reference on each (cached) block; a free one leaves the free queue."""
        cdef Py_ssize_t b
        for b in block_ids:
            if self.ref[b] == 0:
                if not self.in_lru[b]:
                    raise KeyError(b)
                self._lru_remove(b)
            self.ref[b] += 1

    cdef Py_ssize_t _take_one(self) except -2:
        """The head of the free queue with count 1, or -1 when none is free."""
        cdef Py_ssize_t b
        if self.n_stack:
            self.n_stack -= 1
            b = self.stack[self.n_stack]
        elif self.next_fresh < self.limit:
            b = self.next_fresh
            self._grow(b + 1)
            self.next_fresh += 1
            self.hashed[b] = 0
        elif self.head != NONE:
            b = self.head
            self._lru_remove(b)
            self._evict(b)
        else:
            return -1
        self.ref[b] = 1
        return b

    def allocate_one(self):
        """``allocate(1)`` without the list (the decode hot path)."""
        cdef Py_ssize_t b = self._take_one()
        return None if b < 0 else b

    def allocate(self, Py_ssize_t n):
        """``n`` blocks from the head of the free queue with count 1, or ``None`` if fewer are free.

        Taking a block that still holds a hash evicts that hash.
        """
        cdef Py_ssize_t i
        if not self.unbounded and n > self.n_stack + (self.limit - self.next_fresh) + self.n_lru:
            return None
        out = []
        for i in range(n):
            out.append(self._take_one())
        return out

    cdef int _evict(self, Py_ssize_t b) except -1:
        if not self.hashed[b]:
            raise RuntimeError(f"block {b} in the cached free queue has no hash")
        h = self.hval[b]
        self.hashed[b] = 0
        self.evictions += 1
        if not self.dups or h not in self.dups:  # the common case: the only block holding h
            del self.hmap[h]
            return 0
        dups = self.dups[h]
        if self.hmap[h] == b:
            self.hmap[h] = dups.pop(0)
        else:
            dups.remove(b)
        if not dups:
            del self.dups[h]
        return 0

    def cache_block(self, block_id: int, block_hash: int):
        """Record that a full, in-use block holds ``block_hash`` (no-op when caching is off)."""
        if not self.enable_caching:
            return
        cdef Py_ssize_t b = self._check_id(block_id)
        if self.hashed[b]:
            raise RuntimeError(f"block {b} already holds a hash")
        if self.ref[b] <= 0:
            raise RuntimeError(f"block {b} is free; only blocks in use can be cached")
        self.hashed[b] = 1
        self.hval[b] = block_hash
        if block_hash in self.hmap:
            self.dups.setdefault(block_hash, []).append(b)
        else:
            self.hmap[block_hash] = b

    def cache_blocks(self, block_ids: list, hashes: list):
        """``cache_block`` for each pair, in order."""
        cdef Py_ssize_t i
        if len(block_ids) != len(hashes):
            raise ValueError("cache_blocks: block_ids and hashes differ in length")
        for i in range(len(block_ids)):
            self.cache_block(block_ids[i], hashes[i])

    def free(self, block_ids: list):
        """Drop one reference on each block of a request, deepest (last) block first."""
        cdef Py_ssize_t i, b
        cdef int32_t c
        for i in range(len(block_ids) - 1, -1, -1):
            b = block_ids[i]
            c = self.ref[b] - 1
            if c == 0:
                self.ref[b] = 0
                if self.hashed[b]:
                    self._lru_append(b)
                else:
                    self._push_stack(b)
            elif c < 0:
                raise RuntimeError(f"block {b} freed more often than it was taken")
            else:
                self.ref[b] = c

    def check_invariants(self):
        """Raise if the pool's bookkeeping is inconsistent (for tests)."""
        cdef Py_ssize_t b, i, n = 0
        in_stack = {self.stack[i] for i in range(self.n_stack)}
        b = self.head
        while b != NONE:
            n += 1
            if not self.in_lru[b] or not self.hashed[b]:
                raise RuntimeError(f"block {b} is in the LRU list but flagged otherwise")
            b = self.nxt[b]
        if n != self.n_lru:
            raise RuntimeError(f"LRU list holds {n} blocks, count says {self.n_lru}")
        for b in range(1, self.next_fresh):
            if self.ref[b] < 0:
                raise RuntimeError(f"block {b} has ref count {self.ref[b]}")
            queued = bool(self.in_lru[b]) or b in in_stack
            if (self.ref[b] == 0) != queued:
                raise RuntimeError(f"block {b}: ref count {self.ref[b]} but in_queue={queued}")
        for h, b in self.hmap.items():
            if not self.hashed[b] or self.hval[b] != h:
                raise RuntimeError(f"hash map says block {b} holds {h}, block says otherwise")
        if self.num_used() + self.num_free() != self.usable_blocks:
            raise RuntimeError("blocks not conserved: used + free != usable")
