# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled hot paths: CBlockPool (:class:`simcore.blocks.BlockPool`, same rules and results),
``extend_hashes`` (``TokenSeq.ensure_hashes``'s loop, same values) and the decode window's
block events.

Why: a chat request touches ~170 blocks (hits taken, the chain released, evictions); in
Python each block costs a few dict/list operations, which made block bookkeeping 60% of a
simulation. Here the per-block work runs in C over flat arrays, and the LRU part of the free
queue is an intrusive doubly linked list, as vLLM's ``FreeKVCacheBlockQueue`` is.

The pure-Python ``BlockPool`` stays the reference: the tests run every BlockPool test on both
classes and hold them to identical results over random operation sequences (hypothesis).

Per block id ``b`` (index 0 is the null block) one ``Blk`` struct: reference count, hash
(a 64-bit block hash, see hashing.py) and whether it holds one, LRU links while it is a cached free
block. The hash -> block map is an open-addressing table over C arrays.

Free queue, head to tail: unhashed stack (top first) | never-used ids | LRU list.
"""

from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport calloc
from libc.stdlib cimport free as c_free
from libc.stdlib cimport realloc
from libc.string cimport memset
from cpython cimport array
from cpython.long cimport PyLong_AsUnsignedLongLongMask

import array as py_array

from simcore.blocks import check_num_blocks

cdef Py_ssize_t NONE = -1
cdef Py_ssize_t _AHEAD = 8  # blocks a table walk prefetches ahead


cdef extern from *:
    void __builtin_prefetch(const void* addr) noexcept nogil


cdef inline array.array _i64(object seq):
    """``seq`` as an array('q') (TokenSeq's hashes already are one; lists are converted)."""
    if type(seq) is py_array.array and (<array.array>seq).ob_descr.typecode == b"q":
        return <array.array>seq
    return py_array.array("q", seq)


cdef inline void _push_i64(array.array a, int64_t v) except *:
    cdef Py_ssize_t n = len(a)
    array.resize_smart(a, n + 1)
    a.data.as_longlongs[n] = v


cdef struct Blk:
    # one block's state in one place (32 bytes): touching a block costs one cache line
    int64_t hval      # its hash, when hashed
    int64_t prv       # LRU links while it is a cached free block (-1 at the ends)
    int64_t nxt
    int32_t ref       # reference count
    char hashed
    char in_lru
    char gone         # set while leading_run_evicting counts it evicted


cdef struct Slot:
    # one hash-table slot: a probe reads key and block from one cache line
    int64_t key
    Py_ssize_t val


cdef class CBlockPool:
    cdef readonly object num_blocks
    cdef readonly bint enable_caching
    cdef public Py_ssize_t evictions
    cdef Py_ssize_t limit        # num_blocks as a C integer (2**62 when unbounded)
    cdef bint unbounded
    cdef Py_ssize_t cap          # length of the arrays
    cdef Py_ssize_t next_fresh   # never-used ids are [next_fresh, limit)
    cdef Blk* blk                # per-block state, by id
    cdef Py_ssize_t head, tail, n_lru
    cdef Py_ssize_t* stack
    cdef Py_ssize_t n_stack, stack_cap
    # hash -> first block holding it: open addressing with linear probing over one C array
    # of (key, block) slots (block 0 marks an empty slot: the null block never holds a hash)
    cdef Slot* tab
    cdef Py_ssize_t tcap, tcount
    cdef int tshift
    cdef dict dups               # hash -> further blocks holding it (rare)
    # hashes that left the pool, in order, for a CPU tier (BlockPool.spill); None: not collected
    cdef public array.array spill
    cdef list ids                # ids[b] is b: one int object per block, shared by all lists

    def __cinit__(self, num_blocks, enable_caching=True):
        self.blk = NULL
        self.stack = NULL
        self.tab = NULL

    def __init__(self, num_blocks, enable_caching=True):
        check_num_blocks(num_blocks)
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.evictions = 0
        # ids are C integers: a pool beyond 2**62 blocks (an absurd memory size) is unbounded in
        # practice; num_free still reports its exact size
        self.unbounded = num_blocks >= 2 ** 62
        self.limit = <Py_ssize_t>(2 ** 62) if self.unbounded else int(num_blocks)
        self.cap = 0
        self.ids = []
        self._grow(1)
        self.blk[0].ref = 1  # the null block is never freed
        self.next_fresh = 1
        self.head = NONE
        self.tail = NONE
        self.n_lru = 0
        self.n_stack = 0
        self.stack_cap = 0
        self.tcap = 0
        self.tcount = 0
        self._resize_table(1024)
        self.dups = {}
        self.spill = None

    def __dealloc__(self):
        c_free(self.blk)
        c_free(self.stack)
        c_free(self.tab)

    # ---- storage -------------------------------------------------------------------------
    cdef void _grow(self, Py_ssize_t need) except *:
        """Make the arrays hold ids [0, need)."""
        if need <= self.cap:
            return
        cdef Py_ssize_t new_cap = max(need, 2 * self.cap, 1024)
        new_cap = min(new_cap, self.limit)
        cdef Py_ssize_t old = self.cap
        self.blk = <Blk*>self._realloc(self.blk, new_cap * sizeof(Blk))
        memset(self.blk + old, 0, (new_cap - old) * sizeof(Blk))
        self.ids.extend(range(old, new_cap))
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
        self.blk[b].prv = self.tail
        self.blk[b].nxt = NONE
        if self.tail == NONE:
            self.head = b
        else:
            self.blk[self.tail].nxt = b
        self.tail = b
        self.blk[b].in_lru = 1
        self.n_lru += 1

    cdef inline void _lru_remove(self, Py_ssize_t b):
        cdef Py_ssize_t p = self.blk[b].prv
        cdef Py_ssize_t n = self.blk[b].nxt
        if p == NONE:
            self.head = n
        else:
            self.blk[p].nxt = n
        if n == NONE:
            self.tail = p
        else:
            self.blk[n].prv = p
        self.blk[b].in_lru = 0
        self.n_lru -= 1

    cdef inline Py_ssize_t _free_count(self):
        """Blocks that can be allocated now (of a bounded pool)."""
        return self.n_stack + (self.limit - self.next_fresh) + self.n_lru

    cdef inline bint _has_room(self, Py_ssize_t n):
        return self.unbounded or n <= self._free_count()

    cdef inline void _prefetch(self, int64_t b) noexcept:
        """Start loading block ``b``'s state (a walk over a block table misses the cache on
        almost every block; loads issued ahead overlap)."""
        if 0 <= b < self.next_fresh:
            __builtin_prefetch(&self.blk[b])

    cdef inline Py_ssize_t _check_id(self, object block_id) except -1:
        return self._check_c(block_id)

    cdef inline Py_ssize_t _check_c(self, int64_t b) except -1:
        if b < 0 or b >= self.next_fresh:
            raise IndexError(f"block {b} was never allocated")
        return <Py_ssize_t>b

    # ---- the hash table ----------------------------------------------------------------------
    cdef inline Py_ssize_t _slot(self, int64_t key):
        return <Py_ssize_t>((<uint64_t>key * <uint64_t>0x9E3779B97F4A7C15) >> self.tshift)

    cdef inline void _prefetch_slot(self, int64_t key) noexcept:
        """Start loading ``key``'s hash-table slot (a walk down a prompt's chain probes a new,
        random slot per block; loads issued ahead overlap)."""
        __builtin_prefetch(&self.tab[self._slot(key)])

    cdef Py_ssize_t _find(self, int64_t key):
        """The block holding ``key``, or 0."""
        cdef Py_ssize_t mask = self.tcap - 1
        cdef Py_ssize_t i = self._slot(key)
        cdef Py_ssize_t v
        while True:
            v = self.tab[i].val
            if v == 0 or self.tab[i].key == key:
                return v
            i = (i + 1) & mask

    cdef int _put(self, int64_t key, Py_ssize_t val) except -1:
        """Insert ``key`` or replace its block."""
        if 2 * (self.tcount + 1) > self.tcap:
            self._resize_table(2 * self.tcap)
        cdef Py_ssize_t mask = self.tcap - 1
        cdef Py_ssize_t i = self._slot(key)
        while self.tab[i].val != 0:
            if self.tab[i].key == key:
                self.tab[i].val = val
                return 0
            i = (i + 1) & mask
        self.tab[i].key = key
        self.tab[i].val = val
        self.tcount += 1
        return 0

    cdef int _delete(self, int64_t key) except -1:
        """Remove ``key`` (it must be present), shifting later entries of its run back."""
        cdef Py_ssize_t mask = self.tcap - 1
        cdef Py_ssize_t i = self._slot(key)
        cdef Py_ssize_t j, k
        while self.tab[i].key != key or self.tab[i].val == 0:
            if self.tab[i].val == 0:
                raise KeyError(key)
            i = (i + 1) & mask
        j = i
        while True:
            j = (j + 1) & mask
            if self.tab[j].val == 0:
                break
            k = self._slot(self.tab[j].key)
            # the entry at j may move to the hole at i unless its home k lies cyclically in (i, j]
            if (i < k <= j) if i <= j else (i < k or k <= j):
                continue
            self.tab[i].key = self.tab[j].key
            self.tab[i].val = self.tab[j].val
            i = j
        self.tab[i].val = 0
        self.tcount -= 1
        return 0

    cdef int _resize_table(self, Py_ssize_t new_cap) except -1:
        cdef Slot* old = self.tab
        cdef Py_ssize_t old_cap = self.tcap, i
        cdef int bits = 0
        while (<Py_ssize_t>1 << bits) < new_cap:
            bits += 1
        self.tab = <Slot*>calloc(<size_t>1 << bits, sizeof(Slot))
        if self.tab == NULL:
            self.tab = old
            raise MemoryError("block pool hash table")
        self.tcap = <Py_ssize_t>1 << bits
        self.tshift = 64 - bits
        self.tcount = 0
        for i in range(old_cap):
            if old[i].val != 0:
                self._put(old[i].key, old[i].val)
        c_free(old)
        return 0

    # ---- queries ---------------------------------------------------------------------------
    @property
    def usable_blocks(self):
        return self.num_blocks - 1

    @property
    def ref_cnt(self):
        """Reference counts of the blocks handed out so far, by id (a copy; for tests)."""
        return [self.blk[b].ref for b in range(self.next_fresh)]

    def num_free(self):
        """Blocks that can be allocated now (free, cached or never used)."""
        if self.unbounded:
            return self.n_stack + (self.num_blocks - self.next_fresh) + self.n_lru
        return self._free_count()

    def num_free_uncached(self):
        """Free blocks that hold no hash: what can be allocated without evicting anything."""
        if self.unbounded:
            return self.n_stack + (self.num_blocks - self.next_fresh)
        return self.n_stack + (self.limit - self.next_fresh)

    def num_used(self):
        """Blocks with a reference count above zero (null block excluded)."""
        return self.next_fresh - 1 - self.n_stack - self.n_lru

    def num_cached(self):
        """Distinct hashes that a lookup can find."""
        return self.tcount

    def cached_block(self, block_hash: int):
        cdef Py_ssize_t b = self._find(block_hash)
        return self.ids[b] if b else None

    def cached_hashes(self):
        """Every hash a lookup can find now (a snapshot: later changes do not show in it)."""
        cdef Py_ssize_t i
        return frozenset([self.tab[i].key for i in range(self.tcap) if self.tab[i].val != 0])

    def hash_of(self, block_id: int):
        cdef Py_ssize_t b = self._check_id(block_id)
        return self.blk[b].hval if self.blk[b].hashed else None

    def is_free(self, block_id: int):
        cdef Py_ssize_t b = self._check_id(block_id)
        return self.blk[b].ref == 0

    def free_queue(self):
        """The free queue head to tail, materialised (for tests and debugging; O(N))."""
        out = [self.stack[i] for i in range(self.n_stack - 1, -1, -1)]
        out.extend(range(self.next_fresh, min(self.limit, self.next_fresh + 10 ** 6)))
        cdef Py_ssize_t b = self.head
        while b != NONE:
            out.append(self.ids[b])
            b = self.blk[b].nxt
        return out

    def longest_hit(self, hashes, Py_ssize_t max_blocks):
        """Block ids of the longest leading run of ``hashes`` that is cached, at most ``max_blocks``."""
        cdef array.array ha = _i64(hashes)
        cdef int64_t* hp = <int64_t*>ha.data.as_longlongs
        cdef Py_ssize_t n = min(max_blocks, len(ha))
        cdef Py_ssize_t j
        cdef Py_ssize_t b
        out = []
        for j in range(n):
            b = self._find(hp[j])
            if b == 0:
                break
            out.append(self.ids[b])
        return out

    def leading_run(self, hashes, Py_ssize_t max_blocks):
        """``len(longest_hit(hashes, max_blocks))``: how many leading hashes are cached."""
        cdef array.array ha = _i64(hashes)
        cdef int64_t* hp = <int64_t*>ha.data.as_longlongs
        cdef Py_ssize_t n = min(max_blocks, len(ha))
        cdef Py_ssize_t j = 0
        while j < n:
            if j + _AHEAD < n:
                self._prefetch_slot(hp[j + _AHEAD])
            if self._find(hp[j]) == 0:
                break
            j += 1
        return j

    def leading_run_evicting(self, hashes, Py_ssize_t max_blocks, Py_ssize_t m):
        """``BlockPool.leading_run_evicting``: the leading run once the ``m`` least recently
        used cached free blocks are evicted, or -1 with a hash held twice."""
        if self.dups:
            return -1
        return self._run_to_gone(_i64(hashes), max_blocks, m) // 2

    def leading_run_spared(self, hashes, Py_ssize_t max_blocks, Py_ssize_t m):
        """``BlockPool.leading_run_spared``: the leading run when none of its blocks is among
        the ``m`` least recently used cached free blocks, else -1 (and -1 with a hash held
        twice)."""
        if self.dups:
            return -1
        cdef Py_ssize_t r = self._run_to_gone(_i64(hashes), max_blocks, m)
        return -1 if r % 2 else r // 2

    cdef Py_ssize_t _run_to_gone(self, array.array ha, Py_ssize_t max_blocks, Py_ssize_t m) except -1:
        """2 x the leading run of ``ha`` up to the first block missing or among the ``m`` least
        recently used cached free blocks (flagged while it counts), plus 1 if such a block ended
        it."""
        cdef int64_t* hp = <int64_t*>ha.data.as_longlongs
        cdef Py_ssize_t n = min(max_blocks, len(ha))
        cdef Py_ssize_t j = 0, k = 0, b = self.head, gone = 0
        while k < m and b != NONE:
            self.blk[b].gone = 1
            b = self.blk[b].nxt
            k += 1
        while j < n:
            if j + _AHEAD < n:
                self._prefetch_slot(hp[j + _AHEAD])
            b = self._find(hp[j])
            if b == 0:
                break
            if self.blk[b].gone:
                gone = 1
                break
            j += 1
        b = self.head
        while k:
            self.blk[b].gone = 0
            b = self.blk[b].nxt
            k -= 1
        return 2 * j + gone

    def longest_hit_hinted(self, hashes, Py_ssize_t max_blocks, hint=None):
        """``BlockPool.longest_hit_hinted``: the hint's leading run of blocks that still hold
        the chain's hashes, compared in C, then table lookups until the first miss."""
        return [self.ids[b] for b in self.hit_run(hashes, max_blocks, hint)]

    def hit_run(self, hashes, Py_ssize_t max_blocks, hint=None):
        """``longest_hit_hinted`` as a block table (``array('q')``, what requests hold)."""
        cdef array.array ha = _i64(hashes)
        cdef int64_t* hp = <int64_t*>ha.data.as_longlongs
        cdef Py_ssize_t hi = min(max_blocks, len(ha))
        cdef Py_ssize_t m = 0, n, b, j
        cdef array.array hint_a
        cdef int64_t* hb
        if hint is not None and not self.dups:
            hint_a = _i64(hint)
            hb = <int64_t*>hint_a.data.as_longlongs
            n = min(len(hint_a), hi)
            while m < n:
                if m + _AHEAD < n:
                    self._prefetch(hb[m + _AHEAD])
                b = hb[m]
                if b < 0 or b >= self.next_fresh or not self.blk[b].hashed or self.blk[b].hval != hp[m]:
                    break
                m += 1
            out = hint_a[:m]
        else:
            out = py_array.array("q")
        for j in range(m, hi):
            if j + _AHEAD < hi:
                self._prefetch_slot(hp[j + _AHEAD])
            b = self._find(hp[j])
            if b == 0:
                break
            _push_i64(out, b)
        return out

    def admit_chain(self, hashes, hint, Py_ssize_t num_tokens, Py_ssize_t budget, Py_ssize_t bs):
        """``KVCacheManager.lookup`` then ``admit`` for a waiting request, in one call.

        The longest cached leading run of ``hashes`` (leaving the last of ``num_tokens`` to
        compute; none when caching is off), then room for ``n = min(num_tokens - hit tokens,
        budget)`` new tokens, with every block those fill hashed. Returns (block table, n, hit
        blocks), or None, with nothing changed, when the blocks do not fit.
        """
        cdef array.array table
        cdef array.array ha = _i64(hashes)
        cdef int64_t* hp = <int64_t*>ha.data.as_longlongs
        cdef int64_t* tp
        cdef Py_ssize_t n_hits, computed, n, need, full, j
        if self.enable_caching:
            table = self.hit_run(ha, (num_tokens - 1) // bs, hint)
        else:
            table = py_array.array("q")
        n_hits = len(table)
        computed = n_hits * bs
        n = min(num_tokens - computed, budget)
        need = (computed + n + bs - 1) // bs - n_hits
        full = (computed + n) // bs
        if self.enable_caching and full > len(ha):
            raise ValueError(f"admit_chain: {len(ha)} block hashes, {full} blocks to cache")
        # hits in the free queue use up free blocks too
        if not self._has_room(need + self._count_free(table)):
            return None
        self.touch(table)
        self.allocate_into(table, need)
        if self.enable_caching:
            tp = <int64_t*>table.data.as_longlongs  # the table may have moved as it grew
            for j in range(n_hits, full):
                self._cache(<Py_ssize_t>tp[j], hp[j])
        return table, n, n_hits

    def count_free_in(self, block_ids):
        """How many of ``block_ids`` sit in the free queue (a hit on them uses up free capacity)."""
        return self._count_free(_i64(block_ids))

    cdef Py_ssize_t _count_free(self, array.array table) except -1:
        cdef int64_t* p = <int64_t*>table.data.as_longlongs
        cdef Py_ssize_t i, n = 0
        for i in range(len(table)):
            if self.blk[self._check_c(p[i])].ref == 0:
                n += 1
        return n

    # ---- mutations -------------------------------------------------------------------------
    def touch(self, block_ids):
        """Take a reference on each (cached) block; a free one leaves the free queue."""
        cdef array.array a = _i64(block_ids)
        cdef int64_t* p = <int64_t*>a.data.as_longlongs
        cdef Py_ssize_t i, b
        for i in range(len(a)):
            b = self._check_c(p[i])
            if self.blk[b].ref == 0:
                if not self.blk[b].in_lru:
                    raise KeyError(b)
                self._lru_remove(b)
            self.blk[b].ref += 1

    cdef Py_ssize_t _take_one(self) except -2:
        """The head of the free queue with count 1, or -1 when none is free."""
        cdef Py_ssize_t b
        if self.n_stack:
            self.n_stack -= 1
            b = self.stack[self.n_stack]
        elif self.next_fresh < self.limit:
            b = self.next_fresh
            self._grow(b + 1)  # zeroed: not hashed, not in the LRU list
            self.next_fresh += 1
        elif self.head != NONE:
            b = self.head
            self._lru_remove(b)
            self._evict(b)
        else:
            return -1
        self.blk[b].ref = 1
        return b

    def allocate_one(self):
        """``allocate(1)`` without the list (the decode hot path)."""
        cdef Py_ssize_t b = self._take_one()
        return None if b < 0 else self.ids[b]

    def allocate(self, Py_ssize_t n):
        """``n`` blocks from the head of the free queue with count 1, or ``None`` if fewer are free.

        Taking a block that still holds a hash evicts that hash.
        """
        cdef Py_ssize_t i
        if not self._has_room(n):
            return None
        out = []
        for i in range(n):
            out.append(self.ids[self._take_one()])
        return out

    def allocate_into(self, array.array table, Py_ssize_t n):
        """``allocate`` appended to a block table; False (table unchanged) if no room."""
        cdef Py_ssize_t i
        if not self._has_room(n):
            return False
        for i in range(n):
            _push_i64(table, self._take_one())
        return True

    cdef int _evict(self, Py_ssize_t b) except -1:
        if not self.blk[b].hashed:
            raise RuntimeError(f"block {b} in the cached free queue has no hash")
        cdef int64_t h = self.blk[b].hval
        self.blk[b].hashed = 0
        self.evictions += 1
        if not self.dups or h not in self.dups:  # the common case: the only block holding h
            self._delete(h)
            if self.spill is not None:
                _push_i64(self.spill, h)
            return 0
        dups = self.dups[h]
        if self._find(h) == b:
            self._put(h, dups.pop(0))
        else:
            dups.remove(b)
        if not dups:
            del self.dups[h]
        return 0

    def cache_block(self, block_id: int, block_hash: int):
        """Record that a full, in-use block holds ``block_hash`` (no-op when caching is off)."""
        if self.enable_caching:
            self._cache(self._check_id(block_id), block_hash)

    def cache_blocks(self, block_ids, hashes):
        """``cache_block`` for each pair, in order."""
        cdef Py_ssize_t i
        cdef array.array ia = _i64(block_ids)
        cdef array.array ha = _i64(hashes)
        cdef int64_t* ip = <int64_t*>ia.data.as_longlongs
        cdef int64_t* hp = <int64_t*>ha.data.as_longlongs
        if len(ia) != len(ha):
            raise ValueError("cache_blocks: block_ids and hashes differ in length")
        if not self.enable_caching:
            return
        for i in range(len(ia)):
            self._cache(self._check_c(ip[i]), hp[i])

    cdef int _cache(self, Py_ssize_t b, int64_t h) except -1:
        if self.blk[b].hashed:
            raise RuntimeError(f"block {b} already holds a hash")
        if self.blk[b].ref <= 0:
            raise RuntimeError(f"block {b} is free; only blocks in use can be cached")
        self.blk[b].hashed = 1
        self.blk[b].hval = h
        if self._find(h):
            self.dups.setdefault(h, []).append(b)
        else:
            self._put(h, b)
        return 0

    def free(self, block_ids):
        """Drop one reference on each block of a request, deepest (last) block first;
        ``BlockPool.free``'s order: hashed ones to the LRU tail, unhashed ones to the head as
        one group in walk order (the stack segment this call pushed is reversed at the end)."""
        cdef array.array a = _i64(block_ids)
        cdef int64_t* p = <int64_t*>a.data.as_longlongs
        cdef Py_ssize_t i, b, lo = self.n_stack, hi
        cdef int32_t c
        for i in range(len(a) - 1, -1, -1):
            if i >= _AHEAD:
                self._prefetch(p[i - _AHEAD])
            b = self._check_c(p[i])
            c = self.blk[b].ref - 1
            if c == 0:
                self.blk[b].ref = 0
                if self.blk[b].hashed:
                    self._lru_append(b)
                else:
                    self._push_stack(b)
            elif c < 0:
                raise RuntimeError(f"block {b} freed more often than it was taken")
            else:
                self.blk[b].ref = c
        hi = self.n_stack - 1
        while lo < hi:
            b = self.stack[lo]
            self.stack[lo] = self.stack[hi]
            self.stack[hi] = b
            lo += 1
            hi -= 1

    def check_invariants(self):
        """Raise if the pool's bookkeeping is inconsistent (for tests)."""
        cdef Py_ssize_t b, i, n = 0
        in_stack = {self.stack[i] for i in range(self.n_stack)}
        b = self.head
        while b != NONE:
            n += 1
            if not self.blk[b].in_lru or not self.blk[b].hashed:
                raise RuntimeError(f"block {b} is in the LRU list but flagged otherwise")
            b = self.blk[b].nxt
        if n != self.n_lru:
            raise RuntimeError(f"LRU list holds {n} blocks, count says {self.n_lru}")
        for b in range(1, self.next_fresh):
            if self.blk[b].ref < 0:
                raise RuntimeError(f"block {b} has ref count {self.blk[b].ref}")
            queued = bool(self.blk[b].in_lru) or b in in_stack
            if (self.blk[b].ref == 0) != queued:
                raise RuntimeError(f"block {b}: ref count {self.blk[b].ref} but in_queue={queued}")
        n = 0
        for i in range(self.tcap):
            b = self.tab[i].val
            if b == 0:
                continue
            n += 1
            h = self.tab[i].key
            if not self.blk[b].hashed or self.blk[b].hval != h:
                raise RuntimeError(f"hash map says block {b} holds {h}, block says otherwise")
            if self._find(h) != b:
                raise RuntimeError(f"hash {h} sits where a probe cannot find it")
        if n != self.tcount:
            raise RuntimeError(f"hash table holds {n} entries, count says {self.tcount}")
        if self.num_used() + self.num_free() != self.usable_blocks:
            raise RuntimeError("blocks not conserved: used + free != usable")


cdef uint64_t _K = 0x9E3779B97F4A7C15ULL
cdef uint64_t _C1 = 0xFF51AFD7ED558CCDULL
cdef uint64_t _C2 = 0xC4CEB9FE1A85EC53ULL


cdef inline uint64_t _fold(uint64_t h, uint64_t w) noexcept nogil:
    """One word into the hash: fmix64(h * K + w), as ``simcore.hashing.block_hash`` does."""
    cdef uint64_t k = h * _K + w
    k ^= k >> 33
    k *= _C1
    k ^= k >> 33
    k *= _C2
    return k ^ (k >> 33)


def extend_hashes(list segs, Py_ssize_t seg, Py_ssize_t off, Py_ssize_t block_size,
                  Py_ssize_t want, array.array hashes, object parent):
    """``simcore.hashing.py_extend_hashes`` compiled: the same words folded, the same values."""
    cdef Py_ssize_t bs = block_size, length = 0, take, need, i, n
    cdef uint64_t h = PyLong_AsUnsignedLongLongMask(parent)
    cdef uint64_t cid = 0
    cdef tuple segment
    cdef bint loaded = False  # cid and length hold segs[seg]
    while len(hashes) < want:
        if not loaded:
            segment = segs[seg]
            cid = PyLong_AsUnsignedLongLongMask(segment[0])
            length = segment[1]
            loaded = True
        if length - off >= bs:  # whole blocks inside this segment
            n = min((length - off) // bs, want - len(hashes))
            for i in range(n):
                h = _fold(_fold(_fold(h, cid), <uint64_t>off), <uint64_t>(off + bs))
                _push_i64(hashes, <int64_t>h)
                off += bs
            if off == length:
                seg += 1
                off = 0
                loaded = False
            continue
        need = bs
        while need:
            if not loaded:
                segment = segs[seg]
                cid = PyLong_AsUnsignedLongLongMask(segment[0])
                length = segment[1]
            loaded = True
            take = min(need, length - off)
            h = _fold(_fold(_fold(h, cid), <uint64_t>off), <uint64_t>(off + take))
            need -= take
            off += take
            if off == length:
                seg += 1
                off = 0
                loaded = False
        _push_i64(hashes, <int64_t>h)
    return seg, off


def decode_block_events(list phase, Py_ssize_t first, Py_ssize_t last, CBlockPool pool, bint caching):
    """``FastScheduler._block_events`` in C (same order, same blocks, same hashes).

    ``phase[p]`` lists the decode members with phase ``p`` as ``fastforward.Member`` tuples
    ``(admit_seq, request, block table, block hashes, c0 - d0)``; for each step of
    ``first..last`` the members at phase ``-step % B`` start a block and those at
    ``(-step - 1) % B`` fill one. All allocations run first (step by step, admission order
    within a step), then all hashes.
    """
    cdef Py_ssize_t bs = len(phase)
    cdef Py_ssize_t step, need = 0, j, b
    cdef list bucket
    cdef tuple entry
    cdef array.array table
    for step in range(first, last + 1):
        need += len(<list>phase[-step % bs])
    if need:
        if not pool._has_room(need):
            raise RuntimeError("fast path ran out of blocks; the window bound is wrong")
        for step in range(first, last + 1):
            bucket = phase[-step % bs]
            for entry in bucket:
                b = pool._take_one()
                _push_i64(<array.array?>entry[2], b)
    if not caching or not pool.enable_caching:
        return
    for step in range(first, last + 1):
        bucket = phase[(-step - 1) % bs]
        for entry in bucket:
            table = <array.array?>entry[2]
            j = (<Py_ssize_t>entry[4] + step + 1) // bs - 1
            pool._cache(<Py_ssize_t>table.data.as_longlongs[j],
                        (<array.array?>entry[3]).data.as_longlongs[j])


def decode_steps(double now, double horizon, Py_ssize_t r, Py_ssize_t first, Py_ssize_t last,
                 Py_ssize_t attn, Py_ssize_t used, list phase, tuple terms, tuple acc):
    """``simcore.fastforward.decode_steps`` compiled: the same double operations in the same
    order as ``costmodel.step_seconds`` (the build passes -ffp-contract=off), so the same bits."""
    cdef double fpt = terms[0], knee = terms[1], weight = terms[2], hps = terms[3], hknee = terms[4]
    cdef double hweight = terms[5], fpa = terms[6], kvt = terms[7], tok = terms[8], gpu_fixed = terms[9]
    cdef double graph = terms[10], eager = terms[11]
    cdef Py_ssize_t graph_max = terms[12]
    cdef double fixed = terms[13], per_seq = terms[14]
    cdef double busy = acc[0], batch_seq = acc[1], used_s = acc[2]
    cdef Py_ssize_t peak = acc[3]
    cdef Py_ssize_t bs = len(phase), step = first
    cdef double t = now, t_first = -1.0, body, head, gpu, launch, dt, dr = <double>r
    while True:
        used += len(<list>phase[-step % bs])
        body = dr * fpt + knee
        if body < weight:
            body = weight
        head = dr * hps + hknee
        if head < hweight:
            head = hweight
        gpu = body + head + <double>attn * fpa + <double>attn * kvt + dr * tok + gpu_fixed
        launch = graph if r <= graph_max else eager
        if gpu < launch:
            gpu = launch
        dt = fixed + dr * per_seq + gpu
        busy += dt
        batch_seq += dr * dt
        used_s += <double>used * dt
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
