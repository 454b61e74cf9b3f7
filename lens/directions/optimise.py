"""Steering-vector optimisation against a frozen model (the hybrid paper's first method).

Find v such that adding v at `site` over the target positions (the last context token P-1, whose
output predicts the first target token, through the last target token) minimises the frozen
model's cross-entropy on the target text given its context. A general bias vector is trained
first on all pairs; per-category vectors are then trained with the bias held fixed.
"""

from __future__ import annotations

import torch

from ..batching import encode
from ..errors import LensError
from ..interventions import Intervention, Where, steer
from ..models import Model
from .artifact import Direction


def _batch(model: Model, pairs: list[tuple[str, str]]):
    ctx_lens = [len(model.tokenizer(c, add_special_tokens=True)["input_ids"]) for c, _ in pairs]
    batch = encode(model, [c + t for c, t in pairs], side="right")
    plen = torch.tensor(ctx_lens)
    pos = torch.arange(batch.input_ids.shape[1])[None]
    target = (pos >= plen[:, None]) & batch.attention_mask.bool()
    if not bool(target.any(-1).all()):
        raise LensError("a (context, target) pair has an empty target after tokenisation")
    return batch, plen, target


def target_loss(model: Model, pairs: list[tuple[str, str]], interventions: list[Intervention]) -> torch.Tensor:
    """Mean cross-entropy of the target tokens given their contexts, under `interventions`."""
    batch, plen, target = _batch(model, pairs)
    dev = model.device
    with steer(model, interventions, prompt_lengths=plen, record=False):
        logits = model.hf(input_ids=batch.input_ids.to(dev), attention_mask=batch.attention_mask.to(dev),
                          position_ids=batch.position_ids.to(dev), use_cache=False).logits
    pred = logits[:, :-1].float()
    gold = batch.input_ids[:, 1:].to(dev)
    mask = target[:, 1:].to(dev)
    ce = torch.nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), gold.reshape(-1), reduction="none")
    return (ce * mask.reshape(-1)).sum() / mask.sum()


def _span(site: str, vec: torch.Tensor, source: str) -> list[Intervention]:
    return [Intervention(site, vec, where=Where.first_step(), source=source),
            Intervention(site, vec, where=Where.generated(0, None), source=source)]


def optimise_vector(
    model: Model,
    pairs: list[tuple[str, str]],
    site: str,
    *,
    bias: Direction | None = None,
    steps: int = 50,
    lr: float = 0.05,
    batch_size: int = 8,
    seed: int = 0,
    name: str = "",
) -> Direction:
    """Optimise one vector on (context, target) pairs; `bias`, when given, is added too and kept fixed."""
    if not pairs:
        raise LensError("steering-vector optimisation needs at least one (context, target) pair")
    flags = [p.requires_grad for p in model.hf.parameters()]
    for p in model.hf.parameters():
        p.requires_grad_(False)  # frozen model; restored below
    try:
        return _optimise(model, pairs, site, bias, steps, lr, batch_size, seed, name)
    finally:
        for p, f in zip(model.hf.parameters(), flags, strict=True):
            p.requires_grad_(f)


def _optimise(model, pairs, site, bias, steps, lr, batch_size, seed, name) -> Direction:
    g = torch.Generator().manual_seed(seed)
    vec = torch.zeros(model.d_model, device=model.device, requires_grad=True)
    opt = torch.optim.Adam([vec], lr=lr)
    fixed = _span(site, bias.vector.to(model.device), "bias") if bias is not None else []
    with torch.no_grad():
        before = float(target_loss(model, pairs, fixed))
    for _ in range(steps):
        idx = torch.randperm(len(pairs), generator=g)[:batch_size].tolist()
        loss = target_loss(model, [pairs[i] for i in idx], fixed + _span(site, vec, "optimised"))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(target_loss(model, pairs, fixed + _span(site, vec.detach(), "optimised")))
    return Direction(site, vec.detach().cpu(), model.facts(), "optimised",
                     {"loss_before": before, "loss_after": after, "steps": steps, "lr": lr, "n_pairs": len(pairs),
                      "with_bias": bias is not None}, name)


def optimise_category_vectors(
    model: Model, pairs_by_category: dict[str, list[tuple[str, str]]], site: str, **kwargs
) -> tuple[Direction, dict[str, Direction]]:
    """The bias vector on all pairs, then one vector per category with the bias held fixed."""
    everything = [p for ps in pairs_by_category.values() for p in ps]
    bias = optimise_vector(model, everything, site, name="bias", **kwargs)
    return bias, {c: optimise_vector(model, ps, site, bias=bias, name=c, **kwargs)
                  for c, ps in pairs_by_category.items()}
