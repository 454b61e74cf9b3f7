"""How the hybrid decides: its configuration, modes and ablations (Venhoff et al., arXiv 2510.07364).

Modes (what the candidates are once the gate fires):

* ``paper`` (default): the paper's code (thinking-llms-interp, ``hybrid/hybrid_eval.py``): the candidates
  are the STEERED tokens only, one per coefficient of the sweep 0.1..1.0; the guardrail keeps the one the
  thinking model finds most likely (ties: the earlier coefficient) and the step counts as steered, so
  tokens steered = tokens gated: the figure comparable to the paper's 12%. The steering is a per-step
  nudge of the newest position only: the base's cache keeps that position unsteered. Steering acts only
  in the thinking model's reasoning phase (until it predicts ``think_close``); the base's EOS is
  suppressed there, and when the thinking model closes its reasoning the base is given ``answer_prompt``
  (``lens.hybrid.region``).
* ``unsteered_allowed``: lens's earlier variant: the unsteered token is offered too and preferred on
  ties, the chosen variant of the newest position stays in the base's cache (later steps see it), and
  there is no reasoning-phase handling. Its "tokens steered" counts only steps where a steered token won.

Ablations: ABLATIONS are the paper's (``random_vector``: one Gaussian vector per category, fixed for
the run (seeded), of that category vector's norm, bias kept; ``random_guardrail``: a uniformly random
candidate of the sweep; ``bias_only``; ``random_category``: a uniformly random category per row and step;
``no_guardrail``: one fixed coefficient, ``no_guardrail_coefficient`` (default 0.5), as hybrid_token.py
does without its guardrail: it steers with the first coefficient of its list, whose default is 0.5..1.0
(in mode ``unsteered_allowed``: the largest, as lens did)). EXTRA_ABLATIONS are lens's earlier ones
(``random_vector_per_step``: a fresh random vector each step, of the norm of category + bias, replacing both).

Random draws (`Draws`): each row's draw at a step comes from its own ``torch.Generator``, seeded by (``seed``,
the row's prompt index, the step, the draw's kind), so it does not depend on the other rows of its batch,
on the batch size or on how many processes share the prompts: ``random_category`` one category
(``randint``), ``random_vector_per_step`` one [d_model] ``randn``, ``random_guardrail`` one coefficient
index (``randint``). The prompt index is the row's place in the call unless given (`hybrid_generate`'s
``rows``; the study passes each prompt's index in its task set). The KV-cached loop and the reference
draw the same, so their choices agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Float

from ..errors import LensError

MODES = ("paper", "unsteered_allowed")
#: where a candidate is steered: the newest position (hybrid_eval.py) or every position (hybrid_token.py)
STEER_POSITIONS = ("newest", "all")
ABLATIONS = ("none", "bias_only", "random_category", "random_vector", "random_guardrail", "no_guardrail")
EXTRA_ABLATIONS = ("random_vector_per_step",)
ALL_ABLATIONS = ABLATIONS + EXTRA_ABLATIONS
PAPER_COEFFICIENTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
#: hybrid_token.py's coefficient list starts at 0.5; without its guardrail it steers with that first one
NO_GUARDRAIL_COEFFICIENT = 0.5
NO_CATEGORY = -1  # recorded category: none (not gated, or bias_only's bias alone)
NO_VECTOR = -2  # recorded category: the selector picked a latent without a category vector (steers with nothing)
PAPER_ANSWER_PROMPT = "\n\nFinal answer: "  # hybrid_eval.py's base-side transition out of the think region


@dataclass
class HybridConfig:
    """How the hybrid decides, per generated token, whether and how to steer the base model.

    site: the STEER site, where category vectors are added to the base model (each category's, unless
        `category_sites` names another).
    read_site: where the thinking model's residual is read to pick the category (the taxonomy SAE's
        layer); default `site`.
    categories: name -> vector [d_model] (e.g. one-vs-rest or optimised directions).
    bias: optional general vector added together with the category vector (at `site`).
    category_sites: optional {category name: steer site} for categories steered elsewhere than `site` (the
        paper's second version: a best layer per category); the rest steer at `site`. site_biases: {site: the
        bias there} for each of those other sites when `bias` is given (a category adds the bias of its own site).
    coefficients: scales tried when the gate fires (default the paper's sweep 0.1..1.0).
    gate: "disagree" (greedy tokens differ) or "kl" (KL(thinking || base) > kl_threshold).
    selector: "nearest" (category direction with the highest cosine to the thinking residual) or a
        callable [batch, d_model] -> [batch] category indices (e.g. the taxonomy SAE's argmax latent), -1
        for a pick without a category vector (the paper's argmax over all latents landing on a dead one:
        that step steers with nothing).
    mode: one of MODES (module docstring). ablation: one of ALL_ABLATIONS.
    think_close: the thinking model's end-of-reasoning marker (mode paper; one token, or several pieces
        recognised by BPE-suffix detection as the paper's code does: `lens.hybrid.region`). answer_prompt: the text the
        base is given when the thinking model closes its reasoning.
    steer_positions: "newest" (hybrid_eval.py's default: a candidate is the base re-run at its newest
        position with coefficient x vector added there, the cache keeping it unsteered) or "all"
        (hybrid_token.py's default, ``--token_windows [1]``: a candidate is a full forward of the whole
        sequence, prompt included, with coefficient x vector added at every position; mode paper only).
    candidate_batch: the most (gated row, coefficient) candidates run in one base forward; each newest-position
        candidate holds a copy of its row's KV cache, so this bounds the sweep's extra memory. The tokens do not
        depend on it.
    """

    site: str
    categories: dict[str, Float[torch.Tensor, " d_model"]]
    bias: Float[torch.Tensor, " d_model"] | None = None
    coefficients: tuple[float, ...] = PAPER_COEFFICIENTS
    gate: str = "disagree"
    kl_threshold: float = 0.5
    selector: object = "nearest"
    ablation: str = "none"
    seed: int = 0
    mode: str = "paper"
    read_site: str | None = None
    think_close: str | None = "</think>"
    answer_prompt: str = PAPER_ANSWER_PROMPT
    no_guardrail_coefficient: float = NO_GUARDRAIL_COEFFICIENT
    steer_positions: str = "newest"
    candidate_batch: int = 32
    category_sites: dict[str, str] | None = None
    site_biases: dict[str, Float[torch.Tensor, " d_model"]] | None = None
    names: list[str] = field(init=False)
    no_guardrail_index: int = field(init=False)
    matrix: torch.Tensor = field(init=False)
    random_matrix: torch.Tensor = field(init=False)
    sites: list[str] = field(init=False)
    site_index: torch.Tensor = field(init=False)
    bias_matrix: torch.Tensor | None = field(init=False)

    def __post_init__(self) -> None:
        if not self.categories:
            raise LensError("the hybrid needs at least one category vector")
        if self.ablation not in ALL_ABLATIONS:
            raise LensError(f"unknown ablation {self.ablation!r}; use one of {', '.join(ALL_ABLATIONS)}")
        if self.mode not in MODES:
            raise LensError(f"unknown mode {self.mode!r}; use one of {', '.join(MODES)}")
        if self.steer_positions not in STEER_POSITIONS:
            raise LensError(f"unknown steer_positions {self.steer_positions!r}; use one of "
                            f"{', '.join(STEER_POSITIONS)}")
        if self.steer_positions == "all" and self.mode != "paper":
            raise LensError("steer_positions 'all' (hybrid_token.py's candidates) runs in mode paper only")
        if not isinstance(self.candidate_batch, int) or self.candidate_batch < 1:
            raise LensError(f"candidate_batch must be a positive integer, got {self.candidate_batch!r}")
        if self.gate not in ("disagree", "kl"):
            raise LensError(f"unknown gate {self.gate!r}; use disagree or kl")
        if self.ablation == "bias_only" and self.bias is None:
            raise LensError("the bias_only ablation needs a bias vector")
        if not self.coefficients:
            raise LensError("the hybrid needs at least one coefficient")
        self.no_guardrail_index = len(self.coefficients) - 1
        if self.ablation == "no_guardrail" and self.mode == "paper":
            hits = [i for i, c in enumerate(self.coefficients) if abs(c - self.no_guardrail_coefficient) < 1e-9]
            if not hits:
                raise LensError(f"the no_guardrail ablation steers with coefficient {self.no_guardrail_coefficient}, "
                                f"which is not in the coefficient sweep {list(self.coefficients)}; add it to the "
                                "sweep or set no_guardrail_coefficient to one of them")
            self.no_guardrail_index = hits[0]
        self.read_site = self.read_site or self.site
        self.names = list(self.categories)
        self.matrix = torch.stack([self.categories[n].float() for n in self.names])
        self._steer_sites()
        g = torch.Generator().manual_seed(self.seed)
        rnd = torch.randn(self.matrix.shape, generator=g)  # the paper's random_vector: fixed per category
        self.random_matrix = rnd / rnd.norm(dim=-1, keepdim=True) * self.matrix.norm(dim=-1, keepdim=True)

    def _steer_sites(self) -> None:
        """`sites` (distinct steer sites, `site` first), `site_index` (each category's, [categories]) and
        `bias_matrix` (the bias at each of `sites`, [sites, d_model], or None without a bias)."""
        where = dict(self.category_sites or {})
        unknown = sorted(set(where) - set(self.names))
        if unknown:
            raise LensError(f"category_sites names categories the hybrid does not have: {unknown}; its categories "
                            f"are {self.names}")
        self.sites = [self.site] + sorted({s for s in where.values() if s != self.site})
        self.site_index = torch.tensor([self.sites.index(where.get(n, self.site)) for n in self.names])
        self.bias_matrix = None
        if self.bias is not None:
            biases = {**(self.site_biases or {}), self.site: self.bias}
            missing = [s for s in self.sites if s not in biases]
            if missing:
                raise LensError(f"categories steer at {missing} but the bias is only given at "
                                f"{sorted(biases)}; pass site_biases with the bias at each of those sites")
            self.bias_matrix = torch.stack([biases[s].float() for s in self.sites])

    def check(self, d_model: int) -> None:
        if self.matrix.shape[1] != d_model:
            raise LensError(f"category vectors have width {self.matrix.shape[1]}, the models {d_model}")


#: the kinds of random draw, each with its own stream (the fourth number of a draw's seed)
DRAW_KINDS = {"random_category": 1, "random_vector_per_step": 2, "random_guardrail": 3}


def draw_seed(seed: int, row: int, step: int, kind: str) -> int:
    """The seed of one row's draw of `kind` at `step` (a hash of the four numbers, 63 bits)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(row), int(step), DRAW_KINDS[kind]])
    return int(state.generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def draw_rows(rows: Sequence[int] | None, n: int) -> tuple[int, ...]:
    """The prompt index of each of n rows, seeding its random draws (default 0..n-1)."""
    if rows is None:
        return tuple(range(n))
    rows = tuple(int(r) for r in rows)
    if len(rows) != n:
        raise LensError(f"{len(rows)} row indices for {n} prompts")
    return rows


@dataclass(frozen=True)
class Draws:
    """The hybrid's random draws at one step: row i's from its own generator, seeded by
    (seed, rows[i], step, kind) (`draw_seed`), never by the batch it sits in."""

    seed: int
    rows: tuple[int, ...]
    step: int

    @classmethod
    def at(cls, seed: int, rows: Sequence[int], step: int) -> Draws:
        return cls(int(seed), tuple(int(r) for r in rows), int(step))

    def _gen(self, row: int, kind: str) -> torch.Generator:
        return torch.Generator().manual_seed(draw_seed(self.seed, row, self.step, kind))

    def ints(self, kind: str, high: int) -> torch.Tensor:
        """One integer in [0, high) per row ([rows], long)."""
        return torch.tensor([int(torch.randint(high, (1,), generator=self._gen(r, kind))) for r in self.rows],
                            dtype=torch.long)

    def normal(self, kind: str, width: int) -> torch.Tensor:
        """One standard Gaussian vector of `width` per row ([rows, width], float32)."""
        if not self.rows:
            return torch.zeros(0, width)
        return torch.stack([torch.randn(width, generator=self._gen(r, kind)) for r in self.rows])
