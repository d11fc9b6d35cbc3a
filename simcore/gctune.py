"""The cyclic garbage collector, tuned for the length of one simulation.

A run allocates millions of short-lived objects (SimPy events, requests, tuples) and makes
almost no reference cycles, so CPython's default first-generation threshold (700 net
allocations) walks the young objects far more often than it finds garbage, and in a cluster,
whose replicas keep more objects alive, each walk is longer. :func:`tuned_gc` raises that
threshold for the run and restores the previous thresholds after it (a sweep's worker runs
many simulations in one process). At most ``GEN0`` net allocations of garbage wait for a
collection: a few MiB. ``scripts/bench_gc.py`` measures the collector's own time (2-core
machine, ``configs/runs/chat.yaml``, 10,000 requests per replica): one engine 0.91 -> 0.42 us
per simulated request (of about 32), 4 replicas 3.9 -> 1.1 us (of 56-77: their engines keep
four times the objects alive, so every collection walks more, and a full one came due).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

GEN0 = 20_000  # net allocations between first-generation collections during a run


@contextmanager
def tuned_gc(gen0: int | None = None) -> Iterator[None]:
    """Run the block with the first-generation threshold at least ``gen0`` (default
    :data:`GEN0`, read at the call); restore the thresholds after."""
    old = gc.get_threshold()
    gc.set_threshold(max(GEN0 if gen0 is None else gen0, old[0]), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)
