"""Per-request block tables on top of the BlockPool: lookup, allocate, append, free.

Policy-free: the scheduler decides who gets memory; this module does the block arithmetic::

    tokens  |0 ........ 15|16 ....... 31|32 .. 37|        block_size B = 16
    blocks  [    b0       ][    b1       ][  b2   ...]    ceil(tokens / B) blocks
    hashed  [    yes      ][    yes      ][  no   ]       only full blocks: tokens // B
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence

from simcore import native
from simcore.blocks import BlockPool
from simcore.request import Request
from simcore.tiers import LruTier

LOADING = -2  # admit_waiting: the request holds its hit blocks and waits for copies from a tier


def blocks_for(tokens: int, block_size: int) -> int:
    """Blocks needed to hold ``tokens`` tokens."""
    return -(-tokens // block_size)


class KVCacheManager:
    """A request's blocks in the GPU pool and, with a CPU tier (``cpu``) or the cluster's shared
    pool (``shared``), its hits there.

    With a CPU tier, a waiting request whose cached prefix continues in CPU memory past its
    GPU hit (:meth:`_admit_tiered`) gets its GPU hits plus blocks for the rest of its prompt,
    and waits while its CPU hits cross PCIe (``LOADING``); then :meth:`loaded` hashes their
    blocks and the next admission goes on from there like a running request's next chunk.
    (vLLM gives such a request blocks for the loaded tokens only; holding the whole prompt's
    means a request whose copies landed never waits for room that other copies hold.) The GPU
    pool's evicted hashes are stored in the tier before every question the tier answers, so it
    sees them in order.

    With a shared pool the lookup goes on past the CPU run (or past the GPU run, without a CPU
    tier): the leading run of the hashes that follow, held in the shared pool; those hits are
    copied too (``req.loading_shared`` of ``req.loading``). What enters the shared pool
    (``cluster.shared_pool_policy``): with ``write_through`` (the default) every block as it is
    hashed here (:meth:`cache_full`, at the step that computes it); with ``on_eviction`` what
    leaves the last local tier, stored by :meth:`drain`, which the engine calls after every step
    as well. Either way all replicas' stores enter it in simulated-time order. A router's
    question (:meth:`cached_prefix_tokens`) leaves the shared pool out: every replica reaches
    it alike.
    """

    def __init__(
        self, pool: BlockPool, block_size: int, caching: bool, hinted_lookup: bool = False,
        cpu: LruTier | None = None, shared: LruTier | None = None, write_through: bool = False,
    ) -> None:
        self.pool = pool
        self.block_size = block_size
        self.caching = caching
        self.hinted_lookup = hinted_lookup
        # admission of a waiting request: lookup then admit; the compiled pool does both in one
        # call (same blocks, same order) when fast mode's hinted lookups are on
        compiled = native.NATIVE is not None and isinstance(pool, native.NATIVE.CBlockPool)
        if compiled and hinted_lookup and pool.enable_caching == caching:
            self.admit_waiting: Callable[[Request, int], int] = self._admit_compiled
        else:
            self.admit_waiting = self._admit_lookup_then_admit
        self.cpu = cpu if caching else None
        self.shared = shared if caching else None
        # write-through: every block hashed here is stored in the shared pool at once (cache_full)
        # and nothing is stored there on eviction
        self.write_through = write_through and self.shared is not None
        evictions_go_down = self.cpu is not None or (self.shared is not None and not self.write_through)
        if evictions_go_down:
            pool.spill = array("q") if compiled else []  # type: ignore[assignment]
        if self.cpu is not None or self.shared is not None:
            self.admit_waiting = self._admit_tiered
        if self.cpu is not None and self.shared is not None and not self.write_through:
            self.cpu.spill = []

    def _admit_lookup_then_admit(self, req: Request, budget: int) -> int:
        """Admit a waiting request with its cached prefix and room for up to ``budget`` new
        tokens; return the tokens it computes this step, or -1 (nothing changed) if it does
        not fit."""
        hits = self.lookup(req)
        n = min(req.num_tokens - len(hits) * self.block_size, budget)
        return n if self.admit(req, hits, n) else -1

    def _admit_compiled(self, req: Request, budget: int) -> int:
        """:meth:`_admit_lookup_then_admit` with the compiled pool's ``admit_chain``."""
        bs = self.block_size
        got = self.pool.admit_chain(req.seq.hashes, req.seq.hint_blocks, req.num_tokens, budget, bs)  # type: ignore[attr-defined]
        if got is None:
            return -1
        req.blocks, n, n_hits = got
        req.num_computed = n_hits * bs
        req.num_cached_blocks = (req.num_computed + n) // bs if self.caching else n_hits
        return n  # type: ignore[no-any-return]

    def lookup(self, req: Request) -> Sequence[int]:
        """Cached blocks of the longest leading hit, leaving at least the last token to compute."""
        if not self.caching:
            return ()
        max_blocks = (req.num_tokens - 1) // self.block_size
        if self.hinted_lookup:
            return self.pool.hit_run(req.seq.hashes, max_blocks, req.seq.hint_blocks)
        return self.pool.longest_hit(req.seq.hashes, max_blocks)

    def admit(self, req: Request, hits: Sequence[int], num_new: int) -> bool:
        """Give a waiting request its hit blocks plus room for ``num_new`` tokens; False if no room."""
        n_hits = len(hits)
        computed = n_hits * self.block_size
        need = blocks_for(computed + num_new, self.block_size) - n_hits
        free = self.pool.num_free()
        # hits that sit in the free queue use up free blocks too; count them only when it matters
        if need + n_hits > free and need + self.pool.count_free_in(hits) > free:
            return False
        self.pool.touch(hits)
        # the block table starts as the hits (hit_run's array is a fresh one: extend it in place)
        table = hits if type(hits) is array else array("q", hits)
        ok = self.pool.allocate_into(table, need)
        assert ok  # checked above
        req.blocks = table
        req.num_cached_blocks = n_hits
        req.num_computed = computed
        self.cache_full(req, computed + num_new)
        return True

    def append(self, req: Request, num_new: int, cache: bool = True) -> bool:
        """Room for ``num_new`` more tokens of a running request; False if no room.

        With ``cache=False`` the caller hashes the filled blocks later with :meth:`cache_full`.
        """
        need = blocks_for(req.num_computed + num_new, self.block_size) - len(req.blocks)
        if need > 0 and not self.pool.allocate_into(req.blocks, need):
            return False
        if cache:
            self.cache_full(req, req.num_computed + num_new)
        return True

    def cache_full(self, req: Request, tokens: int) -> None:
        """Hash every block that ``tokens`` tokens fill (vLLM caches at allocation time)."""
        full = tokens // self.block_size
        if self.caching and full > req.num_cached_blocks:
            start = req.num_cached_blocks
            self.pool.cache_blocks(req.blocks[start:full], req.seq.hashes[start:full])
            req.num_cached_blocks = full
            if self.write_through:
                self.shared.store(req.seq.hashes[start:full])  # type: ignore[union-attr]

    def cached_prefix_tokens(self, hashes: Sequence[int], cpu_weight: float = 1.0) -> float:
        """Tokens of the longest leading run of ``hashes`` held here, whole blocks, no cap, in
        GPU memory then continuing in the CPU tier, whose tokens count ``cpu_weight`` each (a
        router's question; changes no state a later step sees)."""
        n = self.pool.leading_run(hashes, len(hashes))
        if self.cpu is not None and n < len(hashes):
            self.drain()
            return (n + cpu_weight * self.cpu.leading_run(hashes, n, len(hashes))) * self.block_size
        return n * self.block_size

    # ---- the CPU tier and the shared pool ------------------------------------------------------
    def drain(self) -> None:
        """Store the hashes the GPU pool evicted since the last call in the CPU tier, and, with a
        shared pool fed on eviction, those that left the last local tier in it, in order."""
        spill = self.pool.spill
        if spill:
            below = self.cpu if self.cpu is not None else self.shared
            assert below is not None
            below.store(spill)
            del spill[:]
        if self.cpu is not None and self.shared is not None:
            spill = self.cpu.spill
            if spill:
                self.shared.store(spill)
                del spill[:]

    def _admit_tiered(self, req: Request, budget: int) -> int:
        """:meth:`admit_waiting` with a CPU tier or a shared pool: as without them, unless the
        request's cached prefix continues in CPU memory, or the shared pool, past its GPU hit;
        then take the GPU hits and a block for each CPU and shared hit and return ``LOADING`` (or
        -1 if they do not fit). A request already holding loaded blocks goes on from them."""
        if req.blocks:  # its CPU hits have landed (see loaded): admit its next chunk
            n = min(req.num_tokens - req.num_computed, budget)
            ok = self.append(req, n)
            assert ok  # its prompt's blocks are all there
            return n
        bs = self.block_size
        hits = self.lookup(req)
        k = len(hits)
        cap = (req.num_tokens - 1) // bs
        m = s = 0
        if k < cap:
            self.drain()
            if self.cpu is not None:
                m = self.cpu.leading_run(req.seq.hashes, k, cap)
            if self.shared is not None and k + m < cap:
                s = self.shared.leading_run(req.seq.hashes, k + m, cap)
        if not m + s:
            n = min(req.num_tokens - k * bs, budget)
            return n if self.admit(req, hits, n) else -1
        need = blocks_for(req.num_tokens, bs) - k  # the CPU hits and the rest of the prompt
        if need + self.pool.count_free_in(hits) > self.pool.num_free():
            return -1
        self.pool.touch(hits)
        table = hits if type(hits) is array else array("q", hits)
        ok = self.pool.allocate_into(table, need)
        assert ok  # checked above
        if m:
            self.cpu.take(req.seq.hashes[k : k + m])  # type: ignore[union-attr]
        if s:
            self.shared.take(req.seq.hashes[k + m : k + m + s])  # type: ignore[union-attr]
        req.blocks = table
        req.num_cached_blocks = k
        req.num_computed = k * bs
        req.loading = m + s
        req.loading_shared = s
        return LOADING

    def loaded(self, req: Request) -> None:
        """The request's CPU and shared hits have crossed to the GPU: hash their blocks (vLLM
        caches loaded blocks once they land) and count them computed."""
        k, m = req.num_cached_blocks, req.loading
        self.pool.cache_blocks(req.blocks[k : k + m], req.seq.hashes[k : k + m])
        req.num_cached_blocks = k + m
        req.num_computed = (k + m) * self.block_size
        req.loading = req.loading_shared = 0

    def free(self, req: Request) -> None:
        """Release a request's blocks deepest-first; hashed ones stay findable until evicted."""
        self.pool.free(req.blocks)
        req.seq.hint_blocks = req.blocks
        req.blocks = array("q")
        req.num_cached_blocks = 0
