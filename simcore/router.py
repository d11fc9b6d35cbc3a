"""Routers: which replica serves a request (policy only).

A router sees each replica through :class:`ReplicaView`, a read-only window: how much work the
replica has outstanding, and "how many leading tokens of this prompt do you hold?" It never
touches a pool; the caller (a cluster of engines, or the cache-only trace replay) owns the
replicas and keeps the views up to date.

Routers (``ROUTERS``):

- ``round_robin``: replica ``n mod N`` for the n-th request.
- ``random``: uniform, from a generator seeded from the run's seed (its own stream).
- ``least_loaded``: the replica with the least outstanding work (``load_metric``: outstanding
  ``requests``, or their prompt ``tokens``).
- ``session_affinity``: a conversation stays on the replica that served its first request; a new
  conversation (and a request without one) goes to the least loaded replica.
- ``prefix_aware``: the highest score, after llm-d's inference scheduler (its precise
  prefix-cache scorer weighted 2 against a load scorer weighted 1 in llm-d's guides)::

      score(r) = prefix_weight x cached(r) / prompt  +  load_weight x (max_load - load(r)) / max_load

  ``cached(r)`` is the leading run of the prompt's tokens that replica ``r`` holds (what llm-d's
  precise scorer reads from the engines' KV events; counted in whole blocks), so the first term
  is the fraction of the prompt it would not recompute. The second term is llm-d's
  ``active-request-scorer`` (1 for an idle replica, 0 for the busiest; all 1 when every replica
  is idle). Defaults ``prefix_weight = 2``, ``load_weight = 1``: a conversation stays with its
  cache unless its replica carries more load than another by more than twice the fraction of
  the prompt it would save (llm-d's precise scorer normalises the prefix term min-max across
  pods instead, which turns a one-block difference into a full point; the plain fraction keeps
  a tiny advantage tiny). Equivalently, score = cached prefix minus a load penalty, plus a
  constant. A token found only in a replica's CPU tier counts ``cpu_hit_weight`` (default 0.5):
  it must cross PCIe first, and llm-d's tiered prefix-cache guide scores it so (a GPU and a CPU
  prefix-cache scorer weighted 1:1, the CPU one also seeing GPU-held blocks under vLLM's
  write-through offload, so a block in GPU memory counts 2 and one only in CPU memory 1;
  llm-d/llm-d ``guides/tiered-prefix-cache``). Counting both alike piles conversations onto the
  replicas that hold them (README, "Serving clusters").

Every tie goes to the lowest replica index, so a router is a deterministic function of the
requests it has seen, the views and its seed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol, get_args

import numpy as np

LoadMetric = Literal["requests", "tokens"]
RouterName = Literal["round_robin", "random", "least_loaded", "session_affinity", "prefix_aware"]
RANDOM_STREAM = 7  # the router's spawn key under the run seed (the workload uses 0-3)
_RANDOM_BATCH = 1024  # replica indices drawn per numpy call (one call per request is slow)


@dataclass(slots=True)
class RouteRequest:
    """What a router knows of a request: its conversation (``session``, -1 for none), the
    chained hashes of its prompt's full blocks (given to routers that use the cache) and its
    prompt length in tokens. Routers only read it (not frozen: a frozen dataclass is built
    three times slower, once per routed request)."""

    session: int
    hashes: Sequence[int]
    prompt_tokens: int


class ReplicaView(Protocol):
    """A router's read-only window on one replica."""

    @property
    def outstanding_requests(self) -> int:
        """Requests routed to it that have not completed."""
        ...

    @property
    def outstanding_tokens(self) -> int:
        """Prompt tokens of those requests."""
        ...

    def cached_prefix_tokens(self, hashes: Sequence[int], cpu_weight: float = 1.0) -> float:
        """Tokens of the longest leading run of ``hashes`` it holds (whole blocks): in GPU
        memory, then continuing in a CPU tier, whose tokens count ``cpu_weight`` each."""
        ...


def loads_of(replicas: Sequence[ReplicaView], metric: LoadMetric) -> list[int]:
    """Each view's outstanding work by ``metric``."""
    return [v.outstanding_requests for v in replicas] if metric == "requests" else [
        v.outstanding_tokens for v in replicas]


def least_loaded(replicas: Sequence[ReplicaView], metric: LoadMetric) -> int:
    """Index of the replica with the least outstanding work; ties go to the lowest index."""
    loads = loads_of(replicas, metric)
    return loads.index(min(loads))


