"""simcore/stats.py: MSER-5, batch means, sectioning and the drift test, on hand-built series."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simcore import stats


def test_mser5_cuts_exactly_an_initial_transient():
    """100 values at 10, then 900 alternating 0.9 / 1.1: batches of 5 after the transient all
    have the same mean, so MSER(d) is minimised where the transient ends: 20 batches in."""
    x = np.concatenate([np.full(100, 10.0), np.tile([0.9, 1.1], 450)])
    assert stats.mser5_cut(x) == 100


def test_mser5_keeps_a_stationary_series_and_never_cuts_beyond_half():
    rng = np.random.default_rng(1)
    assert stats.mser5_cut(rng.lognormal(0, 1, 2000)) <= 100
    rising = np.arange(1000, dtype=float)  # no steady part: the cut stops at half the batches
    assert stats.mser5_cut(rising) == 500
    assert stats.mser5_cut(np.ones(15)) == 0  # fewer than 4 batches: nothing to compare


def test_batch_means_half_width_by_hand():
    """20 batches of 5: ten at 1, ten at 3. sd of the batch means = sqrt(20/19); the half-width
    is t(0.975, 19) * sd / sqrt(20) = 2.093024 / sqrt(19)."""
    x = np.repeat([1.0] * 10 + [3.0] * 10, 5)
    assert stats.mean_half_width(x) == pytest.approx(2.093024 / math.sqrt(19), rel=1e-12)
    assert stats.mean_half_width(x[:99]) is None  # fewer than 20 batches of 5


def test_batches_leave_out_the_leading_remainder():
    x = np.array([100.0, 1, 1, 2, 2])
    assert stats.batches(x, 2).tolist() == [1.0, 2.0]


def test_quantile_half_width_needs_ten_sections_of_a_hundred():
    rng = np.random.default_rng(2)
    x = rng.lognormal(0, 1, 999)
    assert stats.quantile_half_width(x, 99) is None
    x = np.tile(np.arange(100, dtype=float), 10)  # every section the same: no spread
    assert stats.quantile_half_width(x, 99) == 0.0


def test_rate_half_width_is_zero_for_evenly_spaced_events():
    times = np.arange(0.5, 200.0, 1.0)  # one event per second: 10 in each of 20 slices
    assert stats.rate_half_width(times, 0.0, 200.0) == 0.0
    assert stats.rate_half_width(times[:99], 0.0, 200.0) is None


def test_drift_compares_halves_at_99_percent():
    first, second, moved = stats.drift(np.array([1.0] * 10 + [2.0] * 10))
    assert (first, second, moved) == (1.0, 2.0, True)
    assert not stats.drift(np.array([1.0, 2.0] * 10))[2]
