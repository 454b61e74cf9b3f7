"""Contrastive means: difference of means, one-vs-rest means, PCA of paired differences."""

from __future__ import annotations

import os

import torch
from jaxtyping import Float

from ..errors import LensError
from .artifact import Direction


def _opened(acts):
    """A capture folder given by its path, opened (`lens.open_capture`); anything else as it is."""
    if isinstance(acts, (str, os.PathLike)):
        from ..capture_folder import open_capture

        return open_capture(acts)
    return acts


def _rows(acts, site: str) -> Float[torch.Tensor, "rows d"]:
    x = acts[site] if not isinstance(acts, torch.Tensor) else acts
    if x.numel() == 0 or x.shape[0] == 0:
        raise LensError(f"no rows for {site}: the token selection matched nothing")
    return x.float()


def _facts(*acts) -> dict:
    for a in acts:
        if hasattr(a, "model") and a.model:
            return dict(a.model)
    return {}


def _site_first(usage: str, site) -> None:
    """Refuse a call with the activations first: the site comes first everywhere."""
    from ..sites import Site

    if not isinstance(site, (str, Site)):
        raise LensError(f"{usage}: the site comes first, e.g. 'blocks.3.hook_resid_post' (got {type(site).__name__})")


def diff_of_means(site: str, pos, neg, *, normalize: bool = False, center: bool = False, name: str = "") -> Direction:
    """mean(pos[site]) - mean(neg[site]); `pos`/`neg` are Activations, capture folders (or their paths), or
    [rows, d] tensors.

    center: subtract the pooled mean from each set first (leaves the difference unchanged; kept for
    symmetry with one_vs_rest); normalize: scale to unit norm (the raw norm is kept in info).
    """
    _site_first("diff_of_means(site, pos, neg)", site)
    pos, neg = _opened(pos), _opened(neg)
    a, b = _rows(pos, site), _rows(neg, site)
    if a.shape[1] != b.shape[1]:
        raise LensError(f"the two token sets have different widths ({a.shape[1]} vs {b.shape[1]})")
    if center:
        mu = torch.cat([a, b]).mean(0)
        a, b = a - mu, b - mu
    vec = a.mean(0) - b.mean(0)
    raw = float(vec.norm())
    if normalize:
        vec = vec / max(raw, 1e-12)
    info = {"n_pos": a.shape[0], "n_neg": b.shape[0], "raw_norm": raw,
            "mean_resid_norm": float(torch.cat([a, b]).norm(dim=-1).mean()), "normalized": normalize}
    return Direction(site, vec, _facts(pos, neg), "diff_of_means", info, name)


def one_vs_rest(site: str, acts, labels: list[str], *, normalize: bool = False) -> dict[str, Direction]:
    """For each label: mean of its rows minus mean of all other rows (rows labelled "" are ignored)."""
    _site_first("one_vs_rest(site, acts, labels)", site)
    acts = _opened(acts)
    x = _rows(acts, site)
    if len(labels) != x.shape[0]:
        raise LensError(f"{len(labels)} labels for {x.shape[0]} rows")
    names = sorted({lab for lab in labels if lab})
    if len(names) < 2:
        raise LensError(f"one-vs-rest needs at least two labels, found {names}")
    lab = torch.tensor([names.index(v) if v else -1 for v in labels])
    out = {}
    for i, n in enumerate(names):
        inside, rest = x[lab == i], x[(lab != i) & (lab >= 0)]
        out[n] = diff_of_means(site, inside, rest, normalize=normalize, name=n)
        out[n].method = "one_vs_rest"
        out[n].model = _facts(acts)
    return out


def pca_of_differences(site: str, pos, neg, k: int = 1) -> list[Direction]:
    """Top-k principal directions of paired differences pos[i] - neg[i] (rows must pair up).

    Each direction's sign is chosen so the mean difference projects positively onto it.
    """
    _site_first("pca_of_differences(site, pos, neg)", site)
    pos, neg = _opened(pos), _opened(neg)
    a, b = _rows(pos, site), _rows(neg, site)
    if a.shape != b.shape:
        raise LensError(f"PCA of paired differences needs equal row counts ({a.shape[0]} vs {b.shape[0]})")
    d = a - b
    _, s, vt = torch.linalg.svd(d - d.mean(0), full_matrices=False) if d.shape[0] > 1 else (None, None, d)
    mean = d.mean(0)
    out = []
    for i in range(min(k, vt.shape[0])):
        v = vt[i] / vt[i].norm()
        if float(v @ mean) < 0:
            v = -v
        var = float(s[i] ** 2 / s.pow(2).sum()) if s is not None else 1.0
        out.append(Direction(site, v, _facts(pos, neg), "pca", {"component": i, "explained_variance": var,
                                                                   "n_pairs": a.shape[0]}))
    return out
