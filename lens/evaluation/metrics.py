"""Metrics with intervals: unbiased pass@k, accuracy, tokens used, gap recovered.

Definitions
-----------
* pass@k of a problem with ``n`` samples of which ``c`` are correct (Chen et al. 2021):
  ``1 - C(n-c, k) / C(n, k)``, computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` (no huge binomials);
  1 when ``n - c < k``. The data set's pass@k is the mean over problems.
* Bootstrap intervals resample PROBLEMS with replacement (``n_boot`` times, seeded) and take the
  percentile interval of the statistic; paired statistics (gap recovered) resample the same
  problems for every model.
* Wilson score interval for a proportion ``c / n``.
* gap recovered = ``(hybrid - base) / (thinking - base)``, floored at 0 (Venhoff et al. 2510.07364);
  undefined (nan) when ``thinking <= base``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

from ..errors import LensError


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a ``ci`` interval ``[lo, hi]`` over ``n`` problems (or samples)."""

    value: float
    lo: float
    hi: float
    n: int
    ci: float = 0.95
    method: str = "bootstrap"

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


def powers_of_two(n: int) -> list[int]:
    """The k of a pass@k curve: 1, 2, 4, ... up to ``n`` (and ``n`` itself)."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if ks and ks[-1] != n:
        ks.append(n)
    return ks


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem: ``1 - C(n-c, k) / C(n, k)`` in product form."""
    if not 0 <= c <= n:
        raise LensError(f"pass@k needs 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise LensError(f"pass@k needs 1 <= k <= n (samples per problem), got k={k}, n={n}")
    if n - c < k:
        return 1.0
    i = np.arange(n - c + 1, n + 1, dtype=np.float64)
    return float(1.0 - np.prod(1.0 - k / i))


def _counts(correct: Sequence[Sequence[bool]] | None, n: Sequence[int] | None, c: Sequence[int] | None):
    if correct is not None:
        ns = np.array([len(row) for row in correct])
        cs = np.array([int(sum(bool(x) for x in row)) for row in correct])
    elif n is not None and c is not None:
        ns, cs = np.asarray(n, dtype=int), np.asarray(c, dtype=int)
        if ns.shape != cs.shape:
            raise LensError("n and c must have one entry per problem")
    else:
        raise LensError("give `correct` ([problem][sample] booleans) or both `n` and `c` (per-problem counts)")
    if ns.size == 0:
        raise LensError("no problems given")
    return ns, cs


def bootstrap_interval(
    per_item: Sequence[float] | np.ndarray, n_boot: int = 1000, seed: int = 0, ci: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``per_item``."""
    x = np.asarray(per_item, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    means = x[idx].mean(axis=1)
    a = (1 - ci) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def pass_at_k_curve(
    correct: Sequence[Sequence[bool]] | None = None,
    ks: Sequence[int] = (1,),
    *,
    n: Sequence[int] | None = None,
    c: Sequence[int] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[int, Estimate]:
    """pass@k for each ``k`` in ``ks`` (mean over problems) with bootstrap intervals over problems.

    correct: ``[problem][sample]`` booleans; or give per-problem ``n`` and ``c``. Each k must be at
    most the smallest ``n``.
    """
    ns, cs = _counts(correct, n, c)
    out: dict[int, Estimate] = {}
    for k in ks:
        if k > ns.min():
            raise LensError(f"pass@{k} needs at least {k} samples for every problem (smallest n is {ns.min()})")
        per = np.array([pass_at_k(int(a), int(b), int(k)) for a, b in zip(ns, cs, strict=True)])
        lo, hi = bootstrap_interval(per, n_boot, seed, ci)
        out[int(k)] = Estimate(float(per.mean()), lo, hi, int(ns.size), ci, "bootstrap")
    return out


def wilson_interval(c: int, n: int, ci: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``c / n``."""
    if n <= 0:
        return float("nan"), float("nan")
    z = NormalDist().inv_cdf(1 - (1 - ci) / 2)
    p = c / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def accuracy(
    correct: Sequence[bool], *, method: str = "wilson", ci: float = 0.95, n_boot: int = 1000, seed: int = 0
) -> Estimate:
    """Share of ``True`` in ``correct`` (one entry per problem) with a Wilson or bootstrap interval."""
    x = np.asarray([bool(v) for v in correct], dtype=np.float64)
    if x.size == 0:
        raise LensError("accuracy of an empty list: give one boolean per problem")
    if method == "wilson":
        lo, hi = wilson_interval(int(x.sum()), int(x.size), ci)
    elif method == "bootstrap":
        lo, hi = bootstrap_interval(x, n_boot, seed, ci)
    else:
        raise LensError(f"accuracy interval method must be 'wilson' or 'bootstrap', got {method!r}")
    return Estimate(float(x.mean()), lo, hi, int(x.size), ci, method)


def tokens_summary(counts: Sequence[int]) -> dict[str, float]:
    """Mean, median, 90th percentile, max and total of new-token counts."""
    x = np.asarray(list(counts), dtype=np.float64)
    if x.size == 0:
        return {"n": 0, "mean": float("nan"), "median": float("nan"), "p90": float("nan"), "max": float("nan"),
                "total": 0.0}
    return {
        "n": int(x.size),
        "mean": float(x.mean()),
        "median": float(np.median(x)),
        "p90": float(np.quantile(x, 0.9)),
        "max": float(x.max()),
        "total": float(x.sum()),
    }


def _gap(b: np.ndarray, h: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Gap recovered of the means along the last axis (vectorised over bootstrap draws)."""
    mb, mh, mt = b.mean(-1), h.mean(-1), t.mean(-1)
    den = mt - mb
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(den > 0, (mh - mb) / np.where(den > 0, den, 1.0), np.nan)
    return np.where(np.isnan(g), np.nan, np.maximum(g, 0.0))


def gap_recovered(
    base: Sequence[float],
    hybrid: Sequence[float],
    thinking: Sequence[float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> Estimate:
    """``max(0, (hybrid - base) / (thinking - base))`` of mean scores, with a paired bootstrap over problems.

    Each argument holds one score per problem (e.g. 0/1 correctness), in the same problem order.
    The value is nan when the thinking model does not beat the base; bootstrap draws where it does
    not are left out of the interval.
    """
    b, h, t = (np.asarray(v, dtype=np.float64) for v in (base, hybrid, thinking))
    if not (b.shape == h.shape == t.shape) or b.ndim != 1 or b.size == 0:
        raise LensError(
            f"base, hybrid and thinking need one score per problem each, same problems; got sizes "
            f"{b.size}, {h.size}, {t.size}"
        )
    value = float(_gap(b, h, t))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, b.size, size=(n_boot, b.size))
    draws = _gap(b[idx], h[idx], t[idx])
    draws = draws[~np.isnan(draws)]
    a = (1 - ci) / 2
    lo, hi = (float(np.quantile(draws, a)), float(np.quantile(draws, 1 - a))) if draws.size else (
        float("nan"), float("nan"))
    return Estimate(value, lo, hi, int(b.size), ci, "paired bootstrap")
