"""Token-count sampling: rounding half to even, at least one token, at most the cap, and the
distribution's own clip bounds."""

from __future__ import annotations

import numpy as np

from simcore.dists import Constant, LogNormal, sample_tokens


def _rng() -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(0))


def test_counts_round_half_to_even_and_stay_within_one_and_the_cap():
    assert sample_tokens(Constant(value=2.5), _rng(), 3, 100) == [2, 2, 2]
    assert sample_tokens(Constant(value=3.5), _rng(), 1, 100) == [4]
    assert sample_tokens(Constant(value=0.2), _rng(), 2, 100) == [1, 1]
    assert sample_tokens(Constant(value=1e30), _rng(), 1, 4096) == [4096]


def test_counts_respect_the_distributions_clip_bounds_and_are_plain_ints():
    got = sample_tokens(LogNormal(mean=250, sigma=1.5, min=20, max=300), _rng(), 2000, 10**6)
    assert min(got) == 20 and max(got) == 300
    assert all(type(v) is int for v in got)
    floats = LogNormal(mean=250, sigma=1.5, max=300.5).sample(_rng(), 500)
    assert max(floats) == 300.5 and all(type(v) is float for v in floats)
