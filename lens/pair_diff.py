"""Model-pair diff: how far post-training moved the weights and activations, per layer.

`weight_diff` reports, per decoder layer (and for embeddings/head), the relative Frobenius change
||W_t - W_b|| / ||W_b|| and the fraction of parameters whose change exceeds atol + rtol * |W_b|
(RL is reported to touch 5-30% of parameters). `activation_diff` reports, per site, the mean
residual difference between the two models on the same inputs and its cosine with a reasoning
direction of the base model: does tuning move along a direction the base already had?

Under a launcher (`lens.distributed`, inside a `data_parallel()` block or with ``data_parallel=True``) the
ranks share the work: each measures every world-th parameter of the weight diff and captures its block of
the inputs, and every rank ends with the whole result, equal to one process's (sums formed in the same order).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch

from .capture_memory import capture_shared
from .errors import LensError
from .families import family_of
from .models import Model


def weight_diff(base: Model, tuned: Model, atol: float = 1e-6, rtol: float = 1e-3,
                data_parallel: bool | None = None) -> list[dict]:
    """Per group (layer index, or "other" for embeddings, final norm, head): relative change, fraction changed.

    data_parallel: under a launcher each rank measures every world-th parameter; the groups are summed
    from all of them, in the state dict's order, on every rank (see the module docstring)."""
    from .distributed import gather_indexed, sharing, strided

    a, b = base.hf.state_dict(), tuned.hf.state_dict()
    if a.keys() != b.keys():
        missing = sorted(set(a) ^ set(b))[:5]
        raise LensError(f"{base.spec} and {tuned.spec} have different parameters (e.g. {missing}); not a pair")
    layers = family_of(base.family).layers
    pat = re.compile(re.escape(layers) + r"\.(\d+)\.")
    names = list(a)
    for name in names:
        if a[name].shape != b[name].shape:
            raise LensError(f"parameter {name} has shape {tuple(a[name].shape)} vs {tuple(b[name].shape)}")
    r = sharing(data_parallel)
    local = {}
    for i in range(len(names)) if r is None else strided(len(names), r):  # this rank's parameters
        wa, wb = a[names[i]].float(), b[names[i]].float()
        d = wb - wa
        local[i] = [float(d.pow(2).sum()), float(wa.pow(2).sum()), float((d.abs() > atol + rtol * wa.abs()).sum()),
                    wa.numel()]
    groups: dict[str, list[float]] = {}
    for i, stats in (local if r is None else gather_indexed(local)).items():  # every parameter, in order
        m = pat.search(names[i])
        g = groups.setdefault(f"layer {int(m.group(1)):02d}" if m else "other", [0.0, 0.0, 0.0, 0.0])
        for j, v in enumerate(stats):
            g[j] += v
    return [{"group": k, "relative_change": (v[0] ** 0.5) / max(v[1] ** 0.5, 1e-12),
             "fraction_changed": v[2] / v[3], "parameters": int(v[3])} for k, v in sorted(groups.items())]


def activation_diff(
    base: Model,
    tuned: Model,
    inputs: Iterable,
    sites: list[str],
    select: str = "last_prompt",
    directions: dict[str, torch.Tensor] | None = None,
    data_parallel: bool | None = None,
) -> list[dict]:
    """Per site: |mean(tuned - base)|, its ratio to the base residual norm, cosine with `directions[site]`.

    data_parallel: under a launcher each rank captures its block of the inputs (`capture_shared`)."""
    items = list(inputs)
    ra = capture_shared(base, items, sites, select, progress=False, data_parallel=data_parallel)
    rb = capture_shared(tuned, items, sites, select, progress=False, data_parallel=data_parallel)
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
