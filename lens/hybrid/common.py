"""Pieces shared by the KV-cached hybrid and the full-recompute reference: config, selection, choice."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int

from ..errors import LensError

ABLATIONS = ("none", "bias_only", "random_category", "random_vector", "no_guardrail")


@dataclass
class HybridConfig:
    """How the hybrid decides, per generated token, whether and how to steer the base model.

    site: where category vectors are added (base model) and the thinking residual is read.
    categories: name -> vector [d_model] (e.g. one-vs-rest or optimised directions).
    bias: optional general vector added together with the category vector.
    coefficients: scales tried when the gate fires; the guardrail keeps the candidate token the
        thinking model finds most likely (unsteered included), or without guardrail the largest scale.
    gate: "disagree" (greedy tokens differ) or "kl" (KL(thinking || base) > kl_threshold).
    selector: "nearest" (category direction with the highest cosine to the thinking residual) or a
        callable [batch, d_model] -> [batch] category indices (e.g. the taxonomy SAE's argmax latent).
    ablation: one of ABLATIONS.
    """

    site: str
    categories: dict[str, Float[torch.Tensor, " d_model"]]
    bias: Float[torch.Tensor, " d_model"] | None = None
    coefficients: tuple[float, ...] = (0.25, 0.5, 1.0)
    gate: str = "disagree"
    kl_threshold: float = 0.5
    selector: object = "nearest"
    ablation: str = "none"
    seed: int = 0
    names: list[str] = field(init=False)
    matrix: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        if not self.categories:
            raise LensError("the hybrid needs at least one category vector")
        if self.ablation not in ABLATIONS:
            raise LensError(f"unknown ablation {self.ablation!r}; use one of {', '.join(ABLATIONS)}")
        if self.gate not in ("disagree", "kl"):
            raise LensError(f"unknown gate {self.gate!r}; use disagree or kl")
        if self.ablation == "bias_only" and self.bias is None:
            raise LensError("the bias_only ablation needs a bias vector")
        self.names = list(self.categories)
        self.matrix = torch.stack([self.categories[n].float() for n in self.names])

    def check(self, d_model: int) -> None:
        if self.matrix.shape[1] != d_model:
            raise LensError(f"category vectors have width {self.matrix.shape[1]}, the models {d_model}")


def gate_rows(cfg: HybridConfig, base_logits: torch.Tensor, think_logits: torch.Tensor) -> torch.Tensor:
    """Rows where the hybrid considers steering at this step."""
    if cfg.gate == "disagree":
        return base_logits.argmax(-1) != think_logits.argmax(-1)
    lt, lb = think_logits.float().log_softmax(-1), base_logits.float().log_softmax(-1)
    return (lt.exp() * (lt - lb)).sum(-1) > cfg.kl_threshold


def select_vectors(
    cfg: HybridConfig, think_resid: Float[torch.Tensor, "batch d"], gen: torch.Generator
) -> tuple[Int[torch.Tensor, " batch"], Float[torch.Tensor, "batch d"]]:
    """(category index per row, steering vector per row) under the configured selector and ablation."""
    m = cfg.matrix.to(think_resid.device)
    if callable(cfg.selector):
        idx = torch.as_tensor(cfg.selector(think_resid), device=think_resid.device).long()
    else:
        cos = torch.nn.functional.normalize(think_resid.float(), dim=-1) @ torch.nn.functional.normalize(m, dim=-1).T
        idx = cos.argmax(-1)
    if cfg.ablation == "random_category":
        idx = torch.randint(len(cfg.names), idx.shape, generator=gen).to(idx.device)
    vec = m[idx]
    if cfg.ablation == "bias_only":
        vec = cfg.bias.to(vec.device).float().expand_as(vec).clone()
    elif cfg.bias is not None:
        vec = vec + cfg.bias.to(vec.device).float()
    if cfg.ablation == "random_vector":
        rnd = torch.randn(vec.shape, generator=gen).to(vec.device)
        vec = rnd / rnd.norm(dim=-1, keepdim=True) * vec.norm(dim=-1, keepdim=True)
    return idx, vec


def choose(
    cfg: HybridConfig, think_logprobs: torch.Tensor, unsteered: torch.Tensor, candidates: list[torch.Tensor],
    gated: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen token per row, chosen coefficient index per row; -1 = unsteered).

    With the guardrail, among the unsteered token and each coefficient's token keep the one the
    thinking model gives the highest log-probability (ties keep the earlier, i.e. smaller, option).
    Without it (ablation no_guardrail), take the largest coefficient's token.
    """
    tokens = torch.stack([unsteered] + candidates, dim=-1)  # [batch, 1 + n_coef]
    if cfg.ablation == "no_guardrail":
        pick = torch.full_like(unsteered, len(candidates))
    else:
        scores = think_logprobs.gather(-1, tokens)
        pick = scores.argmax(-1)
    pick = torch.where(gated, pick, torch.zeros_like(pick))
    return tokens.gather(-1, pick[:, None])[:, 0], pick - 1
