"""Scales of the hybrid's vectors chosen on a development split (lens's variant of the paper's tuning).

The hybrid paper's second method picks a best coefficient per category by steering and grading on questions
apart from the evaluation set (thinking-llms-interp, ``train-vectors/compute_diff_of_means.py``,
``--steer_coeffs 0.5,1.0,1.5,2.0``). `calibrate_scales` does the same for the hybrid itself: it multiplies the
bias and each category vector by a scale from a grid and keeps the scale under which the hybrid (the given
config: mode, selector, coefficient sweep, reasoning phase) is most accurate on development prompts, which
must not overlap the prompts it is evaluated on. Coordinate search: the bias first (categories at scale 1),
then each category in turn with the others at their chosen scale. Ties go to the scale closest to 1, then to
the smaller one, so a flat objective leaves the vectors as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch

from ..errors import LensError
from ..models import Model
from .config import HybridConfig
from .generate import hybrid_generate

#: multipliers of each vector's starting norm tried by default (0: the vector is dropped)
DEFAULT_GRID = (0.0, 0.5, 1.0, 2.0, 3.0)


@dataclass
class Calibration:
    """Chosen scales and every (vector, scale, development accuracy) tried."""

    bias_scale: float
    category_scales: dict[str, float]
    n: int
    grid: tuple[float, ...]
    tried: list[dict] = field(default_factory=list)

    def apply(
        self, bias: torch.Tensor | None, categories: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """The bias and category vectors multiplied by their chosen scales."""
        return (None if bias is None else bias * self.bias_scale,
                {k: v * self.category_scales.get(k, 1.0) for k, v in categories.items()})

    def as_dict(self) -> dict:
        return {"bias_scale": self.bias_scale, "category_scales": dict(self.category_scales), "n": self.n,
                "grid": list(self.grid), "tried": list(self.tried)}


def check_grid(grid: Sequence[float]) -> tuple[float, ...]:
    """The grid as floats; refuses an empty one and any scale that is negative, NaN or infinite."""
    grid = tuple(float(g) for g in grid)
    if not grid or any(not 0 <= g < float("inf") for g in grid):
        raise LensError(f"calibration grid {grid}: give non-negative scales, e.g. 0,0.5,1,2,3")
    return grid


def _best(scores: dict[float, float]) -> float:
    return min(scores, key=lambda s: (-scores[s], abs(s - 1.0), s))


def calibrate_scales(
    base: Model,
    thinking: Model,
    prompts: Sequence[str],
    is_correct: Callable[[int, str], bool],
    config: HybridConfig,
    *,
    grid: Sequence[float] = DEFAULT_GRID,
    max_new_tokens: int = 96,
    thinking_prompts: Sequence[str] | None = None,
    batch_size: int = 64,
    progress: Callable[[str], None] | None = None,
) -> Calibration:
    """Scales for `config`'s bias and categories that maximise the hybrid's accuracy on development `prompts`.

    `is_correct(i, completion)` grades prompt i. The config's own vectors are the scale-1 starting point; the
    returned `Calibration.apply` gives the scaled vectors to build the evaluation config from."""
    grid = check_grid(grid)
    if not prompts:
        raise LensError("calibration needs development prompts (none given)")
    t_prompts = list(prompts if thinking_prompts is None else thinking_prompts)
    say = progress or (lambda _m: None)
    bias_scale, scales = 1.0, dict.fromkeys(config.categories, 1.0)
    tried: list[dict] = []
    memo: dict[tuple, float] = {}

    def accuracy(b: float, cats: dict[str, float]) -> float:
        key = (b, *sorted(cats.items()))
        if key not in memo:
            cfg = replace(config, bias=None if config.bias is None else config.bias * b,
                          categories={k: v * cats[k] for k, v in config.categories.items()})
            right = 0
            for i in range(0, len(prompts), batch_size):
                res = hybrid_generate(base, thinking, list(prompts[i: i + batch_size]), cfg,
                                      max_new_tokens=max_new_tokens, thinking_prompts=t_prompts[i: i + batch_size])
                right += sum(bool(is_correct(i + j, t)) for j, t in enumerate(res.texts))
            memo[key] = right / len(prompts)
        return memo[key]

    if config.bias is not None:
        scores = {}
        for g in grid:
            scores[g] = accuracy(g, scales)
            tried.append({"vector": "bias", "scale": g, "accuracy": scores[g]})
        bias_scale = _best(scores)
        say(f"calibration: bias x{bias_scale} ({scores[bias_scale]:.3f})")
    for name in config.categories:
        scores = {}
        for g in grid:
            scores[g] = accuracy(bias_scale, {**scales, name: g})
            tried.append({"vector": name, "scale": g, "accuracy": scores[g]})
        scales[name] = _best(scores)
        say(f"calibration: {name} x{scales[name]} ({scores[scales[name]]:.3f})")
    return Calibration(bias_scale, scales, len(prompts), grid, tried)