class Router(ABC):
    """Places requests on replicas. ``uses_cache``: whether it asks replicas about their
    caches (only then does a cache snapshot interval change anything)."""

    name: ClassVar[str]
    uses_cache: ClassVar[bool] = False

    @abstractmethod
    def route(self, req: RouteRequest, replicas: Sequence[ReplicaView]) -> int:
        """The index of the replica that serves ``req`` (``0 <= i < len(replicas)``)."""

    def pinned(self, session: int) -> int | None:
        """The replica :meth:`route` gives every further request of conversation ``session``,
        whatever the request and the replicas' state, once the router has fixed one; None: ask
        :meth:`route`. (A caller may then skip building the :class:`RouteRequest`.)"""
        return None


class RoundRobin(Router):
    name = "round_robin"

    def __init__(self) -> None:
        self._n = 0

    def route(self, req: RouteRequest, replicas: Sequence[ReplicaView]) -> int:
        i = self._n % len(replicas)
        self._n += 1
        return i


class Random(Router):
    name = "random"

    def __init__(self, seed: int) -> None:
        seq = np.random.SeedSequence(seed, spawn_key=(RANDOM_STREAM,))
        self._rng = np.random.Generator(np.random.PCG64(seq))
        self._draws: list[float] = []
        self._pos = 0

    def route(self, req: RouteRequest, replicas: Sequence[ReplicaView]) -> int:
        if self._pos == len(self._draws):
            self._draws = self._rng.random(_RANDOM_BATCH).tolist()
            self._pos = 0
        u = self._draws[self._pos]
        self._pos += 1
        return int(u * len(replicas))  # u < 1, so the index is below N


class LeastLoaded(Router):
    name = "least_loaded"

    def __init__(self, load_metric: LoadMetric = "requests") -> None:
        self.load_metric = load_metric

    def route(self, req: RouteRequest, replicas: Sequence[ReplicaView]) -> int:
        return least_loaded(replicas, self.load_metric)


class SessionAffinity(Router):
    name = "session_affinity"

    def __init__(self, load_metric: LoadMetric = "requests") -> None:
        self.load_metric = load_metric
        self._home: dict[int, int] = {}  # conversation -> its replica

    def pinned(self, session: int) -> int | None:
        return self._home.get(session) if session >= 0 else None

    def route(self, req: RouteRequest, replicas: Sequence[ReplicaView]) -> int:
        home = self.pinned(req.session)
        if home is not None:
            return home
        i = least_loaded(replicas, self.load_metric)
        if req.session >= 0:
            self._home[req.session] = i
        return i


class PrefixAware(Router):
    name = "prefix_aware"
    uses_cache = True

    def __init__(
        self, load_metric: LoadMetric = "requests", prefix_weight: float = 2.0, load_weight: float = 1.0,
        cpu_hit_weight: float = 0.5,
    ) -> None:
        if prefix_weight < 0 or load_weight < 0 or not 0 <= cpu_hit_weight <= 1:
            raise ValueError(f"prefix_weight={prefix_weight}, load_weight={load_weight}, cpu_hit_weight="
                             f"{cpu_hit_weight}: weights must be >= 0, cpu_hit_weight at most 1")
        self.load_metric = load_metric
        self.prefix_weight = prefix_weight
        self.load_weight = load_weight
        self.cpu_hit_weight = cpu_hit_weight

    def scores(self, req: RouteRequest, replicas: Sequence[ReplicaView]) -> list[float]:
        """Each replica's score (see the module notes); the router takes the highest."""
        loads = loads_of(replicas, self.load_metric)
        top = max(loads)
        tokens = req.prompt_tokens
        per_token = self.prefix_weight / tokens if tokens > 0 else 0.0
        hashes, cpu_weight, load_weight = req.hashes, self.cpu_hit_weight, self.load_weight
        out = []
        for view, load in zip(replicas, loads, strict=True):
            cached = view.cached_prefix_tokens(hashes, cpu_weight) if per_token else 0
            free = (top - load) / top if top > 0 else 1.0
            out.append(per_token * cached + load_weight * free)
        return out

    def route(self, req: RouteRequest, replicas: Sequence[ReplicaView]) -> int:
        scores = self.scores(req, replicas)
        return max(range(len(scores)), key=scores.__getitem__)  # the first of equal maxima


ROUTERS: tuple[str, ...] = get_args(RouterName)


def make_router(
    name: str, *, seed: int = 0, load_metric: LoadMetric = "requests", prefix_weight: float = 2.0,
    load_weight: float = 1.0, cpu_hit_weight: float = 0.5,
) -> Router:
    """A fresh router by name (one of :data:`ROUTERS`); raises ValueError for another name."""
    if name == "round_robin":
        return RoundRobin()
    if name == "random":
        return Random(seed)
    if name == "least_loaded":
        return LeastLoaded(load_metric)
    if name == "session_affinity":
        return SessionAffinity(load_metric)
    if name == "prefix_aware":
        return PrefixAware(load_metric, prefix_weight, load_weight, cpu_hit_weight)
    raise ValueError(f"router {name!r}: use one of {', '.join(ROUTERS)}")
