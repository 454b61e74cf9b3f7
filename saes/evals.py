"""SAE quality: reconstruction and sparsity on activation rows, and model loss with the SAE spliced in.

Row metrics (streamed, any number of rows):
- explained variance = 1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2 (pooled over rows);
- L0 = mean number of active latents per row;
- dead fraction = share of latents that never fire on the rows; dense fraction = share that fire
  on more than `dense_threshold` of rows.
Spliced metrics (`spliced_metrics`, needs the model and texts): the site's residual is replaced
by the SAE's reconstruction (`lens.site_hooks.hooks`) at every token, and
- CE loss recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean), where CE_zero replaces the site
  by zeros (the usual zero-ablation baseline; 1 = as good as the model, 0 = as bad as no signal);
- KL = mean over tokens of KL(p_clean || p_sae), and the same for the zero ablation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float

from lens.batching import encode
from lens.errors import LensError
from lens.site_hooks import hooks

from .buffer import RowSource
from .io import Dictionary


@torch.no_grad()
def row_metrics(d: Dictionary, source, site: str | None = None, *, batch_rows: int = 4096,
                dense_threshold: float = 0.1, max_rows: int | None = None) -> dict:
    """Explained variance, MSE, L0, dead and dense fraction over the rows of `source` (streamed)."""
    src = RowSource.of(source, site or d.site, chunk_rows=batch_rows)
    if src.d_in != d.d_in:
        raise LensError(f"activations have width {src.d_in} but the SAE reads {d.d_in}")
    n, sse, s1, s2, l0 = 0, 0.0, torch.zeros(d.d_in, dtype=torch.float64), 0.0, 0.0
    fires = torch.zeros(d.d_sae, dtype=torch.float64)
    for x in src:
        if max_rows is not None and n >= max_rows:
            break
        z = d.encode(x).to(x.device)  # an SAE on a GPU: its outputs come back to the rows' device
        xh = d.decode(z.to(d.sae.W_dec.device)).float().to(x.device)
        sse += float((x - xh).pow(2).sum())
        s1 += x.double().sum(0)
        s2 += float(x.double().pow(2).sum())
        active = z != 0
        fires += active.double().sum(0)
        l0 += float(active.sum())
        n += x.shape[0]
    if n == 0:
        raise LensError("no rows to evaluate the SAE on")
    total_var = s2 - float((s1 * s1).sum()) / n  # sum |x - mean|^2
    freq = fires / n
    return {"rows": n, "explained_variance": 1 - sse / max(total_var, 1e-12), "mse": sse / n, "l0": l0 / n,
            "dead_fraction": float((freq == 0).double().mean()),
            "dense_fraction": float((freq > dense_threshold).double().mean()),
            "dense_threshold": dense_threshold}


def _token_ce(logits: Float[torch.Tensor, "b t v"], ids, mask) -> tuple[torch.Tensor, torch.Tensor]:
    logp = F.log_softmax(logits[:, :-1].float(), -1)
    nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    m = mask[:, 1:].bool() & mask[:, :-1].bool()
    return nll[m], logp[m]


@torch.no_grad()
def spliced_metrics(d: Dictionary, model, texts: Sequence, *, batch_size: int = 8, site: str | None = None,
                    skip_first: int = 1) -> dict:
    """CE loss (clean, with the SAE spliced in, zero-ablated), CE recovered and KL, over `texts`.

    texts: strings or lens inputs ({"text"} / {"prompt", "completion"}). skip_first: leave the
    first positions of every row unreplaced (default 1: the BOS / attention-sink token, whose norm
    is often orders of magnitude above the rest and which SAEs are usually not trained on).
    """
    from lens.selection import Example

    site = site or d.site
    if site is None:
        raise LensError("this SAE does not record its site; pass site=")
    d.check(model, site)
    texts = [Example.of(t).text for t in texts]
    if not texts:
        raise LensError("no texts to evaluate the spliced SAE on")
    totals = {"clean": 0.0, "sae": 0.0, "zero": 0.0, "kl_sae": 0.0, "kl_zero": 0.0}
    n_tok = 0

    keep = None  # [batch, seq] True where the site keeps its clean value

    def splice(h):
        rec = d.reconstruct(h.reshape(-1, h.shape[-1])).reshape(h.shape).to(h.dtype)
        return torch.where(keep[..., None], h, rec)

    def zero(h):
        return torch.where(keep[..., None], h, torch.zeros_like(h))

    for i in range(0, len(texts), batch_size):
        b = encode(model, texts[i:i + batch_size])
        kw = dict(input_ids=b.input_ids.to(model.device), attention_mask=b.attention_mask.to(model.device),
                  position_ids=b.position_ids.to(model.device), use_cache=False)
        ids, mask = kw["input_ids"], kw["attention_mask"]
        keep = kw["position_ids"] < skip_first
        clean_nll, clean_logp = _token_ce(model.hf(**kw).logits, ids, mask)
        with hooks(model, {site: splice}):
            sae_nll, sae_logp = _token_ce(model.hf(**kw).logits, ids, mask)
        with hooks(model, {site: zero}):
            zero_nll, zero_logp = _token_ce(model.hf(**kw).logits, ids, mask)
        p = clean_logp.exp()
        totals["clean"] += float(clean_nll.sum())
        totals["sae"] += float(sae_nll.sum())
        totals["zero"] += float(zero_nll.sum())
        totals["kl_sae"] += float((p * (clean_logp - sae_logp)).sum())
        totals["kl_zero"] += float((p * (clean_logp - zero_logp)).sum())
        n_tok += int(clean_nll.numel())
    if n_tok == 0:
        raise LensError("the texts have no predicted tokens (each needs at least two tokens)")
    ce = {k: v / n_tok for k, v in totals.items()}
    gap = ce["zero"] - ce["clean"]
    return {"tokens": n_tok, "ce_clean": ce["clean"], "ce_sae": ce["sae"], "ce_zero": ce["zero"],
            "ce_recovered": (ce["zero"] - ce["sae"]) / gap if abs(gap) > 1e-9 else float("nan"),
            "kl_sae": ce["kl_sae"], "kl_zero": ce["kl_zero"],
            "kl_recovered": 1 - ce["kl_sae"] / ce["kl_zero"] if ce["kl_zero"] > 1e-12 else float("nan"),
            "skip_first": skip_first}


def evaluate(d: Dictionary, rows=None, *, model=None, texts: Sequence[str] | None = None, site: str | None = None,
             dense_threshold: float = 0.1, save: bool = True) -> dict:
    """Row metrics on `rows` (a capture folder or tensor) and/or spliced metrics on `texts`; stored in lens.json."""
    out: dict = {}
    if rows is not None:
        out.update(row_metrics(d, rows, site, dense_threshold=dense_threshold))
    if model is not None and texts:
        out["spliced"] = spliced_metrics(d, model, texts, site=site)
    if save and d.path and Path(d.path).is_dir():
        from .io import update_meta

        update_meta(d.path, evals=out)
        d.meta["evals"] = out
    return out
