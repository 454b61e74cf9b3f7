"""Category selectors of the hybrid: which category vector a gated step steers with, from the thinking model's residual.

`taxonomy_selector` fits the hybrid paper's taxonomy (Venhoff et al., arXiv 2510.07364): a TopK SAE with one
latent per category on the thinking model's step vectors (``saes.taxonomy``, imported when it is called);
`TaxonomySelector` maps thinking residuals to category indices by the argmax of its raw encoder output.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from ..errors import LensError

if TYPE_CHECKING:
    from ..models import Model


def raw_latents(sae, x: torch.Tensor) -> torch.Tensor:
    """The SAE's encoder output before its activation (TopK/ReLU): (x - b_dec) W_enc + b_enc."""
    s = sae.sae
    x = x.to(s.W_enc.device, s.W_enc.dtype)
    try:
        x = s.process_sae_in(x)
    except AttributeError:  # pragma: no cover - older sae_lens
        x = x - s.b_dec
    return x @ s.W_enc + s.b_enc


@dataclass
class TaxonomySelector:
    """Category index per thinking residual [batch, d]: the argmax of the taxonomy SAE's raw encoder output.

    Over all latents (the paper's hybrid_eval.py), a latent without a category (no step fell into it)
    giving -1, which the hybrid steers with nothing; live_only: the argmax over the latents with a category.
    Indices are into the categories, i.e. the live latents in latent order."""

    sae: object
    centre: torch.Tensor
    normalise: Callable
    live: list[int]
    live_only: bool = False

    def __call__(self, resid: torch.Tensor) -> torch.Tensor:
        raw = raw_latents(self.sae, self.normalise(resid.float().cpu(), self.centre))
        if self.live_only:
            return raw[:, self.live].argmax(-1)
        index = torch.full((raw.shape[-1],), -1, dtype=torch.long)
        index[self.live] = torch.arange(len(self.live))
        return index[raw.argmax(-1).cpu()]

    def variant(self, live_only: bool) -> TaxonomySelector:
        """The same SAE and categories with the other argmax."""
        return replace(self, live_only=live_only)


def taxonomy_selector(
    thinking: Model, traces: Sequence[dict], site: str, *, n_categories: int = 5, seed: int = 0,
    live_only: bool = False, same: dict[str, str] | None = None,
) -> tuple[list[str], TaxonomySelector, dict]:
    """(category name of every labelled step, selector, info) from a taxonomy SAE on the thinking model's steps.

    Categories are named ``c{latent}:{majority step label}``; latents that no step falls into get none
    (``info["taxonomy"]["dead_latents"]``). The selector (`TaxonomySelector`, the paper's argmax over all
    latents unless live_only) maps thinking residuals [batch, d] to indices into
    ``info["taxonomy"]["categories"]`` (the live categories in latent order), -1 for a dead latent. same: step
    labels merged for ``info["taxonomy"]["behaviour_purity"]`` (`saes.taxonomy.behaviour_purity`); categories keep the
    labels' own names.
    """
    try:
        from saes.taxonomy import behaviour_purity, fit_taxonomy, normalise, purity, span_vectors
    except ImportError as e:  # pragma: no cover - saes ships with lens
        raise LensError(f"the taxonomy selector needs the saes package ({e}); use --selector nearest") from e
    x, labels, texts = span_vectors(thinking, traces, site)
    tax = fit_taxonomy(x, n_categories, labels=labels, texts=texts, seed=seed)
    assigned = tax.categories.tolist()
    live = sorted(set(assigned))
    if len(live) < 2:
        raise LensError(f"the taxonomy put all {len(assigned)} steps into one category; use --selector nearest")
    majority = {c: Counter(lab for a, lab in zip(assigned, labels, strict=True) if a == c).most_common(1)[0][0]
                for c in live}
    names = {c: f"c{c}:{majority[c]}" if majority[c] else f"c{c}" for c in live}  # unlabelled steps: c{latent}
    select = TaxonomySelector(tax.sae, tax.centre, normalise, live, live_only)
    info = {"taxonomy": {**purity(assigned, labels), "n_sentences": len(assigned), "n_categories": n_categories,
                         "categories": {names[c]: assigned.count(c) for c in live},
                         "dead_latents": [c for c in range(n_categories) if c not in live],
                         "argmax": "live latents" if live_only else "all latents",
                         **({"behaviour_purity": behaviour_purity(assigned, labels, same)} if same else {}),
                         "top_sentences": {names[c]: [t["text"] for t in top] for c, top in
                                           tax.top_sentences(3).items() if c in names}}}
    return [names[c] for c in assigned], select, info
