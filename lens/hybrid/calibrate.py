"""Scales of the hybrid's vectors chosen on a development split (lens's variant of the paper's tuning).

The hybrid paper's second method picks a best coefficient per category by steering and grading on questions
apart from the evaluation set (thinking-llms-interp, ``train-vectors/compute_diff_of_means.py``,
``--steer_coeffs 0.5,1.0,1.5,2.0``). `calibrate_scales` does the same for the hybrid itself: it multiplies the
bias and each category vector by a scale from a grid and keeps the scale under which the hybrid (the given
config: mode, selector, coefficient sweep, reasoning phase) is most accurate on development prompts, which
must not overlap the prompts it is evaluated on. Coordinate search: the bias first (categories at scale 1),
then each category in turn with the others at their chosen scale. Ties go to the scale closest to 1, then to
the smaller one, so a flat objective leaves the vectors as they were.

With vectors at other steer sites (``alternatives``: the same categories and bias read at other layers), each
category's search also tries each of those sites, so every category gets its own (layer, scale), as the
paper's second method keeps a best layer per category; a category at another site adds the bias of that
site, at the bias's chosen scale. Ties between sites go to the config's own site, then to the order given.
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
    """Chosen scales (and steer sites) and every (vector, site, scale, development accuracy) tried."""

    bias_scale: float
    category_scales: dict[str, float]
    n: int
    grid: tuple[float, ...]
    tried: list[dict] = field(default_factory=list)
    #: categories steered at a site other than the config's, with that site (empty: all at the config's site)
    category_sites: dict[str, str] = field(default_factory=dict)

    def apply(
        self, bias: torch.Tensor | None, categories: dict[str, torch.Tensor],
        alternatives: dict[str, tuple[torch.Tensor | None, dict[str, torch.Tensor]]] | None = None,
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """The bias and category vectors multiplied by their chosen scales, each category's taken from its chosen
        site (`alternatives`, as given to `calibrate_scales`); `site_biases` gives the biases of those sites."""
        alt = alternatives or {}
        return (None if bias is None else bias * self.bias_scale,
                {k: (alt[self.category_sites[k]][1][k] if k in self.category_sites else v)
                 * self.category_scales.get(k, 1.0) for k, v in categories.items()})

    def site_biases(
        self, alternatives: dict[str, tuple[torch.Tensor | None, dict[str, torch.Tensor]]] | None,
    ) -> dict[str, torch.Tensor] | None:
        """{site: bias there at the chosen bias scale} for the sites categories moved to (None if none moved)."""
        used = {s for s in self.category_sites.values()}
        if not used or alternatives is None or any(alternatives[s][0] is None for s in used):
            return None
        return {s: alternatives[s][0] * self.bias_scale for s in sorted(used)}

    def as_dict(self) -> dict:
        return {"bias_scale": self.bias_scale, "category_scales": dict(self.category_scales),
                "category_sites": dict(self.category_sites), "n": self.n, "grid": list(self.grid),
                "tried": list(self.tried)}


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
    alternatives: dict[str, tuple[torch.Tensor | None, dict[str, torch.Tensor]]] | None = None,
) -> Calibration:
    """Scales for `config`'s bias and categories that maximise the hybrid's accuracy on development `prompts`.

    `is_correct(i, completion)` grades prompt i. The config's own vectors are the scale-1 starting point; the
    returned `Calibration.apply` gives the scaled vectors to build the evaluation config from.
    alternatives: {other steer site: (bias there, {category: vector there})}: each category's search also
    tries those sites (module docstring)."""
    grid = check_grid(grid)
    if config.category_sites:
        raise LensError("calibration starts from every category at the config's steer site; give the other sites "
                        "as alternatives instead of category_sites")
    alt = {s: v for s, v in (alternatives or {}).items() if s != config.site}
    for s, (b_alt, c_alt) in alt.items():
        if set(c_alt) != set(config.categories) or (config.bias is not None and b_alt is None):
            raise LensError(f"vectors at {s} must cover the categories {sorted(config.categories)} and the bias; "
                            f"got {sorted(c_alt)}{'' if b_alt is not None else ' and no bias'}")
    sites = [config.site, *alt]
    if not prompts:
        raise LensError("calibration needs development prompts (none given)")
    t_prompts = list(prompts if thinking_prompts is None else thinking_prompts)
    say = progress or (lambda _m: None)
    bias_scale, scales = 1.0, dict.fromkeys(config.categories, 1.0)
    where = dict.fromkeys(config.categories, config.site)
    tried: list[dict] = []
    memo: dict[tuple, float] = {}

    def vector(name: str, site: str) -> torch.Tensor:
        return config.categories[name] if site == config.site else alt[site][1][name]

    def accuracy(b: float, cats: dict[str, float], at: dict[str, str]) -> float:
        key = (b, *sorted(cats.items()), *sorted(at.items()))
        if key not in memo:
            moved = {k: s for k, s in at.items() if s != config.site}
            cfg = replace(config, bias=None if config.bias is None else config.bias * b,
                          categories={k: vector(k, at[k]) * cats[k] for k in config.categories},
                          category_sites=moved or None,
                          site_biases=None if config.bias is None or not moved else
                          {s: alt[s][0] * b for s in set(moved.values())})
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
            scores[g] = accuracy(g, scales, where)
            tried.append({"vector": "bias", "site": config.site, "scale": g, "accuracy": scores[g]})
        bias_scale = _best(scores)
        say(f"calibration: bias x{bias_scale} ({scores[bias_scale]:.3f})")
    for name in config.categories:
        best: tuple | None = None  # (accuracy, site, scale): sites in order, the config's first; strict > keeps it
        for site in sites:
            scores = {}
            for g in grid:
                scores[g] = accuracy(bias_scale, {**scales, name: g}, {**where, name: site})
                tried.append({"vector": name, "site": site, "scale": g, "accuracy": scores[g]})
            g = _best(scores)
            if best is None or scores[g] > best[0]:
                best = (scores[g], site, g)
        acc, where[name], scales[name] = best
        say(f"calibration: {name} at {where[name]} x{scales[name]} ({acc:.3f})")
    moved = {k: s for k, s in where.items() if s != config.site}
    return Calibration(bias_scale, scales, len(prompts), grid, tried, moved)


@dataclass
class Calibrated:
    """What a calibration hands the evaluation: its record and the vectors and sites to run with."""

    calibration: Calibration
    bias: torch.Tensor | None
    categories: dict[str, torch.Tensor]
    category_sites: dict[str, str] | None
    site_biases: dict[str, torch.Tensor] | None


def calibrate_vectors(
    base: Model,
    thinking: Model,
    prompts: Sequence[str],
    is_correct: Callable[[int, str], bool],
    config: HybridConfig,
    vectors_at: Callable[[str], tuple[torch.Tensor | None, dict[str, torch.Tensor]]],
    *,
    layers: Sequence[int] = (),
    grid: Sequence[float] = DEFAULT_GRID,
    max_new_tokens: int = 96,
    thinking_prompts: Sequence[str] | None = None,
    batch_size: int = 64,
    progress: Callable[[str], None] | None = None,
) -> Calibrated:
    """`calibrate_scales` with each of `layers` offered as another steer site, and the chosen vectors applied.

    vectors_at(site) makes (bias, categories) at another steer site as the config's were made at its own
    (`lens.hybrid.vectors.hybrid_vectors`); it is called once per layer of `layers` other than the config's.
    """
    say = progress or (lambda _m: None)
    bad = [layer for layer in layers if not 0 <= layer < base.n_layers]
    if bad:
        raise LensError(f"calibration layer {bad[0]} is not a layer of the base (0..{base.n_layers - 1})")
    alternatives = {}
    for layer in sorted(set(layers)):
        site = f"blocks.{layer}.hook_resid_post"
        if site != config.site:
            say(f"category vectors at layer {layer}")
            alternatives[site] = vectors_at(site)
    cal = calibrate_scales(base, thinking, prompts, is_correct, config, grid=grid, max_new_tokens=max_new_tokens,
                           thinking_prompts=thinking_prompts, batch_size=batch_size, progress=say,
                           alternatives=alternatives)
    bias, cats = cal.apply(config.bias, dict(config.categories), alternatives)
    return Calibrated(cal, bias, cats, cal.category_sites or None, cal.site_biases(alternatives))
