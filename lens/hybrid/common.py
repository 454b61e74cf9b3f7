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


@dataclass
class HybridResult:
    """Generated token ids and texts, and what the hybrid did at every step of every row."""

    tokens: list[list[int]]
    texts: list[str]
    gated: torch.Tensor  # [batch, steps] the gate fired
    steered: torch.Tensor  # [batch, steps] a steered candidate was chosen
    category: torch.Tensor  # [batch, steps] category index used (-1 = none)
    coefficient: torch.Tensor  # [batch, steps] chosen coefficient (0 = unsteered)
    names: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    def fraction_steered(self) -> float:
        """Fraction of generated tokens (before EOS) whose token the steering chose."""
        live = self._live()
        return float((self.steered & live).sum() / live.sum().clamp(min=1))

    def fraction_gated(self) -> float:
        live = self._live()
        return float((self.gated & live).sum() / live.sum().clamp(min=1))

    def category_use(self) -> dict[str, int]:
        live = self._live() & self.steered
        return {n: int(((self.category == i) & live).sum()) for i, n in enumerate(self.names)}

    def _live(self) -> torch.Tensor:
        steps = self.gated.shape[1]
        return torch.arange(steps)[None] < torch.tensor(self.lengths)[:, None]


class StepLog:
    """Per-row, per-step record of a hybrid run (shared by the KV-cached and the reference generator)."""

    def __init__(self, n: int, steps: int, coefficients: tuple[float, ...], eos: int):
        shape = (n, steps)
        self.gated = torch.zeros(shape, dtype=torch.bool)
        self.steered = torch.zeros(shape, dtype=torch.bool)
        self.category = torch.full(shape, -1, dtype=torch.long)
        self.coefficient = torch.zeros(shape)
        self.tokens = torch.zeros(shape, dtype=torch.long)
        self.done = torch.zeros(n, dtype=torch.bool)
        self.lengths = [steps] * n
        self.coefs = torch.tensor(coefficients)
        self.eos = eos

    def chosen(self, pick: torch.Tensor) -> torch.Tensor:
        """Coefficient per row for a `choose` pick (-1 = unsteered -> 0)."""
        return torch.where(pick >= 0, self.coefs[pick.clamp(min=0)], torch.zeros(len(pick)))

    def steer(self, k: int, gated: torch.Tensor, pick: torch.Tensor, cat: torch.Tensor) -> None:
        self.steered[:, k] = (pick >= 0) & gated
        self.category[:, k] = torch.where(gated, cat, -1)
        self.coefficient[:, k] = self.chosen(pick)

    def advance(self, k: int, gated: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        """Record step k's gate and token (EOS after a row ended); returns the token to feed back."""
        self.gated[:, k] = gated
        token = torch.where(self.done, torch.full_like(token, self.eos), token)
        self.tokens[:, k] = token
        is_eos = token == self.eos
        for r in (is_eos & ~self.done).nonzero().flatten().tolist():
            self.lengths[r] = k + 1
        self.done |= is_eos
        return token

    def result(self, tokenizer, names: list[str]) -> HybridResult:
        n = len(self.lengths)
        steps = max(self.lengths) if self.lengths else 0
        toks = [self.tokens[r, : self.lengths[r]].tolist() for r in range(n)]
        texts = tokenizer.batch_decode([[t for t in row if t != self.eos] for row in toks], skip_special_tokens=True)
        return HybridResult(toks, texts, self.gated[:, :steps], self.steered[:, :steps], self.category[:, :steps],
                            self.coefficient[:, :steps], names, self.lengths)
