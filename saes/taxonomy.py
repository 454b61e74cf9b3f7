"""Sentence taxonomy of thinking traces with a tiny TopK SAE (Venhoff et al., arXiv 2510.07364).

1. Each sentence (here: each labelled step span of a trace, or any sentence selection) becomes
   the mean residual at the SAE site over its tokens (`lens.capture_memory`, selection "spans").
2. The vectors are centred (minus their mean) and L2-normalised.
3. A TopK SAE with one latent per category (`n_categories`, k = 1 or 3) is trained on them
   (`train_sae`, sae_lens's TopK training SAE).
4. A sentence's category is its argmax latent; each category lists its most activating sentences.
5. With known labels, purity = sum over categories of the majority label's count / sentences;
   also reported: each label's recall in its best category and the label mix of every category.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int

from lens.distributed import alone
from lens.errors import LensError

from .config import TrainConfig
from .io import Dictionary, load_sae
from .train import train_sae


@dataclass
class Taxonomy:
    """A fitted taxonomy: centre, SAE, per-sentence categories and activations."""

    centre: Float[torch.Tensor, " d"]
    sae: Dictionary
    categories: Int[torch.Tensor, " n"]
    strength: Float[torch.Tensor, " n"]
    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def assign(self, x: Float[torch.Tensor, "n d"]) -> tuple[torch.Tensor, torch.Tensor]:
        """(category, activation) of new sentence vectors."""
        z = self.sae.encode(normalise(x, self.centre))
        return z.argmax(-1), z.max(-1).values

    def top_sentences(self, per_category: int = 5) -> dict[int, list[dict]]:
        out: dict[int, list[dict]] = {}
        for c in range(self.sae.d_sae):
            idx = torch.nonzero(self.categories == c).flatten()
            idx = idx[torch.argsort(self.strength[idx], descending=True)][:per_category]
            out[c] = [{"text": self.texts[i] if self.texts else "", "label": self.labels[i] if self.labels else "",
                       "activation": float(self.strength[i])} for i in idx.tolist()]
        return out


def normalise(x: Float[torch.Tensor, "n d"], centre: Float[torch.Tensor, " d"]) -> Float[torch.Tensor, "n d"]:
    y = x.float() - centre
    return y / y.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def fit_taxonomy(x: Float[torch.Tensor, "n d"], n_categories: int = 5, *, k: int = 1, texts: Sequence[str] = (),
                 labels: Sequence[str] = (), epochs: int = 60, batch_size: int = 128, lr: float = 3e-3, seed: int = 0,
                 out: str | Path | None = None, progress: bool = False) -> Taxonomy:
    """Train the category SAE on sentence vectors `x` and assign every sentence (see module docstring)."""
    if x.dim() != 2 or x.shape[0] < 2 * batch_size:
        batch_size = max(8, x.shape[0] // 4)
    if x.shape[0] < 16:
        raise LensError(f"need at least 16 sentences for a taxonomy, got {x.shape[0]}")
    if not 1 <= k <= n_categories:
        raise LensError(f"k must be between 1 and n_categories ({n_categories}), got {k}")
    centre = x.float().mean(0)
    xn = normalise(x, centre)
    cfg = TrainConfig(architecture="topk", d_sae=n_categories, k=k, lr=lr, batch_size=batch_size,
                      buffer_rows=max(2 * batch_size, min(x.shape[0], 8192)), total_rows=epochs * x.shape[0],
                      checkpoint_every=0, dead_feature_window=50, seed=seed)
    scratch = tempfile.TemporaryDirectory(prefix="lens-taxonomy-") if out is None else None
    try:
        folder = Path(out) if out is not None else Path(scratch.name) / "sae"
        with alone():  # under a launcher every rank trains the same small SAE whole (none shares its batches)
            res = train_sae(xn, folder, cfg, progress=progress, init_decoder=farthest_points(xn, n_categories, seed))
        d = load_sae(res.path)  # read into memory: the scratch folder can go
    finally:
        if scratch is not None:
            scratch.cleanup()
    z = d.encode(xn)
    return Taxonomy(centre, d, z.argmax(-1), z.max(-1).values, list(texts), list(labels))


def farthest_points(x: Float[torch.Tensor, "n d"], m: int, seed: int = 0) -> Float[torch.Tensor, "m d"]:
    """m rows of x picked far apart (k-means++ style, greedy on cosine distance, seeded start)."""
    g = torch.Generator().manual_seed(seed)
    idx = [int(torch.randint(x.shape[0], (1,), generator=g))]
    dist = 1 - x @ x[idx[0]]
    for _ in range(m - 1):
        nxt = int(dist.argmax())
        idx.append(nxt)
        dist = torch.minimum(dist, 1 - x @ x[nxt])
    return x[idx].clone()


def purity(categories: Sequence[int], labels: Sequence[str], same: dict[str, str] | None = None) -> dict:
    """Purity, per-label best-category recall, and each category's label counts.

    same: labels counted as another one (e.g. ``{"error": "computation"}``: a slip is the computation that went
    wrong, not a behaviour of its own); the result then reads the merged labels.
    """
    if same:
        labels = [same.get(lab, lab) for lab in labels]
    cats = [int(c) for c in categories]
    if len(cats) != len(labels) or not cats:
        raise LensError("purity needs one label per sentence")
    mix: dict[int, Counter] = {}
    for c, lab in zip(cats, labels, strict=True):
        mix.setdefault(c, Counter())[lab] += 1
    pure = sum(cnt.most_common(1)[0][1] for cnt in mix.values()) / len(cats)
    totals = Counter(labels)
    recall = {lab: max(cnt[lab] for cnt in mix.values()) / n for lab, n in totals.items()}
    majority = {c: cnt.most_common(1)[0][0] for c, cnt in mix.items()}
    return {"purity": pure, "n": len(cats), "label_counts": dict(totals), "label_recall": recall,
            "category_majority": {str(c): lab for c, lab in sorted(majority.items())},
            "category_mix": {str(c): dict(cnt) for c, cnt in sorted(mix.items())},
            "labels_with_own_category": sorted(set(majority.values())),
            "majority_baseline": totals.most_common(1)[0][1] / len(cats)}


def behaviour_purity(categories: Sequence[int], labels: Sequence[str], same: dict[str, str]) -> dict:
    """`purity` with the labels of `same` merged: purity, majority baseline, each category's majority label."""
    p = purity(categories, labels, same)
    keys = ("purity", "majority_baseline", "labels_with_own_category", "category_majority")
    return {**{k: p[k] for k in keys}, "merged": dict(same)}


def span_vectors(model, traces: Sequence[dict], site: str, batch_size: int = 32):
    """Sentence vectors for labelled step spans of traces: (rows [n, d], labels, texts)."""
    from lens.capture_memory import capture

    traces = list(traces)
    acts = capture(model, traces, [site], "spans", batch_size=batch_size, progress=False)
    texts = []
    for ex, s, e in zip(acts.example.tolist(), acts.start.tolist(), acts.end.tolist(), strict=True):
        t = traces[ex]
        full = t.get("text") or (t.get("prompt", "") + t.get("completion", ""))
        ids = model.tokenizer(full, return_offsets_mapping=True)["offset_mapping"]
        a, b = ids[s][0], ids[e - 1][1]
        texts.append(full[a:b])
    return acts[site], list(acts.labels), texts
