"""Cache-only trace replay: prefix-cache hit rate against cache capacity, no timing.

Requests are replayed one at a time in arrival order through the engine's own
:class:`simcore.blocks.BlockPool` (no second cache implementation). For each request:

1. hash its full prompt blocks (``TokenSeq`` over :func:`simcore.traces.prompt_segments`);
2. look up the longest leading run of cached blocks (no "last token" cap: the plain leading
   run, as the Mooncake paper's replay counts it; the engine's lookup keeps that cap);
3. take a reference on the hits, allocate blocks for the misses (evicting LRU cached blocks)
   and record their hashes;
4. free all of the request's blocks, deepest first, so they join the LRU tail with the chain's
   root most recently used::

       free queue after request [a b c]:  ... older blocks ... | c  b  a     (a: MRU)
                                             evicted first --^

Capacity is given in tokens: ``capacity // block_size`` usable blocks (plus the pool's null
block), or ``math.inf``. Hit rate = hit tokens / input tokens, where a hit block counts
``block_size`` tokens; partial blocks at the end of a prompt are never cached (as in the engine),
so they never hit.

**A request longer than the cache.** If a request's full blocks outnumber the usable blocks,
it keeps the *head* of its chain: the leading hits plus as many misses, in order, as there are
blocks; the rest of its tail is neither stored nor counted as a hit. The head is the only part a
later lookup (which needs the leading run) can use, and it is exactly what a plain LRU keeps
when it inserts the request's blocks deepest first and trims to capacity. Such requests are
counted in :attr:`ReplayResult.truncated_requests`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from simcore.blocks import BlockPool
from simcore.errors import ConfigError
from simcore.hashing import TokenSeq
from simcore.traces import TraceRequest, prompt_segments


@dataclass(frozen=True)
class ReplayResult:
    """One capacity's outcome. Tokens and blocks are counts; ``capacity_tokens`` may be inf."""

    capacity_tokens: float
    block_size: int
    capacity_blocks: float  # usable blocks: capacity_tokens // block_size (null block excluded)
    num_requests: int
    input_tokens: int
    total_blocks: int  # full prompt blocks looked up, summed over requests
    unique_blocks: int  # distinct full-block hashes in the whole trace (capacity-independent)
    hit_blocks: int
    hit_tokens: int
    evictions: int  # cached hashes dropped to make room
    truncated_requests: int  # requests with more full blocks than the cache holds

    @property
    def hit_rate(self) -> float:
        """Hit tokens / input tokens."""
        return self.hit_tokens / self.input_tokens if self.input_tokens else 0.0

    @property
    def block_hit_rate(self) -> float:
        """Hit blocks / full blocks looked up."""
        return self.hit_blocks / self.total_blocks if self.total_blocks else 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (an infinite capacity is ``None``) with the two rates added."""
        d = asdict(self)
        for key in ("capacity_tokens", "capacity_blocks"):
            if d[key] == math.inf:
                d[key] = None
        d["hit_rate"] = self.hit_rate
        d["block_hit_rate"] = self.block_hit_rate
        return d


def capacity_blocks(capacity_tokens: float, block_size: int) -> float:
    """Usable blocks for a capacity in tokens: ``floor(capacity / block_size)`` or ``math.inf``.

    Raises :class:`ConfigError` if the capacity holds no block.
    """
    if block_size < 1:
        raise ConfigError(f"block size = {block_size!r}: must be a positive integer (e.g. 16 or 512)")
    if capacity_tokens == math.inf:
        return math.inf
    if not (isinstance(capacity_tokens, (int, float)) and math.isfinite(capacity_tokens)):
        raise ConfigError(f"capacity_tokens = {capacity_tokens!r}: must be a number of tokens or inf")
    blocks = int(capacity_tokens // block_size)
    if blocks < 1:
        raise ConfigError(f"capacity_tokens = {capacity_tokens:g}: holds no block of {block_size} tokens "
                          f"(use at least {block_size})")
    return float(blocks)


def request_block_hashes(
    requests: Sequence[TraceRequest], block_size: int, trace_block_tokens: int = 512
) -> list[list[int]]:
    """Full-block hashes of every request's prompt (root 0: shared prefix caching), in order.

    Independent of the capacity, so a sweep over capacities computes them once.
    """
    out: list[list[int]] = []
    for index, req in enumerate(requests):
        seq = TokenSeq(block_size, root=0)
        for cid, length in prompt_segments(req, index, trace_block_tokens):
            seq.append(cid, length)
        out.append(seq.ensure_hashes(seq.num_tokens).tolist())
    return out


def replay_hashes(
    hashes: Sequence[Sequence[int]], input_tokens: int, capacity_tokens: float, block_size: int
) -> ReplayResult:
    """Replay precomputed block hashes (one list per request, in arrival order) at one capacity.

    ``input_tokens`` is the trace's total prompt tokens (the hit rate's denominator).
    """
    usable = capacity_blocks(capacity_tokens, block_size)
    pool = BlockPool(math.inf if usable == math.inf else int(usable) + 1)  # + the null block
    hit_blocks = total_blocks = truncated = 0
    longest_hit, touch, allocate = pool.longest_hit, pool.touch, pool.allocate
    cache_block, free, num_free = pool.cache_block, pool.free, pool.num_free
    seen: set[int] = set()
    for hs in hashes:
        n = len(hs)
        total_blocks += n
        seen.update(hs)
        if not n:
            continue
        hits = longest_hit(hs, n)
        h = len(hits)
        hit_blocks += h
        touch(hits)
        need = n - h
        if need:
            room = num_free()
            take = need if need <= room else int(room)
            if take < need:
                truncated += 1
            new = allocate(take) if take else []
            assert new is not None  # take <= num_free()
            for b, hv in zip(new, hs[h : h + take], strict=True):
                cache_block(b, hv)
            free(hits + new)
        else:
            free(hits)
    return ReplayResult(
        capacity_tokens=float(capacity_tokens),
        block_size=block_size,
        capacity_blocks=usable,
        num_requests=len(hashes),
        input_tokens=input_tokens,
        total_blocks=total_blocks,
        unique_blocks=len(seen),
        hit_blocks=hit_blocks,
        hit_tokens=hit_blocks * block_size,
        evictions=pool.evictions,
        truncated_requests=truncated,
    )


def replay(
    requests: Sequence[TraceRequest],
    capacities_tokens: Sequence[float],
    block_size: int = 512,
    trace_block_tokens: int = 512,
) -> list[ReplayResult]:
    """Hit rate of an LRU prefix cache of each capacity (tokens, or ``math.inf``) over a trace.

    ``block_size`` is the engine block size in tokens (512 matches the Mooncake ids; 16 is vLLM's
    default). Raises :class:`ConfigError` for a capacity that holds no block.
    """
    for cap in capacities_tokens:
        capacity_blocks(cap, block_size)  # validate all before the (slow) work
    hashes = request_block_hashes(requests, block_size, trace_block_tokens)
    input_tokens = sum(r.prompt_tokens for r in requests)
    return [replay_hashes(hashes, input_tokens, cap, block_size) for cap in capacities_tokens]
