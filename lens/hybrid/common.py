"""The hybrid's result (returned by the KV-cached loop and the full-recompute reference) and the cached
loop's per-step record.

Config and decisions live in `config` and `decide`; re-exported here for earlier imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .config import (
    ABLATIONS,
    ALL_ABLATIONS,
    EXTRA_ABLATIONS,
    MODES,
    NO_CATEGORY,
    NO_VECTOR,
    PAPER_COEFFICIENTS,
    HybridConfig,
)
from .decide import choose, gate_rows, select_vectors

__all__ = ["ABLATIONS", "ALL_ABLATIONS", "EXTRA_ABLATIONS", "MODES", "PAPER_COEFFICIENTS", "HybridConfig",
           "HybridResult", "StepLog", "choose", "gate_rows", "select_vectors"]


@dataclass
class HybridResult:
    """Generated token ids and texts, and what the hybrid did at every step of every row."""

    tokens: list[list[int]]
    texts: list[str]
    gated: torch.Tensor  # [batch, steps] the gate fired
    steered: torch.Tensor  # [batch, steps] a steered candidate was chosen
    category: torch.Tensor  # [batch, steps] category index used (NO_CATEGORY = -1: none; NO_VECTOR = -2)
    coefficient: torch.Tensor  # [batch, steps] chosen coefficient (0 = unsteered)
    names: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    mode: str = "paper"
    think_region: bool = False  # the reasoning-phase handling was active (`lens.hybrid.region`)
    ablation: str = "none"

    def fraction_steered(self) -> float:
        """Fraction of generated tokens (before EOS) whose token the steering chose.

        In mode paper every gated step is steered (= `fraction_gated`, the paper's "12%" figure); in mode
        unsteered_allowed only the steps where a steered candidate beat the unsteered token."""
        return self.n_steered() / max(self.n_tokens(), 1)

    def fraction_gated(self) -> float:
        """Fraction of generated tokens (before EOS) where the gate fired."""
        return self.n_gated() / max(self.n_tokens(), 1)

    def n_tokens(self) -> int:
        """Generated tokens before EOS, over all rows (the denominator of the fractions)."""
        return int(self._live().sum())

    def n_steered(self) -> int:
        return int((self.steered & self._live()).sum())

    def n_gated(self) -> int:
        return int((self.gated & self._live()).sum())

    def category_use(self) -> dict[str, int]:
        """Steered tokens (before EOS) per category; under bias_only one count, "bias" (no category is used);
        "no_vector": steps whose pick had no category vector (steered with nothing), listed when there are any."""
        live = self._live() & self.steered
        if self.ablation == "bias_only":
            use = {"bias": int(((self.category == NO_CATEGORY) & live).sum())}
        else:
            use = {n: int(((self.category == i) & live).sum()) for i, n in enumerate(self.names)}
        dead = int(((self.category == NO_VECTOR) & live).sum())
        return {**use, "no_vector": dead} if dead else use

    def _live(self) -> torch.Tensor:
        steps = self.gated.shape[1]
        return torch.arange(steps)[None] < torch.tensor(self.lengths)[:, None]


class StepLog:
    """Per-row, per-step record of a KV-cached hybrid run."""

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
        self.category[:, k] = torch.where(gated, cat, NO_CATEGORY)
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

    def result(self, tokenizer, names: list[str], mode: str = "paper", think_region: bool = False,
               ablation: str = "none") -> HybridResult:
        n = len(self.lengths)
        steps = max(self.lengths) if self.lengths else 0
        toks = [self.tokens[r, : self.lengths[r]].tolist() for r in range(n)]
        texts = tokenizer.batch_decode([[t for t in row if t != self.eos] for row in toks], skip_special_tokens=True)
        return HybridResult(toks, texts, self.gated[:, :steps], self.steered[:, :steps], self.category[:, :steps],
                            self.coefficient[:, :steps], names, self.lengths, mode, think_region, ablation)
