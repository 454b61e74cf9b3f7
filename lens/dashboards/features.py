"""Feature pages: activation histogram, top contexts by quantile band, output logits, steering sweep.

:func:`feature_data` computes everything for MANY features at once from dense activations
``[n_seq, seq_len, n_features]`` (torch ops over all features: one scatter for the histograms, one
sort/top-k per band for the contexts, one matmul for the logits); :func:`feature_page` turns one
feature's dict into a report page. No Python loop runs over tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..errors import LensError
from . import figures as F
from .report import Page, Report

#: bands of a feature's activation as a fraction of its maximum: (label, low, high]
BANDS = ((1.0, 1.0), (0.75, 1.0), (0.5, 0.75), (0.25, 0.5), (0.0, 0.25))


def dense_from_rows(values: torch.Tensor, example: torch.Tensor, position: torch.Tensor,
                    n_seq: int, seq_len: int) -> torch.Tensor:
    """Scatter per-token rows ``[rows, F]`` (with their example index and position) into ``[n_seq, seq_len, F]``."""
    out = torch.zeros(n_seq, seq_len, values.shape[-1], dtype=values.dtype)
    out[example.long(), position.long()] = values
    return out


def feature_data(
    acts: torch.Tensor,
    token_ids: torch.Tensor,
    mask: torch.Tensor,
    vocab: Sequence[str],
    features: Sequence[int] | None = None,
    *,
    decoder: torch.Tensor | None = None,
    unembed: torch.Tensor | None = None,
    n_bins: int = 40,
    per_band: int = 4,
    window: tuple[int, int] = (16, 4),
    k_logits: int = 10,
    seed: int = 0,
) -> list[dict]:
    """Per-feature dashboard data, computed for all features together.

    acts: ``[n_seq, seq_len, F]`` activations (F = the features shown; ``features`` names them).
    token_ids, mask: ``[n_seq, seq_len]`` ids and a bool mask of real (non-padding) tokens.
    vocab: token string of every id. decoder: ``[F, d_model]`` decoder directions of these features;
    unembed: ``[d_model, vocab]`` (e.g. ``W_U``) -> top boosted/suppressed output tokens.
    window: tokens shown before/after the context's centre token. per_band: contexts per band.
    """
    if acts.dim() != 3 or acts.shape[:2] != token_ids.shape or mask.shape != token_ids.shape:
        raise LensError(f"acts must be [n_seq, seq_len, F] matching token_ids/mask [n_seq, seq_len]; got "
                        f"{tuple(acts.shape)}, {tuple(token_ids.shape)}, {tuple(mask.shape)}")
    n_seq, seq_len, n_feat = acts.shape
    features = list(range(n_feat)) if features is None else [int(f) for f in features]
    if len(features) != n_feat:
        raise LensError(f"{len(features)} feature ids for {n_feat} activation columns")
    a = acts.float().reshape(-1, n_feat)  # [T, F]
    valid = mask.reshape(-1).bool()
    a = torch.where(valid[:, None], a, torch.zeros_like(a))
    n_valid = int(valid.sum())
    active = (a > 0) & valid[:, None]
    fmax = a.max(0).values.clamp_min(0)  # [F]
    density = active.sum(0).float() / max(n_valid, 1)
    mean_active = torch.where(active, a, torch.zeros_like(a)).sum(0) / active.sum(0).clamp_min(1)

    # histograms of positive activations, all features in one scatter
    scale = torch.where(fmax > 0, fmax, torch.ones_like(fmax))
    bins = (a / scale * n_bins).long().clamp(0, n_bins - 1)
    flat = (torch.arange(n_feat)[None, :] * n_bins + bins)[active]
    counts = torch.zeros(n_feat * n_bins, dtype=torch.long).index_add_(0, flat, torch.ones_like(flat))
    counts = counts.reshape(n_feat, n_bins)
    edges = torch.linspace(0, 1, n_bins + 1)[None, :] * scale[:, None]  # [F, bins+1]

    # contexts: top-k for the top band, seeded random picks inside each lower band
    g = torch.Generator().manual_seed(seed)
    rel = a / scale
    picks: list[tuple[str, torch.Tensor, torch.Tensor]] = []  # (label, idx [per_band, F], ok [per_band, F])
    k = min(per_band, a.shape[0])
    top = a.masked_fill(~active, float("-inf")).topk(k, dim=0)
    picks.append(("top activations", top.indices, torch.isfinite(top.values)))
    keys = torch.rand(a.shape, generator=g)
    for lo, hi in BANDS[1:]:
        inside = active & (rel > lo) & (rel <= hi)
        sel = keys.masked_fill(~inside, -1.0).topk(k, dim=0)
        picks.append((f"{lo:.0%}-{hi:.0%} of max", sel.indices, sel.values >= 0))
    left, right = window
    offs = torch.arange(-left, right + 1)
    ids_flat, mask_flat = token_ids.reshape(-1), mask.reshape(-1).bool()
    vocab_arr = np.asarray(list(vocab), dtype=object)
    band_out: list[list[list[dict]]] = [[[] for _ in picks] for _ in range(n_feat)]
    for b, (_label, idx, ok) in enumerate(picks):
        seq, pos = idx // seq_len, idx % seq_len  # [k, F]
        wpos = pos[..., None] + offs  # [k, F, W]
        inwin = (wpos >= 0) & (wpos < seq_len)
        flat_w = seq[..., None] * seq_len + wpos.clamp(0, seq_len - 1)
        inwin &= mask_flat[flat_w]
        w_ids = ids_flat[flat_w]
        w_act = a[flat_w, torch.arange(n_feat)[None, :, None].expand_as(flat_w)]
        w_act = torch.where(inwin, w_act, torch.zeros_like(w_act))
        toks = vocab_arr[w_ids.numpy()]
        values = a[idx, torch.arange(n_feat)[None, :]]
        inwin_np, act_np, ok_np, val_np = inwin.numpy(), w_act.numpy(), ok.numpy(), values.numpy()
        for f in range(n_feat):
            rows = []
            for r in np.flatnonzero(ok_np[:, f]):
                keep = inwin_np[r, f]
                centre = int(keep[:left].sum())
                rows.append({"tokens": toks[r, f][keep].tolist(), "acts": act_np[r, f][keep],
                             "center": centre, "value": float(val_np[r, f])})
            band_out[f][b] = rows

    logits_pos = logits_neg = None
    if decoder is not None and unembed is not None:
        if decoder.shape[0] != n_feat:
            raise LensError(f"decoder has {decoder.shape[0]} rows for {n_feat} features")
        eff = decoder.float() @ unembed.float()  # [F, vocab]
        kk = min(k_logits, eff.shape[1])
        logits_pos, logits_neg = eff.topk(kk, dim=1), (-eff).topk(kk, dim=1)

    out = []
    for f in range(n_feat):
        d = {
            "feature": features[f],
            "stats": {"density": float(density[f]), "max": float(fmax[f]), "mean_when_active": float(mean_active[f]),
                      "n_tokens": n_valid},
            "hist": {"edges": edges[f].numpy(), "counts": counts[f].numpy()},
            "contexts": [{"label": lab, "rows": band_out[f][b]} for b, (lab, _, _) in enumerate(picks)],
        }
        if logits_pos is not None:
            d["logits"] = {
                "boosted": {"tokens": vocab_arr[logits_pos.indices[f].numpy()].tolist(),
                            "values": logits_pos.values[f].numpy()},
                "suppressed": {"tokens": vocab_arr[logits_neg.indices[f].numpy()].tolist(),
                               "values": -logits_neg.values[f].numpy()},
            }
        out.append(d)
    return out


def _show(tok: str) -> str:
    return repr(tok)[1:-1] if tok.strip() == "" or "\n" in tok else tok


def _steered_at(rows: Sequence[Mapping]) -> str:
    """Which position a steer-check's rows steered, in words (from the rows' `where`; rows without one steered P-1)."""
    kinds = {r.get("where") for r in rows if r.get("where")}
    if kinds == {"first_generated_token"}:
        return "the first generated token, position P"
    if kinds <= {"first_step", "last_prompt_token"}:
        return "the last prompt token, position P-1, whose forward produces the first generated token"
    return ", ".join(sorted(kinds))


def feature_page(report: Report, d: Mapping, steer_rows: Sequence[Mapping] | None = None,
                 extra: Mapping | None = None) -> Page:
    """Add the page of one feature (a dict from :func:`feature_data`) to ``report``.

    steer_rows: rows ``{"alpha", "accuracy", "reasoning_rate", "feature"|"label"}`` of a steering
    sweep (the feature and its random controls); extra: ranking fields shown in the header table.
    """
    f = d["feature"]
    st = d["stats"]
    page = report.page(f"feature {f}", group="Features", id=f"feature-{f}",
                       lead=f"Active on {st['density']:.2%} of {st['n_tokens']} tokens; max activation "
                            f"{st['max']:.3g}, mean when active {st['mean_when_active']:.3g}.")
    if extra:
        page.table([dict(extra)], caption="ranking")
    edges = np.asarray(d["hist"]["edges"], dtype=float)
    mids = (edges[:-1] + edges[1:]) / 2
    page.figure({"data": [{"type": "bar", "x": mids, "y": np.asarray(d["hist"]["counts"]),
                           "width": float(edges[1] - edges[0]) if len(edges) > 1 else 1.0,
                           "marker": {"color": "#e6550d"}, "name": "tokens",
                           "hovertemplate": "activation %{x:.3g}: %{y} tokens<extra></extra>"}],
                 "layout": F.layout(f"Feature {f}: activation histogram (active tokens only)",
                                    "activation (SAE latent units)", "tokens (count, log scale)",
                                    yaxis={"type": "log", "dtick": 1})}, height=330)
    if "logits" in d:
        lg = d["logits"]
        up, down = lg["boosted"], lg["suppressed"]
        page.figure({"data": [
            {"type": "bar", "orientation": "h", "name": "boosted", "y": [_show(t) for t in up["tokens"]],
             "x": np.asarray(up["values"]), "marker": {"color": "#2ca02c"}, "xaxis": "x", "yaxis": "y"},
            {"type": "bar", "orientation": "h", "name": "suppressed", "y": [_show(t) for t in down["tokens"]],
             "x": np.asarray(down["values"]), "marker": {"color": "#d62728"}, "xaxis": "x2", "yaxis": "y2"}],
            "layout": {**F.layout(f"Feature {f}: output tokens it boosts / suppresses (decoder direction x W_U)",
                                  "logit contribution per unit activation", "token"),
                       "grid": {"rows": 1, "columns": 2, "pattern": "independent"},
                       "yaxis": {"autorange": "reversed", "title": {"text": "boosted token"}, "type": "category"},
                       "yaxis2": {"autorange": "reversed", "title": {"text": "suppressed token"}, "type": "category"},
                       "xaxis2": {"title": {"text": "logit contribution per unit activation"}},
                       "showlegend": False}}, height=360)
    page.html("<h3>Top-activating contexts by band (share of the maximum activation)</h3>")
    page.contexts({"max": st["max"], "bands": d["contexts"]})
    if steer_rows:
        page.figure(F.sweep(steer_rows, "alpha", "accuracy", "label",
                            f"Feature {f}: steering sweep (added at {_steered_at(steer_rows)})",
                            "alpha (norm of the added decoder direction)", "accuracy (%)",
                            dashed=[str(r.get("label")) for r in steer_rows if "random" in str(r.get("label"))]),
                    height=380)
    return page
