"""Rank SAE features by how differently they fire under two conditions (streamed, vectorised).

Conditions are two sets of rows at the SAE's site: two prompt sets (e.g. chain-of-thought vs
direct-answer instructions, read at the last prompt token, where the first-step trigger acts) or
two token selections (tokens inside thinking traces vs in direct answers), given as capture
folders, `Activations`, tensors, or prompts plus a model.

For each feature, over each condition's rows: mean activation, activation frequency (share of
rows where it is non-zero), variance; then
- mean_diff = mean_pos - mean_neg;
- effect_size = mean_diff / pooled standard deviation (Cohen's d);
- auroc = P(a_pos > a_neg) + 0.5 P(tie), from per-feature histograms: one exact bin for zero
  (most ties are there) and `n_bins` log-spaced bins above it, so memory is
  O(d_sae * n_bins) whatever the number of rows (exact when values are zero or fall in
  different bins; within-bin ties count one half).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float

from lens.errors import LensError

from .buffer import RowSource
from .io import Dictionary

SORT_KEYS = ("mean_diff", "auroc", "effect_size", "freq_diff")


class FeatureAccumulator:
    """Running per-feature sums and histograms of activations for one condition."""

    def __init__(self, d_sae: int, edges: Float[torch.Tensor, " n_edges"], max_cells: int = 1 << 22):
        self.d_sae, self.edges, self.max_cells = d_sae, edges, max_cells
        self.n_bins = edges.numel() + 1  # bin 0: <= 0; bin i: edges[i-1] < a <= edges[i]; last: > edges[-1]
        self.n = 0
        self.sum = torch.zeros(d_sae, dtype=torch.float64)
        self.sumsq = torch.zeros(d_sae, dtype=torch.float64)
        self.nonzero = torch.zeros(d_sae, dtype=torch.float64)
        self.hist = torch.zeros(d_sae * self.n_bins, dtype=torch.int64)
        self._offsets = torch.arange(d_sae) * self.n_bins

    def to(self, device: torch.device | str) -> FeatureAccumulator:
        """Move the running sums and histograms (in place) to `device`; returns self.

        The sums are float64 (exact over many rows) except on MPS, which has no float64 (float32 there)."""
        device = torch.device(device)
        wide = torch.float32 if device.type == "mps" else torch.float64
        for name in ("edges", "hist", "_offsets"):
            setattr(self, name, getattr(self, name).to(device))
        for name in ("sum", "sumsq", "nonzero"):
            setattr(self, name, getattr(self, name).to(device, wide))
        return self

    def update(self, z: Float[torch.Tensor, "rows d_sae"]) -> None:
        """Add a batch of feature activations (the sums follow the batch onto its device)."""
        if z.device != self.sum.device:
            self.to(z.device)
        z = z.float()
        self.n += z.shape[0]
        wide = self.sum.dtype
        self.sum += z.sum(0, dtype=wide)
        self.sumsq += z.to(wide).pow(2).sum(0)
        self.nonzero += (z > 0).sum(0, dtype=wide)
        step = max(1, self.max_cells // self.d_sae)
        for part in z.split(step):
            idx = torch.where(part > 0, torch.bucketize(part, self.edges) + 1, 0)
            self.hist += torch.bincount((idx + self._offsets).reshape(-1), minlength=self.hist.numel())

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / max(self.n, 1)

    @property
    def var(self) -> torch.Tensor:
        return (self.sumsq / max(self.n, 1) - self.mean.pow(2)).clamp_min(0)

    @property
    def freq(self) -> torch.Tensor:
        return self.nonzero / max(self.n, 1)

    def pmf(self) -> torch.Tensor:
        return self.hist.view(self.d_sae, self.n_bins).double() / max(self.n, 1)


def auroc_from_hist(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Per-feature AUROC from [d_sae, n_bins] probability histograms (ties within a bin count 1/2)."""
    below = torch.cumsum(neg, -1) - neg
    return (pos * (below + 0.5 * neg)).sum(-1)


def default_edges(n_bins: int = 96, lo: float = 1e-3, hi: float = 1e4) -> torch.Tensor:
    return torch.logspace(math.log10(lo), math.log10(hi), n_bins - 1)


@dataclass
class Ranking:
    """The table of per-feature scores, best first, plus what was compared."""

    rows: list[dict]
    n_pos: int
    n_neg: int
    seconds: float
    d_sae: int
    sort_by: str

    @property
    def features(self) -> list[int]:
        return [r["feature"] for r in self.rows]

    @property
    def throughput(self) -> float:
        """rows x features scored per second."""
        return (self.n_pos + self.n_neg) * self.d_sae / max(self.seconds, 1e-9)

    def as_dicts(self, top: int | None = None) -> list[dict]:
        return self.rows[:top] if top else list(self.rows)

    def neutral(self, margin: float = 0.1) -> list[int]:
        """Features that do not separate the two conditions (|AUROC - 0.5| <= margin): the pool that
        random-feature controls are drawn from, so a "random" control is never itself a contrast feature."""
        return [r["feature"] for r in self.rows if abs(r["auroc"] - 0.5) <= margin]


