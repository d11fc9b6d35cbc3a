"""Routers as pure policy over read-only replica views."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from simcore.router import ROUTERS, PrefixAware, RouteRequest, least_loaded, make_router


@dataclass
class View:
    """A replica view with fixed load and a set of cached hashes (block size 10)."""

    outstanding_requests: int = 0
    outstanding_tokens: int = 0
    cached: set[int] = field(default_factory=set)
    cpu: set[int] = field(default_factory=set)  # a CPU tier: continues the GPU run
    asked: int = 0

    def cached_prefix_tokens(self, hashes: Sequence[int], cpu_weight: float = 1.0) -> float:
        self.asked += 1
        n = 0
        while n < len(hashes) and hashes[n] in self.cached:
            n += 1
        m = n
        while m < len(hashes) and hashes[m] in self.cpu:
            m += 1
        return 10 * (n + cpu_weight * (m - n))


def req(session: int = -1, hashes: Sequence[int] = (), prompt: int = 100) -> RouteRequest:
    return RouteRequest(session, hashes, prompt)


def test_round_robin_cycles() -> None:
    r = make_router("round_robin")
    views = [View(), View(), View()]
    assert [r.route(req(), views) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_random_is_seeded_uniform_and_in_range() -> None:
    views = [View() for _ in range(4)]
    first = make_router("random", seed=3)
    again = make_router("random", seed=3)
    other = make_router("random", seed=4)
    xs = [first.route(req(), views) for _ in range(4000)]
    assert xs == [again.route(req(), views) for _ in range(4000)]
    assert xs != [other.route(req(), views) for _ in range(4000)]
    counts = [xs.count(i) for i in range(4)]
    assert sorted(set(xs)) == [0, 1, 2, 3]
    assert all(900 < c < 1100 for c in counts), counts  # 1000 expected each; 5 sigma is ~140


@pytest.mark.parametrize(("metric", "expected"), [("requests", 1), ("tokens", 2)])
def test_least_loaded_by_metric(metric: str, expected: int) -> None:
    views = [View(5, 500), View(2, 900), View(3, 100)]
    assert make_router("least_loaded", load_metric=metric).route(req(), views) == expected  # type: ignore[arg-type]


def test_least_loaded_ties_go_to_the_lowest_index() -> None:
    assert least_loaded([View(3), View(1), View(1)], "requests") == 1


def test_session_affinity_keeps_a_conversation_home() -> None:
    r = make_router("session_affinity")
    views = [View(0), View(0)]
    assert r.route(req(session=7), views) == 0  # new: least loaded (tie -> 0)
    views[0].outstanding_requests = 10
    assert r.route(req(session=7), views) == 0  # stays home whatever the load
    assert r.route(req(session=8), views) == 1  # new conversation: least loaded
    assert r.route(req(session=-1), views) == 1  # no conversation: least loaded, not remembered
    views[1].outstanding_requests = 20
    assert r.route(req(session=-1), views) == 0
    assert r.route(req(session=8), views) == 1


def test_prefix_aware_scores_exactly() -> None:
    # prompt 100 tokens; replica 0 holds 60 of them (blocks 1..6), replica 1 holds 20 (1, 2)
    views = [View(4, cached={1, 2, 3, 4, 5, 6}), View(2, cached={1, 2}), View(0)]
    r = PrefixAware()
    hashes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    # 2 x cached/prompt + 1 x (max_load - load) / max_load, max_load 4
    assert r.scores(req(hashes=hashes), views) == pytest.approx([2 * 0.6 + 0.0, 2 * 0.2 + 0.5, 0.0 + 1.0])
    assert r.route(req(hashes=hashes), views) == 0
    views[0].outstanding_requests = 40  # replica 0 now 40: its load term is 0, the others' near 1
    assert r.scores(req(hashes=hashes), views) == pytest.approx([1.2, 0.4 + 38 / 40, 1.0])
    assert r.route(req(hashes=hashes), views) == 1


def test_prefix_aware_weights_and_idle_cluster() -> None:
    views = [View(0, cached={1}), View(0)]
    # all idle: the load term is 1 everywhere; the cached block decides
    assert PrefixAware().scores(req(hashes=[1, 2], prompt=20), views) == pytest.approx([2 * 0.5 + 1, 1.0])
    # no prefix weight: the cache is not even asked, and the tie goes to replica 0
    r = PrefixAware(prefix_weight=0.0)
    assert r.route(req(hashes=[1, 2], prompt=20), views) == 0
    assert views[0].asked == views[1].asked == 1  # only the first call asked
    with pytest.raises(ValueError, match="must be >= 0"):
        PrefixAware(prefix_weight=-1.0)


def test_prefix_aware_counts_cpu_hits_at_their_weight() -> None:
    # prompt 100 tokens; replica 0 holds blocks 1..4 in GPU memory (40 tokens); replica 1 holds
    # 1, 2 in GPU memory and 3..7 in its CPU tier (20 + 50 tokens); both idle (load term 1)
    views = [View(cached={1, 2, 3, 4}), View(cached={1, 2}, cpu={3, 4, 5, 6, 7})]
    hashes = list(range(1, 11))
    default = PrefixAware()  # CPU tokens count 0.5: 20 + 25 = 45 > 40
    assert default.cpu_hit_weight == 0.5
    assert default.scores(req(hashes=hashes), views) == pytest.approx([2 * 0.4 + 1, 2 * 0.45 + 1])
    assert default.route(req(hashes=hashes), views) == 1
    low = PrefixAware(cpu_hit_weight=0.3)  # 20 + 15 = 35 < 40
    assert low.scores(req(hashes=hashes), views) == pytest.approx([1.8, 2 * 0.35 + 1])
    assert low.route(req(hashes=hashes), views) == 0
    assert make_router("prefix_aware", cpu_hit_weight=1.0).scores(req(hashes=hashes), views) == pytest.approx(
        [1.8, 2 * 0.7 + 1])
    with pytest.raises(ValueError, match="cpu_hit_weight at most 1"):
        PrefixAware(cpu_hit_weight=1.5)


def test_prefix_aware_with_token_load() -> None:
    views = [View(1, 1000, cached={1}), View(1, 100)]
    r = make_router("prefix_aware", load_metric="tokens")
    # replica 0: 2 x 10/40 + (1000 - 1000) / 1000 = 0.5; replica 1: 0 + 900 / 1000 = 0.9
    assert r.route(req(hashes=[1, 2, 3, 4], prompt=40), views) == 1


def test_only_prefix_aware_uses_the_cache() -> None:
    assert [make_router(name).uses_cache for name in ROUTERS] == [False, False, False, False, True]
    views = [View(cached={1}), View(cached={1})]
    for name in ROUTERS[:4]:
        make_router(name).route(req(session=1, hashes=[1]), views)
    assert views[0].asked == views[1].asked == 0


def test_make_router_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"router 'sticky': use one of round_robin, random"):
        make_router("sticky")
