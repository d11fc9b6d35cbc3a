"""KV memory beyond the GPU: LRU pools of blocks.

Two tiers use it: a replica's CPU tier (``engine.cpu_offload_gib``), fed by its GPU pool's
evictions, and the cluster's shared pool (``cluster.shared_pool_gib``, Mooncake-style), written
through by every replica (or fed by what leaves every replica's last local tier: see below).

Mechanism only: what the tier holds, in what order it forgets, and what a lookup finds. Who
loads a hit back and what the transfer costs belong to the KV manager and the scheduler.

Policy, store on eviction (a victim cache)::

    GPU pool --(a hash leaves GPU memory: evicted)--> CPU tier (LRU, capacity in blocks)
       ^                                                  |
       +------(a lookup continues the GPU's leading run; the blocks are copied back)

- **Store on eviction.** When the GPU pool evicts the last block holding a hash, the hash is
  stored in the tier as its most recently used block; a hash already there is only moved to
  the most recent end. When the tier is full, storing evicts its least recently used block.
- **Lookup.** A request's CPU hit continues its GPU hit: the leading run of the hashes that
  follow the GPU's run (vLLM's offloading connector looks up the same way, starting where the
  GPU hit stops). A hit is touched (most recently used); the tier keeps its copy, so a block
  loaded back to the GPU is in both tiers until one of them evicts it.

How this differs from the systems it models. vLLM's native CPU offload (``OffloadingConnector``
with the CPU spec, ``v1/kv_offload``) and LMCache both *write through*: every newly computed
block is copied to CPU memory as it is computed (asynchronously), with LRU eviction in CPU
memory, so the CPU pool holds copies of what the GPU holds too. Storing on eviction holds only
what the GPU lost, so a CPU tier of C blocks adds C blocks of capacity instead of mirroring the
GPU's; the two agree once the CPU tier is much larger than the GPU pool. The store traffic
(device to host) is not timed: both systems run it asynchronously, off the critical path.
Loads (host to device) are timed by the engine.

The shared pool (``cluster.shared_pool_policy``) is written through by default, as Mooncake
Store and LMCache do: every block a replica computes is stored in it (as most recently used) by
the step that computes it, so a conversation that moves to another replica finds its history
there even while its old replica still holds it. With ``on_eviction`` it follows the CPU tier's
policy one level down instead::

    write_through: replica r computes a block --> shared pool (one, LRU)
    on_eviction:   replica r: GPU pool --> CPU tier (if any) --(its evictions)--> shared pool
    a lookup (both): GPU run, then the CPU run after it, then the shared run after that

The stores of all replicas enter the one LRU in simulated-time order (each replica stores at
the step that computes or evicts, before any later lookup), so the pool's order is a property
of the simulation, not of the order in which a simulator ran the replicas. The write traffic is
not timed (asynchronous, as for the CPU tier).
A shared hit is copied over the network and the GPU's host link (timed by the engine; see
``costmodel.shared_load_seconds``).

"No room" is not an error here (a store always succeeds by evicting); misuse (a capacity below
one block) raises ``ValueError``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence


class LruTier:
    """An LRU pool of ``capacity_blocks`` KV blocks (``math.inf``: unbounded), keyed by hash.

    ``spill`` (a list, or None): where the hashes it evicts go, in order, for the tier below.
    """

    def __init__(self, capacity_blocks: float) -> None:
        whole = capacity_blocks == math.inf or capacity_blocks == int(capacity_blocks)
        if not (capacity_blocks >= 1 and whole):
            raise ValueError(f"capacity_blocks={capacity_blocks!r}: must be a whole number >= 1 or math.inf")
        self.capacity_blocks = capacity_blocks
        self._lru: OrderedDict[int, None] = OrderedDict()  # least recently used first
        self.stored = 0  # hashes that entered the tier
        self.refreshed = 0  # stores of a hash it already held (moved to the recent end)
        self.evictions = 0  # hashes it dropped to make room
        self.hit_blocks = 0  # blocks found by lookups that were taken (see :meth:`take`)
        self.spill: list[int] | None = None

    # ---- queries ---------------------------------------------------------------------------
    def num_used(self) -> int:
        return len(self._lru)

    def num_free(self) -> float:
        return self.capacity_blocks - len(self._lru)

    def __contains__(self, block_hash: int) -> bool:
        return block_hash in self._lru

    def lru_order(self) -> list[int]:
        """Held hashes, least recently used first (for tests and debugging)."""
        return list(self._lru)

    def cached_hashes(self) -> frozenset[int]:
        """Every hash a lookup can find now (a snapshot)."""
        return frozenset(self._lru)

    def leading_run(self, hashes: Sequence[int], start: int, stop: int) -> int:
        """How many of ``hashes[start:stop]`` it holds, counting from ``start`` to the first miss."""
        lru = self._lru
        n = 0
        for h in hashes[start:stop]:
            if h not in lru:
                break
            n += 1
        return n

    # ---- mutations -------------------------------------------------------------------------
    def store(self, hashes: Iterable[int]) -> None:
        """Store hashes the tier above evicted, in eviction order; each becomes the most recently
        used. The hashes this evicts to make room go to :attr:`spill` when it is set."""
        lru = self._lru
        cap = self.capacity_blocks
        for h in hashes:
            if h in lru:
                lru.move_to_end(h)
                self.refreshed += 1
                continue
            if len(lru) >= cap:
                gone, _ = lru.popitem(last=False)
                self.evictions += 1
                if self.spill is not None:
                    self.spill.append(gone)
            lru[h] = None
            self.stored += 1

    def take(self, hashes: Sequence[int]) -> None:
        """A lookup's hit on ``hashes`` (all held) is being loaded: touch each, in order."""
        lru = self._lru
        for h in hashes:
            lru.move_to_end(h)  # KeyError for a hash it does not hold: a caller bug
        self.hit_blocks += len(hashes)

    def check_invariants(self) -> None:
        """Raise if the bookkeeping is inconsistent (for tests): blocks conserved."""
        used = len(self._lru)
        if used > self.capacity_blocks:
            raise RuntimeError(f"tier holds {used} blocks, capacity {self.capacity_blocks}")
        if self.stored - self.evictions != used:
            raise RuntimeError(f"stored {self.stored} - evicted {self.evictions} != held {used}")
        if self.num_used() + self.num_free() != self.capacity_blocks:
            raise RuntimeError("tier blocks not conserved: used + free != capacity")
