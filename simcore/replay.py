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

**Clusters** (:func:`replay_cluster`). N replicas each hold an LRU cache of the given capacity;
a router (:mod:`simcore.router`) places each request before its lookup, through read-only views
of the caches. With no timing there are no completions, so a replica's load is what it has
been sent so far (requests, or prompt tokens): ``least_loaded`` by requests then places
exactly like ``round_robin``. Conversations come from :func:`simcore.traces.infer_conversations`.
Beside each router's result stands one global pool of N x the capacity over the same trace
(Mooncake's local-versus-global question); it does not depend on the router.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from simcore.blocks import BlockPool
from simcore.errors import ConfigError
from simcore.hashing import TokenSeq
from simcore.router import Router, RouteRequest
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


class ReplayCache:
    """One LRU prefix cache of the replay: a :class:`BlockPool` of ``usable_blocks`` blocks and
    the per-request step (module notes, steps 2-4), with its own tallies."""

    def __init__(self, usable_blocks: float) -> None:
        self.pool = BlockPool(math.inf if usable_blocks == math.inf else int(usable_blocks) + 1)
        self.requests = 0
        self.input_tokens = 0
        self.total_blocks = 0
        self.hit_blocks = 0
        self.truncated = 0

    def leading_run(self, hashes: Sequence[int]) -> int:
        """Blocks of the longest leading run of ``hashes`` the cache holds (read-only)."""
        return len(self.pool.longest_hit(hashes, len(hashes)))

    def access(self, hashes: Sequence[int], prompt_tokens: int) -> int:
        """Replay one request (its full-block hashes and prompt length); return its hit blocks."""
        pool = self.pool
        n = len(hashes)
        self.requests += 1
        self.input_tokens += prompt_tokens
        self.total_blocks += n
        if not n:
            return 0
        hits = pool.longest_hit(hashes, n)
        h = len(hits)
        self.hit_blocks += h
        pool.touch(hits)
        need = n - h
        if not need:
            pool.free(hits)
            return h
        room = pool.num_free()
        take = need if need <= room else int(room)
        if take < need:
            self.truncated += 1
        new = pool.allocate(take) if take else []
        assert new is not None  # take <= num_free()
        for b, hv in zip(new, hashes[h : h + take], strict=True):
            pool.cache_block(b, hv)
        pool.free(hits + new)
        return h


def replay_hashes(
    hashes: Sequence[Sequence[int]], input_tokens: int, capacity_tokens: float, block_size: int
) -> ReplayResult:
    """Replay precomputed block hashes (one list per request, in arrival order) at one capacity.

    ``input_tokens`` is the trace's total prompt tokens (the hit rate's denominator).
    """
    usable = capacity_blocks(capacity_tokens, block_size)
    cache = ReplayCache(usable)
    seen: set[int] = set()
    for hs in hashes:
        seen.update(hs)
        cache.access(hs, 0)
    return ReplayResult(
        capacity_tokens=float(capacity_tokens),
        block_size=block_size,
        capacity_blocks=usable,
        num_requests=len(hashes),
        input_tokens=input_tokens,
        total_blocks=cache.total_blocks,
        unique_blocks=len(seen),
        hit_blocks=cache.hit_blocks,
        hit_tokens=cache.hit_blocks * block_size,
        evictions=cache.pool.evictions,
        truncated_requests=cache.truncated,
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


# ---- clusters: N replicas, each with its own cache, behind a router ---------------------------
@dataclass(frozen=True)
class ClusterReplayResult:
    """One router's outcome over ``replicas`` caches of ``capacity_tokens`` each, beside one
    global pool of ``replicas x capacity_tokens`` over the same trace (Mooncake's question:
    what do per-replica caches lose against a cluster-wide pool?). Per-replica tuples are
    indexed by replica."""

    router: str
    replicas: int
    capacity_tokens: float  # per replica
    block_size: int
    snapshot_interval_s: float | None  # None: the router sees exact cache state
    num_requests: int
    input_tokens: int
    hit_tokens: int
    evictions: int
    truncated_requests: int
    replica_requests: tuple[int, ...]
    replica_input_tokens: tuple[int, ...]
    replica_hit_tokens: tuple[int, ...]
    global_hit_tokens: int  # the same trace through one pool of replicas x capacity_tokens

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.input_tokens if self.input_tokens else 0.0

    @property
    def global_hit_rate(self) -> float:
        return self.global_hit_tokens / self.input_tokens if self.input_tokens else 0.0

    @property
    def replica_hit_rates(self) -> tuple[float, ...]:
        return tuple(h / t if t else 0.0 for h, t in zip(self.replica_hit_tokens, self.replica_input_tokens,
                                                        strict=True))

    @property
    def request_imbalance(self) -> float:
        """Max over mean of requests per replica (1 = perfectly even)."""
        return _imbalance(self.replica_requests)

    @property
    def token_imbalance(self) -> float:
        """Max over mean of prompt tokens per replica."""
        return _imbalance(self.replica_input_tokens)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (an infinite capacity is ``None``) with the derived figures."""
        d = asdict(self)
        if d["capacity_tokens"] == math.inf:
            d["capacity_tokens"] = None
        for key in ("hit_rate", "global_hit_rate", "replica_hit_rates", "request_imbalance",
                    "token_imbalance"):
            d[key] = getattr(self, key)
        return d


def _imbalance(values: Sequence[int]) -> float:
    mean = sum(values) / len(values)
    return max(values) / mean if mean else 1.0


class _ReplayReplica:
    """A :class:`simcore.router.ReplicaView` of one replay cache. A cache-only replay has no
    service times, so a replica's load is all it has been sent so far (requests, prompt
    tokens). With a snapshot, cache questions are answered from the hashes it held then."""

    __slots__ = ("cache", "block_size", "outstanding_requests", "outstanding_tokens", "snapshot")

    def __init__(self, cache: ReplayCache, block_size: int) -> None:
        self.cache = cache
        self.block_size = block_size
        self.outstanding_requests = 0
        self.outstanding_tokens = 0
        self.snapshot: frozenset[int] | None = None

    def cached_prefix_tokens(self, hashes: Sequence[int], cpu_weight: float = 1.0) -> int:
        """Tokens of the prompt's leading run held (one tier: ``cpu_weight`` does not apply)."""
        snap = self.snapshot
        if snap is None:
            return self.cache.leading_run(hashes) * self.block_size
        n = 0
        for h in hashes:
            if h not in snap:
                break
            n += 1
        return n * self.block_size


def replay_cluster(
    requests: Sequence[TraceRequest],
    hashes: Sequence[Sequence[int]],
    sessions: Sequence[int],
    capacity_tokens: float,
    replicas: int,
    router: Router,
    block_size: int,
    snapshot_interval_s: float | None = None,
    global_hit_tokens: int | None = None,
) -> ClusterReplayResult:
    """Replay a trace through ``replicas`` LRU caches of ``capacity_tokens`` each, every request
    placed by ``router`` before it is looked up.

    ``hashes`` and ``sessions`` are per request (:func:`request_block_hashes`,
    :func:`simcore.traces.infer_conversations`). ``snapshot_interval_s``: the router sees each
    cache as it was at the last multiple of the interval (trace time) instead of exactly.
    ``global_hit_tokens``: the global pool's hits if already known (it does not depend on the
    router); computed otherwise.
    """
    if replicas < 1:
        raise ConfigError(f"replicas = {replicas!r}: must be a positive integer")
    if snapshot_interval_s is not None and not snapshot_interval_s > 0:
        raise ConfigError(f"snapshot_interval_s = {snapshot_interval_s!r}: must be > 0 (or None: exact)")
    usable = capacity_blocks(capacity_tokens, block_size)
    views = [_ReplayReplica(ReplayCache(usable), block_size) for _ in range(replicas)]
    snapshots = snapshot_interval_s is not None and router.uses_cache
    next_refresh = -math.inf
    hit_blocks = 0
    for req, hs, session in zip(requests, hashes, sessions, strict=True):
        if snapshots and req.arrival_s >= next_refresh:
            assert snapshot_interval_s is not None
            for v in views:  # the state at the grid time: no request came in between
                v.snapshot = v.cache.pool.cached_hashes()
            k = math.floor(req.arrival_s / snapshot_interval_s) + 1
            while k * snapshot_interval_s <= req.arrival_s:  # (floor of a rounded quotient may lag)
                k += 1
            next_refresh = k * snapshot_interval_s
        i = router.route(RouteRequest(session, hs, req.prompt_tokens), views) if replicas > 1 else 0
        view = views[i]
        view.outstanding_requests += 1
        view.outstanding_tokens += req.prompt_tokens
        hit_blocks += view.cache.access(hs, req.prompt_tokens)
    input_tokens = sum(r.prompt_tokens for r in requests)
    if global_hit_tokens is None:
        pooled = replay_hashes(hashes, input_tokens, replicas * capacity_tokens, block_size)
        global_hit_tokens = pooled.hit_tokens
    caches = [v.cache for v in views]
    return ClusterReplayResult(
        router=router.name,
        replicas=replicas,
        capacity_tokens=float(capacity_tokens),
        block_size=block_size,
        snapshot_interval_s=snapshot_interval_s,
        num_requests=len(requests),
        input_tokens=input_tokens,
        hit_tokens=hit_blocks * block_size,
        evictions=sum(c.pool.evictions for c in caches),
        truncated_requests=sum(c.truncated for c in caches),
        replica_requests=tuple(c.requests for c in caches),
        replica_input_tokens=tuple(c.input_tokens for c in caches),
        replica_hit_tokens=tuple(c.hit_blocks * block_size for c in caches),
        global_hit_tokens=global_hit_tokens,
    )
