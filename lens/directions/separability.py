"""How well a direction separates two token sets, per layer: AUROC of the projection."""

from __future__ import annotations

import torch
from jaxtyping import Float

from ..errors import LensError
from .means import diff_of_means


def auroc(pos: Float[torch.Tensor, " n"], neg: Float[torch.Tensor, " m"]) -> float:
    """P(score of a random positive > score of a random negative), ties counted half (Mann-Whitney U)."""
    scores = torch.cat([pos, neg]).double()
    ranks = torch.empty_like(scores)
    order = scores.argsort()
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.double)
    # average ranks over ties
    uniq, inv, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(uniq), dtype=torch.double).index_add_(0, inv, ranks)
    ranks = (sums / counts)[inv]
    n, m = len(pos), len(neg)
    u = ranks[:n].sum() - n * (n + 1) / 2
    return float(u / (n * m))


def separability_by_layer(sites: list[str], pos, neg, holdout: float = 0.5, seed: int = 0) -> list[dict]:
    """Per site: the diff-of-means direction fitted on one half, AUROC of projections on the other half.

    Returns rows {site, auroc, auroc_train, norm, n_pos, n_neg} so a user can pick the layer.
    """
    from ..sites import Site

    if not isinstance(sites, (list, tuple)) or not all(isinstance(s, (str, Site)) for s in sites):
        raise LensError("separability_by_layer(sites, pos, neg): the list of sites comes first "
                        f"(got {type(sites).__name__})")
    g = torch.Generator().manual_seed(seed)
    rows = []
    for site in sites:
        a, b = pos[site].float(), neg[site].float()
        pa, pb = torch.randperm(len(a), generator=g), torch.randperm(len(b), generator=g)
        ka, kb = max(1, int(len(a) * holdout)), max(1, int(len(b) * holdout))
        d = diff_of_means(site, a[pa[:ka]], b[pb[:kb]]).unit()
        test_a, test_b = a[pa[ka:]] if len(a) > ka else a, b[pb[kb:]] if len(b) > kb else b
        rows.append({"site": site, "auroc": auroc(test_a @ d, test_b @ d),
                     "auroc_train": auroc(a[pa[:ka]] @ d, b[pb[:kb]] @ d),
                     "norm": float(diff_of_means(site, a, b).norm), "n_pos": len(a), "n_neg": len(b)})
    return rows
