"""Rank SAE features by how differently they fire under two conditions (streamed, vectorised).

Conditions are two sets of rows at the SAE's site: two prompt sets (e.g. chain-of-thought vs
direct-answer instructions, read at the last prompt token, where the first-step trigger acts) or
two token selections (tokens inside thinking traces vs in direct answers), given as capture
folders, `Activations`, tensors, or prompts plus a model.

For each feature, over each condition's rows: mean activation, activation frequency (share of
rows where it is non-zero), variance; then
- mean_diff = mean_pos - mean_neg;
- effect_size = mean_diff / pooled standard deviation (Cohen's d);
- auroc = P(a_pos > a_neg) + 0.5 P(tie) (Mann-Whitney U / (n_pos n_neg), ties averaged): EXACT
  whenever the non-zero activations of both conditions fit in `exact_limit` stored values (the
  zeros are one exact tie group, so sparse SAE codes of many rows still fit). Past that limit the
  AUROC is a streaming approximation from per-feature histograms (one exact bin for zero and
  `n_bins` log-spaced bins above it, so memory is O(d_sae * n_bins) whatever the number of rows;
  within-bin ties count one half) and each row reports `auroc_max_error`, a bound on
  |histogram AUROC - exact AUROC| (half the probability that a pos and a neg value share a bin).
  `Ranking.auroc_method` and every row's `auroc_method` say which one was computed.
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
    """Running per-feature sums for one condition, plus what the AUROC needs.

    While the stored non-zero activations fit in `exact_limit` values (feature index int32 + value
    float32 each, on the host), they are kept so the AUROC can be exact (`exact` is True). Past the
    limit (or with `exact_limit=0`) they are folded into per-feature histograms over `edges` and
    the rest of the stream is histogrammed: memory O(d_sae * n_bins) from then on.
    """

    def __init__(self, d_sae: int, edges: Float[torch.Tensor, " n_edges"], max_cells: int = 1 << 22,
                 exact_limit: int = 1 << 24):
        self.d_sae, self.edges, self.max_cells, self.exact_limit = d_sae, edges, max_cells, exact_limit
        self.n_bins = edges.numel() + 1  # bin 0: <= 0; bin i: edges[i-1] < a <= edges[i]; last: > edges[-1]
        self.n = 0
        self.sum = torch.zeros(d_sae, dtype=torch.float64)
        self.sumsq = torch.zeros(d_sae, dtype=torch.float64)
        self.nonzero = torch.zeros(d_sae, dtype=torch.float64)
        self.negative = torch.zeros(d_sae, dtype=torch.float64)  # values < 0 (bin 0 is then not an exact tie)
        self._offsets = torch.arange(d_sae) * self.n_bins
        self._feat: list[torch.Tensor] = []
        self._val: list[torch.Tensor] = []
        self.stored = 0
        self.hist: torch.Tensor | None = None
        if exact_limit <= 0:
            self.spill()

    @property
    def exact(self) -> bool:
        """True while every non-zero value is kept (the AUROC can be exact)."""
        return self.hist is None

    def to(self, device: torch.device | str) -> FeatureAccumulator:
        """Move the running sums and histograms (in place) to `device`; returns self.

        The sums are float64 (exact over many rows) except on MPS, which has no float64 (float32 there).
        The stored exact values stay on the host."""
        device = torch.device(device)
        wide = torch.float32 if device.type == "mps" else torch.float64
        for name in ("edges", "hist", "_offsets"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))
        for name in ("sum", "sumsq", "nonzero", "negative"):
            setattr(self, name, getattr(self, name).to(device, wide))
        return self

    def _histogram(self, z: torch.Tensor) -> None:
        step = max(1, self.max_cells // self.d_sae)
        for part in z.split(step):
            idx = torch.where(part > 0, torch.bucketize(part, self.edges) + 1, 0)
            self.hist += torch.bincount((idx + self._offsets).reshape(-1), minlength=self.hist.numel())

    def spill(self) -> None:
        """Stop keeping values: fold the stored ones (and the zeros) into histograms; stream on from there."""
        if self.hist is not None:
            return
        dev = self.sum.device
        edges, offsets = self.edges.to(dev), self._offsets.to(dev)
        hist = torch.zeros(self.d_sae * self.n_bins, dtype=torch.int64, device=dev)
        if self._feat:
            f = torch.cat(self._feat).to(dev, torch.int64)
            v = torch.cat(self._val).to(dev)
            f, v = f[v > 0], v[v > 0]
            hist += torch.bincount(offsets[f] + torch.bucketize(v, edges) + 1, minlength=hist.numel())
            positive = torch.bincount(f, minlength=self.d_sae)
        else:
            positive = torch.zeros(self.d_sae, dtype=torch.int64, device=dev)
        hist.view(self.d_sae, self.n_bins)[:, 0] = self.n - positive  # zeros and negatives: bin 0
        self.hist, self.edges, self._offsets = hist, edges, offsets
        self._feat, self._val, self.stored = [], [], 0

    def update(self, z: Float[torch.Tensor, "rows d_sae"]) -> None:
        """Add a batch of feature activations (the sums follow the batch onto its device)."""
        if z.device != self.sum.device:
            self.to(z.device)
        z = z.float()
        wide = self.sum.dtype
        self.sum += z.sum(0, dtype=wide)
        self.sumsq += z.to(wide).pow(2).sum(0)
        self.nonzero += (z > 0).sum(0, dtype=wide)
        self.negative += (z < 0).sum(0, dtype=wide)
        if self.exact:
            rows, feats = torch.nonzero(z, as_tuple=True)
            if self.stored + feats.numel() <= self.exact_limit:
                self._feat.append(feats.to("cpu", torch.int32))
                self._val.append(z[rows, feats].cpu())
                self.stored += feats.numel()
                self.n += z.shape[0]
                return
            self.spill()
        self.n += z.shape[0]
        self._histogram(z)

    def values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored non-zero activations: (feature index, value), on the host (exact mode only)."""
        if not self.exact:
            raise LensError("the values were folded into histograms (over exact_limit); only the histogram is left")
        if not self._feat:
            return torch.zeros(0, dtype=torch.int64), torch.zeros(0)
        return torch.cat(self._feat).long(), torch.cat(self._val)

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
        self.spill()
        return self.hist.view(self.d_sae, self.n_bins).double() / max(self.n, 1)


