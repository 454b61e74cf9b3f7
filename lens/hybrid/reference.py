"""Full-recompute hybrid, as the paper's reference code does it: no KV cache, O(steps^2) work.

Kept as the ground truth the KV-cached `hybrid_generate` must match token for token, and as
the benchmark's "reference style" row. Past steering choices are replayed at their absolute
positions on every recompute, so both implementations see identical residual streams.
"""

from __future__ import annotations

import torch

from ..batching import encode
from ..hooks import hooks
from ..models import Model
from .common import HybridConfig, choose, gate_rows, select_vectors
from .generate import HybridResult


def _full(model: Model, ids, mask, site=None, adds=None, read=None):
    """Logits at the last slot of a full forward; `adds[row] = [(slot, vector)]` added at `site`."""
    def add(h):
        h = h.clone()
        for r, items in enumerate(adds):
            for slot, v in items:
                h[r, slot] = h[r, slot] + v.to(h.dtype)
        return h

    def keep(h):
        read["h"] = h[:, -1].detach()

    fns = {}
    if adds is not None and any(adds):
        fns[site] = add
    if read is not None:
        fns[site] = keep
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with hooks(model, fns):
        return model.hf(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, -1].float()


def hybrid_generate_reference(
    base: Model, thinking: Model, prompts: list[str], cfg: HybridConfig, max_new_tokens: int = 64,
    eos_token_id: int | None = None,
) -> HybridResult:
    """Same decisions as `hybrid_generate`, recomputing both models over the whole sequence each step."""
    cfg.check(base.d_model)
    batch = encode(base, prompts, side="left")
    ids, mask = batch.input_ids, batch.attention_mask
    eos = eos_token_id if eos_token_id is not None else base.tokenizer.eos_token_id
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(prompts)
    shape = (n, max_new_tokens)
    gated_log = torch.zeros(shape, dtype=torch.bool)
    steered_log = torch.zeros(shape, dtype=torch.bool)
    cat_log = torch.full(shape, -1, dtype=torch.long)
    coef_log = torch.zeros(shape)
    coefs = torch.tensor(cfg.coefficients)
    adds: list[list] = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool)
    lengths = [max_new_tokens] * n
    out = torch.zeros(shape, dtype=torch.long)
    with torch.no_grad():
        for k in range(max_new_tokens):
            last = ids.shape[1] - 1
            b_logits = _full(base, ids, mask, cfg.site, adds)
            read: dict = {}
            t_logits = _full(thinking, ids, mask, cfg.site, read=read)
            unsteered = b_logits.argmax(-1)
            gated = gate_rows(cfg, b_logits, t_logits) & ~done
            token = unsteered
            if bool(gated.any()):
                cat, vec = select_vectors(cfg, read["h"], gen)
                cands = []
                for c in cfg.coefficients:
                    trial = [a + ([(last, c * vec[r])] if gated[r] else []) for r, a in enumerate(adds)]
                    cands.append(_full(base, ids, mask, cfg.site, trial).argmax(-1))
                token, pick = choose(cfg, t_logits.log_softmax(-1), unsteered, cands, gated)
                chosen = torch.where(pick >= 0, coefs[pick.clamp(min=0)], torch.zeros(n))
                for r in range(n):
                    if gated[r] and pick[r] >= 0:
                        adds[r].append((last, float(chosen[r]) * vec[r]))
                steered_log[:, k] = (pick >= 0) & gated
                cat_log[:, k] = torch.where(gated, cat, -1)
                coef_log[:, k] = chosen
            gated_log[:, k] = gated
            token = torch.where(done, torch.full_like(token, eos), token)
            out[:, k] = token
            for r in range(n):
                if not done[r] and int(token[r]) == eos:
                    lengths[r] = k + 1
            done |= token == eos
            ids = torch.cat([ids, token[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype)], dim=1)
            if bool(done.all()):
                break
    steps = max(lengths)
    toks = [out[r, : lengths[r]].tolist() for r in range(n)]
    texts = base.tokenizer.batch_decode([[t for t in row if t != eos] for row in toks], skip_special_tokens=True)
    return HybridResult(toks, texts, gated_log[:, :steps], steered_log[:, :steps], cat_log[:, :steps],
                        coef_log[:, :steps], cfg.names, lengths)
