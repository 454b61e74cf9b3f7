"""Model-pair diff: how far post-training moved the weights and activations, per layer.

`weight_diff` reports, per decoder layer (and for embeddings/head), the relative Frobenius change
||W_t - W_b|| / ||W_b|| and the fraction of parameters whose change exceeds atol + rtol * |W_b|
(RL is reported to touch 5-30% of parameters). `activation_diff` reports, per site, the mean
residual difference between the two models on the same inputs and its cosine with a reasoning
direction of the base model: does tuning move along a direction the base already had?
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch

from .capture_memory import capture
from .errors import LensError
from .families import family_of
from .models import Model


def weight_diff(base: Model, tuned: Model, atol: float = 1e-6, rtol: float = 1e-3) -> list[dict]:
    """Per group (layer index, or "other" for embeddings, final norm, head): relative change, fraction changed."""
    a, b = base.hf.state_dict(), tuned.hf.state_dict()
    if a.keys() != b.keys():
        missing = sorted(set(a) ^ set(b))[:5]
        raise LensError(f"{base.spec} and {tuned.spec} have different parameters (e.g. {missing}); not a pair")
    layers = family_of(base.family).layers
    pat = re.compile(re.escape(layers) + r"\.(\d+)\.")
    groups: dict[str, list[float]] = {}
    for name, wa in a.items():
        wb = b[name]
        if wa.shape != wb.shape:
            raise LensError(f"parameter {name} has shape {tuple(wa.shape)} vs {tuple(wb.shape)}")
        m = pat.search(name)
        key = f"layer {int(m.group(1)):02d}" if m else "other"
        wa, wb = wa.float(), wb.float()
        d = wb - wa
        g = groups.setdefault(key, [0.0, 0.0, 0.0, 0.0])
        g[0] += float(d.pow(2).sum())
        g[1] += float(wa.pow(2).sum())
        g[2] += float((d.abs() > atol + rtol * wa.abs()).sum())
        g[3] += wa.numel()
    return [{"group": k, "relative_change": (v[0] ** 0.5) / max(v[1] ** 0.5, 1e-12),
             "fraction_changed": v[2] / v[3], "parameters": int(v[3])} for k, v in sorted(groups.items())]


def activation_diff(
    base: Model,
    tuned: Model,
    inputs: Iterable,
    sites: list[str],
    select: str = "last_prompt",
    directions: dict[str, torch.Tensor] | None = None,
) -> list[dict]:
    """Per site: |mean(tuned - base)|, its ratio to the base residual norm, cosine with `directions[site]`."""
    items = list(inputs)
    ra = capture(base, items, sites, select, progress=False)
    rb = capture(tuned, items, sites, select, progress=False)
    rows = []
    for s in sites:
        diff = (rb[s] - ra[s]).mean(0)
        row = {"site": s, "mean_diff_norm": float(diff.norm()),
               "relative": float(diff.norm() / ra[s].norm(dim=-1).mean().clamp_min(1e-12))}
        if directions and s in directions:
            v = directions[s].float()
            row["cosine_with_direction"] = float(diff @ v / (diff.norm() * v.norm()).clamp_min(1e-12))
        rows.append(row)
    return rows
