"""The boundary of one cell of a capacity search: exponential, then binary search on a grid.

The searched values are the points of a grid over ``[low, high]``::

    value(k) = low + k * step   for k = 0 .. K-1,   value(K) = high,   K = ceil((high - low) / step)

(``step`` 1 on integer axes). The SLO is assumed monotone along the axis: with ``goal="max"``
(the most load that meets it) every value below a passing one passes; with ``goal="min"`` (the
least memory) every value above a passing one passes. The search starts at the easy end (``low``
for max, ``high`` for min), moves away from it geometrically (the value doubles, or halves, each
probe) until a probe fails or the far end passes, then bisects the bracket down to neighbouring
grid points. It finds the same boundary a dense grid over the same points finds, in at most
:meth:`Bisection.max_probes` probes instead of K + 1.

Pure: no runs, no I/O; :mod:`sweep.search` feeds it verdicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Bisection:
    """Propose values with :meth:`next` (None when done); report each with :meth:`record`."""

    low: float
    high: float
    step: float
    goal: str  # "max" or "min"
    integer: bool = False
    results: dict[int, bool] = field(default_factory=dict)  # grid index -> meets the SLO
    _good: int | None = None  # best passing index so far
    _bad: int | None = None  # the failing index nearest to it on the far side

    def __post_init__(self) -> None:
        if not (self.step > 0 and self.low < self.high):
            raise ValueError(f"need low < high and step > 0, got {self.low}, {self.high}, {self.step}")
        if self.goal not in ("max", "min"):
            raise ValueError(f"goal must be max or min, not {self.goal!r}")
        self.last = math.ceil((self.high - self.low) / self.step - 1e-9)

    # ---- the grid ----------------------------------------------------------------------------

    def value(self, k: int) -> float | int:
        """The ``k``-th grid point (an int on integer axes; rounded so that 0.1 + 0.2 reads 0.3)."""
        v = self.high if k >= self.last else self.low + k * self.step
        return int(round(v)) if self.integer else round(v, 10)

    def index(self, value: float) -> int:
        """The grid index of a value this search proposed."""
        if value >= self.high:
            return self.last
        return int(round((value - self.low) / self.step))

    @property
    def points(self) -> list[float | int]:
        """Every grid point: what a dense grid would run."""
        return [self.value(k) for k in range(self.last + 1)]

    def max_probes(self) -> int:
        """An upper bound on the probes :meth:`next` proposes: the geometric phase takes at most
        ``bits(K) + 2`` (the value at least doubles or halves each time, or the index moves by one),
        the bisection at most ``bits(K)``."""
        bits = (self.last + 1).bit_length()
        return 2 * bits + 2

    # ---- the search --------------------------------------------------------------------------

    @property
    def start(self) -> int:
        return 0 if self.goal == "max" else self.last

    def next(self) -> float | int | None:
        """The next value to probe, or None when the boundary is known."""
        if not self.results:
            return self.value(self.start)
        if self._good is None:  # the easy end fails: nothing meets the SLO
            return None
        if self._bad is None:
            k = self._farther(self._good)
            return None if k == self._good else self.value(k)
        if abs(self._bad - self._good) <= 1:
            return None
        return self.value((self._good + self._bad) // 2)

    def record(self, value: float, meets: bool) -> None:
        k = self.index(value)
        self.results[k] = meets
        if meets:
            self._good = k
        else:
            self._bad = k

    def _farther(self, k: int) -> int:
        """The next geometric step away from the easy end: value x2 (max) or /2 (min), at least one
        grid point, at most the far end."""
        v = float(self.value(k))
        if self.goal == "max":
            target = int(math.floor((2 * v - self.low) / self.step + 1e-9)) if v > 0 else k + 1
            return min(max(target, k + 1), self.last)
        target = int(math.ceil((v / 2 - self.low) / self.step - 1e-9))
        return max(min(target, k - 1), 0)

    # ---- the answer --------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return bool(self.results) and self.next() is None

    @property
    def boundary(self) -> float | int | None:
        """The best value meeting the SLO (the most for max, the least for min), or None."""
        return None if self._good is None else self.value(self._good)

    @property
    def first_fail(self) -> float | int | None:
        """The grid value next to the boundary that fails (or the easy end, when it fails)."""
        return None if self._bad is None else self.value(self._bad)

    @property
    def bracketed(self) -> bool:
        """Whether the boundary lies between two probed values, one passing and one failing."""
        return self._good is not None and self._bad is not None
