"""simulate() runs under a raised first-generation GC threshold and gives the thresholds back."""

from __future__ import annotations

import gc

import pytest

from simcore import gctune
from simcore.api import simulate
from tests.simhelpers import small_cfg


def test_the_threshold_is_raised_inside_and_restored_after_even_on_error():
    before = gc.get_threshold()
    with gctune.tuned_gc():
        inside = gc.get_threshold()
    assert inside == (max(gctune.GEN0, before[0]), *before[1:])
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), gctune.tuned_gc(10**6):
        assert gc.get_threshold()[0] == 10**6
        raise RuntimeError("a failing run")
    assert gc.get_threshold() == before


def test_a_higher_threshold_already_set_is_kept():
    before = gc.get_threshold()
    gc.set_threshold(10**7, *before[1:])
    try:
        with gctune.tuned_gc():
            assert gc.get_threshold()[0] == 10**7
    finally:
        gc.set_threshold(*before)


def test_simulate_runs_under_it_and_restores_the_thresholds(monkeypatch: pytest.MonkeyPatch):
    from simcore.cluster import Cluster

    seen: list[tuple[int, ...]] = []

    class Watched(Cluster):  # the real cluster; it notes the thresholds its run sees
        def run(self) -> None:
            seen.append(gc.get_threshold())
            super().run()

    before = gc.get_threshold()
    monkeypatch.setattr("simcore.api.Cluster", Watched)
    res = simulate(small_cfg(engine={"block_size": 16}, run={"num_requests": 20}))
    assert res.status == "ok" and res.summary["num_completed"] == 20
    assert seen == [(max(gctune.GEN0, before[0]), *before[1:])]
    assert gc.get_threshold() == before