def auroc_from_hist(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Per-feature AUROC from [d_sae, n_bins] probability histograms (ties within a bin count 1/2)."""
    below = torch.cumsum(neg, -1) - neg
    return (pos * (below + 0.5 * neg)).sum(-1)


def hist_auroc_error_bound(pos: torch.Tensor, neg: torch.Tensor,
                           bin0_exact: torch.Tensor | None = None) -> torch.Tensor:
    """Per-feature bound on |auroc_from_hist - exact AUROC|: a pos and a neg value in the same bin
    are counted as half a win whatever their order, so the error is at most half the probability
    of sharing a bin. Bin 0 (values <= 0) is an exact tie where `bin0_exact` (no negative values)."""
    share = pos * neg
    if bin0_exact is None:
        bin0_exact = torch.ones(share.shape[:-1], dtype=torch.bool)
    share[..., 0] = torch.where(bin0_exact.to(share.device), 0.0, share[..., 0])
    return 0.5 * share.sum(-1)


def _sort_keys(feat: torch.Tensor, val: torch.Tensor) -> torch.Tensor:
    """int64 keys ordered as (feature, value): the feature in the high 32 bits, the float32 value's
    bits made order-preserving (negatives below positives, larger above) in the low 32."""
    b = val.float().contiguous().view(torch.int32).long()
    u = torch.where(b >= 0, b + (1 << 31), -1 - b)
    return (feat.long() << 32) | u


def exact_auroc(feat_pos: torch.Tensor, val_pos: torch.Tensor, n_pos: int,
                feat_neg: torch.Tensor, val_neg: torch.Tensor, n_neg: int, d_sae: int) -> torch.Tensor:
    """Per-feature exact AUROC, P(a_pos > a_neg) + 0.5 P(a_pos = a_neg), from sparse activations.

    feat_*/val_*: the non-zero entries of each condition (feature index, value); every other entry
    of the n_pos x d_sae (n_neg x d_sae) table is zero. Mann-Whitney U from midranks (ties
    averaged), the zeros of a feature forming one tie group: one sort of the non-zero entries
    (values compared as float32), O(nnz log nnz), no dense table.
    """
    kp = _sort_keys(feat_pos, val_pos)
    keys = torch.sort(torch.cat([kp, _sort_keys(feat_neg, val_neg)])).values
    f = torch.arange(d_sae, dtype=torch.int64) << 32
    start = torch.searchsorted(keys, f)  # each feature's first entry
    below_zero = (torch.searchsorted(keys, f | (1 << 31)) - start).double()  # its negative entries
    nz_pos = torch.bincount(feat_pos.long(), minlength=d_sae).double()
    nz_neg = torch.bincount(feat_neg.long(), minlength=d_sae).double()
    zeros = (n_pos - nz_pos) + (n_neg - nz_neg)  # per feature: the zero tie group's size
    rank_sum = (n_pos - nz_pos) * (below_zero + (zeros + 1) / 2)  # the pos zeros' midranks
    if kp.numel():
        fp = feat_pos.long()
        lo = torch.searchsorted(keys, kp)
        hi = torch.searchsorted(keys, kp, right=True)
        mid = (lo - start[fp]).double() + (hi - lo + 1).double() / 2  # midrank among the feature's non-zeros
        mid += torch.where(val_pos > 0, zeros[fp], 0.0)  # positive values rank above the zeros
        rank_sum = rank_sum.index_add(0, fp, mid)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / max(n_pos * n_neg, 1)


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
    auroc_method: str = "exact"  # "exact" (rank-based) or "histogram" (streaming approximation, see auroc_max_error)

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
    from lens.capture_memory import Activations

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
    exact_limit: int = 1 << 24,
) -> Ranking:
    """Score every feature on `pos` vs `neg` rows and sort (descending) by `sort_by`.

    pos/neg: capture folders (or paths), `Activations`, [rows, d_in] tensors, RowSources, or any
    iterable of row tensors (e.g. `prompt_rows(...)`). Rows are encoded `batch_rows` at a time.
    min_freq: drop features firing on less than this share of rows in both conditions.
    exact_limit: how many non-zero activations (both conditions together, 8 bytes each) may be kept
    for the exact AUROC (the default 2^24 is about 1 GiB at the peak of the final sort; raise it for larger sets
    that fit in memory; 0: the histogram always); past it the AUROC is the histogram approximation over `n_bins`
    bins and each row's `auroc_max_error` bounds its error (`Ranking.auroc_method` says which one ran).
    """
    if sort_by not in SORT_KEYS:
        raise LensError(f"sort_by must be one of {', '.join(SORT_KEYS)}, got {sort_by!r}")
    site = site or d.site
    edges = default_edges(n_bins)
    acc = {}
    t0 = time.perf_counter()
    budget = int(exact_limit)
    for name, cond in (("pos", pos), ("neg", neg)):
        a = FeatureAccumulator(d.d_sae, edges, exact_limit=budget)
        for x in _iter_rows(cond, site, batch_rows):
            if x.shape[-1] != d.d_in:
                raise LensError(f"{name} rows have width {x.shape[-1]} but the SAE reads {d.d_in}")
            a.update(d.encode(x))
        if a.n == 0:
            raise LensError(f"the {name} condition has no rows")
        acc[name] = a.to("cpu")  # the per-feature table is built on the host
        budget = max(budget - a.stored, 0) if a.exact else 0
    p, n = acc["pos"], acc["neg"]
    mean_diff = p.mean - n.mean
    pooled = ((p.var * (p.n - 1) + n.var * (n.n - 1)) / max(p.n + n.n - 2, 1)).sqrt()
    effect = mean_diff / pooled.clamp_min(1e-8)
    if p.exact and n.exact:
        method = "exact"
        auroc = exact_auroc(*p.values(), p.n, *n.values(), n.n, d.d_sae)
        err = torch.zeros(d.d_sae, dtype=torch.float64)
    else:
        method = "histogram"
        pp, pn = p.pmf(), n.pmf()
        auroc = auroc_from_hist(pp, pn)
        err = hist_auroc_error_bound(pp, pn, (p.negative == 0) & (n.negative == 0))
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
             "mean_pos": float(p.mean[f]), "mean_neg": float(n.mean[f]), "auroc_method": method,
             "auroc_max_error": float(err[f])} for f in order.tolist()]
    return Ranking(rows, p.n, n.n, seconds, d.d_sae, sort_by, method)


def prompt_rows(model, prompts: Sequence[str], site: str, select: str = "last_prompt",
                batch_size: int = 16) -> Iterator[torch.Tensor]:
    """Rows at `site` for `prompts` (selection `select`), one forward batch at a time (bounded memory)."""
    from lens.capture_memory import capture
    from lens.selection import LastPromptToken, parse_select

    prompts = list(prompts)
    if not prompts:
        raise LensError("an empty prompt set cannot be a condition")
    whole_prompt = isinstance(parse_select(select), LastPromptToken)
    for i in range(0, len(prompts), batch_size):
        items = [{"prompt": p, "completion": ""} if whole_prompt else p for p in prompts[i:i + batch_size]]
        acts = capture(model, items, [site], select, batch_size=batch_size, progress=False)
        yield acts[site]


def texts_rows(model, texts: Sequence, site: str, select: str, batch_size: int = 16,
               too_long: str = "error") -> Iterator[torch.Tensor]:
    """Rows at `site` for arbitrary inputs (strings or {prompt, completion, spans}) under any selection.

    too_long: an input longer than the model's context raises ("error") or is cut ("truncate"), as in capture.
    """
    from lens.capture_memory import capture

    texts = list(texts)
    for i in range(0, len(texts), batch_size):
        yield capture(model, texts[i:i + batch_size], [site], select, batch_size=batch_size, progress=False,
                      too_long=too_long)[site]
