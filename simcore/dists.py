"""Length and time distributions for workloads.

Every distribution is a frozen pydantic model with a ``kind`` tag and a ``sample(rng, n)`` method
that draws ``n`` values from a ``numpy.random.Generator``. A bare number in YAML means a constant.
Optional ``min`` / ``max`` clip the drawn values. Token-length distributions round to integers
(see :func:`sample_tokens`); time distributions are in seconds.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator

_TINY = 5e-324  # strictly positive draws (lognormal, exponential) have this lower bound


class _Dist(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    min: float | None = Field(default=None, description="clip draws below this value")
    max: float | None = Field(default=None, description="clip draws above this value")

    @model_validator(mode="after")
    def _check_clip(self) -> _Dist:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}: swap them")
        return self

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, n: int) -> list[float]:
        """Draw ``n`` float values, clipped to ``[min, max]``."""
        return self.sample_array(rng, n).tolist()  # type: ignore[no-any-return]

    def sample_array(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """:meth:`sample` as a float64 array."""
        x = np.asarray(self._draw(rng, n), dtype=np.float64)
        if self.min is not None or self.max is not None:
            x = np.clip(x, self.min, self.max)
        return x

    def lower_bound(self) -> float:
        """The smallest value this distribution can produce (used to reject zero lengths)."""
        raise NotImplementedError

    def mean_hint(self) -> float:
        """The distribution's mean before clipping (for planning and docs)."""
        raise NotImplementedError


class Constant(_Dist):
    kind: Literal["constant"] = "constant"
    value: float

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value)

    def lower_bound(self) -> float:
        return self.value if self.min is None else max(self.value, self.min)

    def mean_hint(self) -> float:
        return self.value


class Uniform(_Dist):
    kind: Literal["uniform"] = "uniform"
    low: float
    high: float

    @model_validator(mode="after")
    def _check(self) -> Uniform:
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}: swap them")
        return self

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, n)

    def lower_bound(self) -> float:
        return self.low if self.min is None else max(self.low, self.min)

    def mean_hint(self) -> float:
        return (self.low + self.high) / 2


class LogNormal(_Dist):
    """Lognormal parameterised by its mean (not mu) and the sigma of the underlying normal."""

    kind: Literal["lognormal"] = "lognormal"
    mean: PositiveFloat
    sigma: float = Field(default=0.8, ge=0.0)

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        mu = math.log(self.mean) - self.sigma**2 / 2
        return rng.lognormal(mu, self.sigma, n)

    def lower_bound(self) -> float:
        return _TINY if self.min is None else max(self.min, _TINY)

    def mean_hint(self) -> float:
        return self.mean


class Exponential(_Dist):
    kind: Literal["exponential"] = "exponential"
    mean: float = Field(ge=0.0)

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.exponential(self.mean, n) if self.mean > 0 else np.zeros(n)

    def lower_bound(self) -> float:
        low = _TINY if self.mean > 0 else 0.0
        return low if self.min is None else max(self.min, low)

    def mean_hint(self) -> float:
        return self.mean


class Geometric(_Dist):
    """Geometric on {1, 2, ...} with the given mean (p = 1 / mean)."""

    kind: Literal["geometric"] = "geometric"
    mean: float = Field(ge=1.0)

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.geometric(1.0 / self.mean, n)

    def lower_bound(self) -> float:
        return 1.0 if self.min is None else max(1.0, self.min)

    def mean_hint(self) -> float:
        return self.mean


class Choice(_Dist):
    """Values drawn from a list, uniformly or with the given weights."""

    kind: Literal["choice"] = "choice"
    values: list[float] = Field(min_length=1)
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _check(self) -> Choice:
        if self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ValueError(
                    f"weights has {len(self.weights)} entries but values has {len(self.values)}:"
                    " give one weight per value"
                )
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError("weights must be non-negative with a positive sum")
        return self

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        p = None
        if self.weights is not None:
            p = np.asarray(self.weights, dtype=np.float64) / sum(self.weights)
        return rng.choice(np.asarray(self.values, dtype=np.float64), size=n, p=p)

    def lower_bound(self) -> float:
        lo = min(self.values)
        return lo if self.min is None else max(lo, self.min)

    def mean_hint(self) -> float:
        if self.weights is None:
            return sum(self.values) / len(self.values)
        return sum(v * w for v, w in zip(self.values, self.weights, strict=True)) / sum(self.weights)


Dist = Annotated[
    Union[Constant, Uniform, LogNormal, Exponential, Geometric, Choice],
    Field(discriminator="kind"),
]


def coerce_dist(value: Any) -> Any:
    """Let YAML say ``user_tokens: 200`` for a constant, or ``[100, 200]`` for a choice."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return {"kind": "constant", "value": value}
    if isinstance(value, list):
        return {"kind": "choice", "values": value}
    return value


def sample_tokens(dist: _Dist, rng: np.random.Generator, n: int, cap: int) -> list[int]:
    """Draw ``n`` token counts: rounded half to even, at least 1, at most ``cap``."""
    # np.rint rounds half to even, as round() does; clipping first keeps any draw in int64
    counts = np.clip(np.rint(dist.sample_array(rng, n)), 1, cap).astype(np.int64)
    return counts.tolist()  # type: ignore[no-any-return]
