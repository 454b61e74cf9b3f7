"""The KV-cached hybrid's per-step decisions: gate, category vector, candidate choice (see
`lens.hybrid.config` for the modes and ablations; `lens.hybrid.reference` makes the same decisions with
its own code)."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int

from .config import NO_CATEGORY, NO_VECTOR, Draws, HybridConfig


def gate_rows(cfg: HybridConfig, base_logits: torch.Tensor, think_logits: torch.Tensor) -> torch.Tensor:
    """Rows where the hybrid considers steering at this step."""
    if cfg.gate == "disagree":
        return base_logits.argmax(-1) != think_logits.argmax(-1)
    lt, lb = think_logits.float().log_softmax(-1), base_logits.float().log_softmax(-1)
    return (lt.exp() * (lt - lb)).sum(-1) > cfg.kl_threshold


def select_vectors(
    cfg: HybridConfig, think_resid: Float[torch.Tensor, "batch d"], draws: Draws
) -> tuple[Int[torch.Tensor, " batch"], Float[torch.Tensor, "batch d"], Int[torch.Tensor, " batch"]]:
    """(category recorded per row, steering vector per row, steer site per row: an index into `cfg.sites`)
    under the configured selector and ablation.

    The selector's -1 (a latent without a category vector) steers with nothing, bias included, whatever the
    ablation (as the paper's missing key), and is recorded as NO_VECTOR; under bias_only a row with a
    category steers with the bias alone and is recorded as NO_CATEGORY; otherwise the category index. A row
    steers at its category's site (`HybridConfig.category_sites`) with the bias of that site."""
    m = cfg.matrix.to(think_resid.device)
    if callable(cfg.selector):
        idx = torch.as_tensor(cfg.selector(think_resid), device=think_resid.device).long()
    else:
        cos = torch.nn.functional.normalize(think_resid.float(), dim=-1) @ torch.nn.functional.normalize(m, dim=-1).T
        idx = cos.argmax(-1)
    if cfg.ablation == "random_category":
        idx = draws.ints("random_category", len(cfg.names)).to(idx.device)
    if cfg.ablation == "random_vector":  # the paper's: fixed per category, same norm, bias kept (below)
        m = cfg.random_matrix.to(think_resid.device)
    has = idx >= 0
    vec = m[idx.clamp(min=0)]
    site = cfg.site_index.to(idx.device)[idx.clamp(min=0)]
    bias = None if cfg.bias_matrix is None else cfg.bias_matrix.to(vec.device)[site.to(vec.device)]
    if cfg.ablation == "bias_only":
        vec = bias.clone()
    elif bias is not None:
        vec = vec + bias
    vec = vec * has[:, None]
    if cfg.ablation == "random_vector_per_step":  # lens's earlier one: replaces category and bias
        rnd = draws.normal("random_vector_per_step", vec.shape[-1]).to(vec.device)
        vec = rnd / rnd.norm(dim=-1, keepdim=True) * vec.norm(dim=-1, keepdim=True)
    recorded = torch.where(has, idx if cfg.ablation != "bias_only" else torch.full_like(idx, NO_CATEGORY), NO_VECTOR)
    return recorded, vec, site


def choose(
    cfg: HybridConfig, think_logprobs: torch.Tensor, unsteered: torch.Tensor, candidates: list[torch.Tensor],
    gated: torch.Tensor, draws: Draws,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen token per row, chosen coefficient index per row; -1 = unsteered).

    Mode paper: among the steered candidates (one per coefficient) keep the one the thinking model gives
    the highest log-probability (ties: the earlier coefficient, as the paper's strict `>`); every gated
    row is steered. Mode unsteered_allowed: the unsteered token is a candidate too, placed first (so it
    wins ties). Ablations: random_guardrail takes a uniformly random steered candidate (one draw per row
    at every gated step); no_guardrail takes `cfg.no_guardrail_coefficient`'s (mode paper) or the largest's.
    """
    steered = torch.stack(candidates, dim=-1)  # [batch, n_coef]
    paper = cfg.mode == "paper"
    tokens = steered if paper else torch.cat([unsteered[:, None], steered], dim=-1)
    off = 0 if paper else 1
    if cfg.ablation == "random_guardrail":
        pick = draws.ints("random_guardrail", len(candidates)) + off
    elif cfg.ablation == "no_guardrail":
        pick = torch.full_like(unsteered, cfg.no_guardrail_index if paper else len(candidates))
    else:
        pick = think_logprobs.gather(-1, tokens).argmax(-1)
    token = torch.where(gated, tokens.gather(-1, pick[:, None])[:, 0], unsteered)
    return token, torch.where(gated, pick - off, torch.full_like(pick, -1))