def _iter_rows(cond, site: str | None, batch_rows: int) -> Iterator[torch.Tensor]:
    from lens.capture import Activations

    if isinstance(cond, Activations):
        t = cond[site] if site else next(iter(cond.acts.values()))
        yield from t.float().split(batch_rows)
        return
    if isinstance(cond, RowSource) or isinstance(cond, torch.Tensor) or hasattr(cond, "iter_rows") \
            or isinstance(cond, str):
        yield from RowSource.of(cond, site, chunk_rows=batch_rows)
        return
    if isinstance(cond, Iterable):
        for t in cond:
            yield t.float()
        return
    raise LensError(f"cannot read rows from {type(cond).__name__}")


@torch.no_grad()
def rank_features(
    d: Dictionary,
    pos,
    neg,
    *,
    site: str | None = None,
    sort_by: str = "mean_diff",
    top: int | None = None,
    batch_rows: int = 2048,
    n_bins: int = 96,
    min_freq: float = 0.0,
) -> Ranking:
    """Score every feature on `pos` vs `neg` rows and sort (descending) by `sort_by`.

    pos/neg: capture folders (or paths), `Activations`, [rows, d_in] tensors, RowSources, or any
    iterable of row tensors (e.g. `prompt_rows(...)`). Rows are encoded `batch_rows` at a time.
    min_freq: drop features firing on less than this share of rows in both conditions.
    """
    if sort_by not in SORT_KEYS:
        raise LensError(f"sort_by must be one of {', '.join(SORT_KEYS)}, got {sort_by!r}")
    site = site or d.site
    edges = default_edges(n_bins)
    acc = {}
    t0 = time.perf_counter()
    for name, cond in (("pos", pos), ("neg", neg)):
        a = FeatureAccumulator(d.d_sae, edges)
        for x in _iter_rows(cond, site, batch_rows):
            if x.shape[-1] != d.d_in:
                raise LensError(f"{name} rows have width {x.shape[-1]} but the SAE reads {d.d_in}")
            a.update(d.encode(x))
        if a.n == 0:
            raise LensError(f"the {name} condition has no rows")
        acc[name] = a.to("cpu")  # the per-feature table is built on the host
    p, n = acc["pos"], acc["neg"]
    mean_diff = p.mean - n.mean
    pooled = ((p.var * (p.n - 1) + n.var * (n.n - 1)) / max(p.n + n.n - 2, 1)).sqrt()
    effect = mean_diff / pooled.clamp_min(1e-8)
    auroc = auroc_from_hist(p.pmf(), n.pmf())
    seconds = time.perf_counter() - t0
    cols = {"mean_diff": mean_diff, "auroc": auroc, "effect_size": effect, "freq_diff": p.freq - n.freq}
    keep = torch.maximum(p.freq, n.freq) >= min_freq if min_freq > 0 else torch.ones(d.d_sae, dtype=torch.bool)
    key = cols[sort_by].masked_fill(~keep, -math.inf)
    order = torch.argsort(key, descending=True, stable=True)
    order = order[keep[order]]
    if top:
        order = order[:top]
    rows = [{"feature": int(f), "mean_diff": float(mean_diff[f]), "auroc": float(auroc[f]),
             "freq_pos": float(p.freq[f]), "freq_neg": float(n.freq[f]), "effect_size": float(effect[f]),
             "mean_pos": float(p.mean[f]), "mean_neg": float(n.mean[f])} for f in order.tolist()]
    return Ranking(rows, p.n, n.n, seconds, d.d_sae, sort_by)


def prompt_rows(model, prompts: Sequence[str], site: str, select: str = "last_prompt",
                batch_size: int = 16) -> Iterator[torch.Tensor]:
    """Rows at `site` for `prompts` (selection `select`), one forward batch at a time (bounded memory)."""
    from lens.capture import capture

    prompts = list(prompts)
    if not prompts:
        raise LensError("an empty prompt set cannot be a condition")
    for i in range(0, len(prompts), batch_size):
        items = [{"prompt": p, "completion": ""} if select == "last_prompt" else p for p in prompts[i:i + batch_size]]
        acts = capture(model, items, [site], select, batch_size=batch_size, progress=False)
        yield acts[site]


def texts_rows(model, texts: Sequence, site: str, select: str, batch_size: int = 16,
               too_long: str = "error") -> Iterator[torch.Tensor]:
    """Rows at `site` for arbitrary inputs (strings or {prompt, completion, spans}) under any selection.

    too_long: an input longer than the model's context raises ("error") or is cut ("truncate"), as in capture.
    """
    from lens.capture import capture

    texts = list(texts)
    for i in range(0, len(texts), batch_size):
        yield capture(model, texts[i:i + batch_size], [site], select, batch_size=batch_size, progress=False,
                      too_long=too_long)[site]
