"""A closed-loop user's random values are drawn in batches (workload._Draws): the values a kind
hands out are its stream's values in order, however the takes are split and interleaved."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from simcore.workload import _Draws, _rng


def _uniform(rng: np.random.Generator, n: int) -> list[float]:
    return rng.random(n).tolist()


def _ints(rng: np.random.Generator, n: int) -> list[int]:
    return rng.integers(1000, size=n).tolist()


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(1, 40)), min_size=1, max_size=30),
       st.integers(1, 16))
def test_takes_hand_out_each_kind_in_order_from_batched_draws(takes, batch):
    """Replaying the refills by hand (a kind draws max(n, batch) more values when its buffer
    runs short) gives exactly what _Draws handed out, for two kinds sharing one generator."""
    fns = {"a": _uniform, "b": _ints}
    draws = _Draws(_rng(7, 1, 3), batch)
    got = {"a": [], "b": []}
    for kind, n in takes:
        out = draws.take(kind, fns[kind], n)
        assert len(out) == n
        got[kind] += out
    rng = _rng(7, 1, 3)
    want: dict[str, list] = {"a": [], "b": []}
    left = {"a": 0, "b": 0}
    for kind, n in takes:
        if left[kind] < n:
            more = fns[kind](rng, max(n, batch))
            want[kind] += more
            left[kind] += len(more)
        left[kind] -= n
    for kind in fns:
        assert got[kind] == want[kind][: len(got[kind])]


def test_batch_of_one_draws_exactly_what_is_asked_when_asked():
    """batch=1 (open-loop sessions): the same values as calling the generator directly."""
    draws = _Draws(_rng(3, 3, 9), 1)
    seq = draws.take("a", _uniform, 2) + draws.take("b", _ints, 3) + draws.take("a", _uniform, 1)
    rng = _rng(3, 3, 9)
    assert seq == _uniform(rng, 2) + _ints(rng, 3) + _uniform(rng, 1)


def test_split_takes_equal_one_take():
    a = _Draws(_rng(5, 1, 0), 64)
    b = _Draws(_rng(5, 1, 0), 64)
    assert a.take("x", _uniform, 3) + a.take("x", _uniform, 70) == b.take("x", _uniform, 73)
