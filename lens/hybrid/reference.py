"""Full-recompute hybrid, as the paper's reference code does it: no KV cache, O(steps^2) work.

Kept as the ground truth the KV-cached `hybrid_generate` must match token for token, and as
the benchmark's "reference style" row. Mode paper is a port of the paper's loop (hybrid_token.py with
a window of the last token, which hybrid_eval.py's KV-cached loop reproduces): each candidate is a full
forward with coefficient x vector added at the newest position only, no past steering replayed.
Mode unsteered_allowed replays past steering choices at their absolute positions on every recompute,
as the KV-cached loop keeps them in its cache. The reasoning phase is the same `Region` in both.
"""

from __future__ import annotations

import torch

from ..batching import encode
from ..hooks import hooks
from ..models import Model
from .common import HybridConfig, HybridResult, StepLog, choose, gate_rows, select_vectors
from .generate import thinking_side
from .region import Region


def _full(model: Model, ids, mask, site=None, adds=None, read=None, read_site=None):
    """Logits at the last slot of a full forward; `adds[row] = [(slot, vector)]` added at `site`;
    `read["h"]` = the last slot's residual at `read_site`."""
    def add(h):
        h = h.clone()
        for r, items in enumerate(adds):
            for slot, v in items:
                h[r, slot] = h[r, slot] + v.to(h.device, h.dtype)
        return h

    def keep(h):
        read["h"] = h[:, -1].detach().cpu()

    fns = {}
    if adds is not None and any(adds):
        fns[site] = add
    if read is not None:
        fns[read_site] = keep
    dev = model.device
    ids, mask = ids.to(dev), mask.to(dev)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with hooks(model, fns):
        logits = model.hf(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
    return logits[:, -1].float().cpu()  # decisions are made on the host, as the paper's code does


def hybrid_generate_reference(
    base: Model, thinking: Model, prompts: list[str], cfg: HybridConfig, max_new_tokens: int = 64,
    eos_token_id: int | None = None, thinking_prompts: list[str] | None = None,
) -> HybridResult:
    """Same decisions as `hybrid_generate`, recomputing both models over the whole sequence each step.

    thinking_prompts and the passing of ids between the models: as `hybrid_generate` (`thinking_side`).
    """
    cfg.check(base.d_model)
    batch = encode(base, prompts, side="left")
    ids, mask = batch.input_ids, batch.attention_mask
    t_ids, t_mask, table = thinking_side(base, thinking, prompts, thinking_prompts)
    eos = eos_token_id if eos_token_id is not None else base.tokenizer.eos_token_id
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(prompts)
    log = StepLog(n, max_new_tokens, cfg.coefficients, eos)
    region = Region(cfg, base, thinking, n, eos)
    adds: list[list] = [[] for _ in range(n)]
    with torch.no_grad():
        for k in range(max_new_tokens):
            last = ids.shape[1] - 1
            b_logits = _full(base, ids, mask, cfg.site, adds)
            read: dict = {}
            t_logits = _full(thinking, t_ids, t_mask, read=read, read_site=cfg.read_site)
            t_top_raw = t_logits.argmax(-1)
            if table is not None:  # the thinking model's logits, read at the base's ids
                t_logits = t_logits[:, table]
            unsteered = b_logits.argmax(-1)
            gated = gate_rows(cfg, b_logits, t_logits) & ~log.done & region.allowed(t_top_raw)
            token = unsteered
            if bool(gated.any()):
                cat, vec = select_vectors(cfg, read["h"], gen)
                cands = []
                for c in cfg.coefficients:
                    trial = [a + ([(last, c * vec[r])] if gated[r] else []) for r, a in enumerate(adds)]
                    cands.append(_full(base, ids, mask, cfg.site, trial).argmax(-1))
                token, pick = choose(cfg, t_logits.log_softmax(-1), unsteered, cands, gated, gen)
                chosen = log.chosen(pick)
                for r in range(n if cfg.mode == "unsteered_allowed" else 0):  # mode paper: nothing persists
                    if gated[r] and pick[r] >= 0:
                        adds[r].append((last, float(chosen[r]) * vec[r]))
                log.steer(k, gated, pick, cat)
            token, feed = region.apply(k, token, t_logits.argmax(-1), t_top_raw, log.done)
            token = log.advance(k, gated, token)
            ids = torch.cat([ids, token[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype)], dim=1)
            t_tok = token if table is None else table[token]
            t_ids = torch.cat([t_ids, torch.where(feed >= 0, feed, t_tok)[:, None]], dim=1)
            t_mask = torch.cat([t_mask, torch.ones(n, 1, dtype=t_mask.dtype)], dim=1)
            if bool(log.done.all()):
                break
    return log.result(base.tokenizer, cfg.names, cfg.mode, region.active)
