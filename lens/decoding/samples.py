"""What a `lens.generate` call returns: `Sample` (one completion) and `Generation` (all of a call's samples)."""

from __future__ import annotations

from dataclasses import dataclass, field

from jaxtyping import Float
from torch import Tensor

from ..errors import LensError


@dataclass
class Sample:
    """One completion.

    text: the completion only (prompt excluded), special tokens dropped; when a stop string ended
        it, the text ends right after the stop string.
    token_ids: generated ids, up to and including the token that ended the sample (an EOS id, or
        the token that completed a stop string); no padding.
    n_new_tokens: ``len(token_ids)``.
    finish_reason: ``"eos"``, ``"stop"`` (a stop string) or ``"length"`` (``max_new_tokens`` hit).
    top2: with ``return_top2``, ``[n_new_tokens, 2]``: p(top-1) and p(top-2) of the model's
        distribution (softmax of the raw logits, temperature 1) at each generated position.
    """

    prompt_index: int
    sample_index: int
    text: str
    token_ids: list[int]
    n_new_tokens: int
    finish_reason: str
    top2: Float[Tensor, "n_new 2"] | None = None

    @property
    def margins(self) -> Float[Tensor, " n_new"]:
        """p(top-1) - p(top-2) at each generated position (needs ``return_top2``)."""
        if self.top2 is None:
            raise LensError("this sample has no top-2 probabilities: generate(..., return_top2=True)")
        return self.top2[:, 0] - self.top2[:, 1]


@dataclass
class Generation:
    """All samples of one ``generate`` call, prompt-major: sample ``j`` of prompt ``i`` is ``samples[i*n + j]``."""

    samples: list[Sample]
    n_prompts: int
    n: int
    prompt_lengths: list[int] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    prompt_ids: list[list[int]] = field(default_factory=list)

    def sequences(self) -> list[dict]:
        """Every sample as the exact token ids the model read and wrote (prompt ids + generated ids),
        ready for `lens.capture_memory` (no decode/re-encode round trip), with its prompt and sample index."""
        if len(self.prompt_ids) != self.n_prompts:
            raise LensError("this Generation does not hold its prompt ids (made by an older lens)")
        return [{"input_ids": self.prompt_ids[s.prompt_index] + list(s.token_ids), "prompt_index": s.prompt_index,
                 "sample_index": s.sample_index, "prompt_length": self.prompt_lengths[s.prompt_index]}
                for s in self.samples]

    def by_prompt(self) -> list[list[Sample]]:
        """``[prompt][sample]``."""
        return [self.samples[i * self.n : (i + 1) * self.n] for i in range(self.n_prompts)]

    def texts(self) -> list[list[str]]:
        """Completion texts, ``[prompt][sample]``."""
        return [[s.text for s in row] for row in self.by_prompt()]

    @property
    def tokens_used(self) -> list[int]:
        """New tokens of every sample, in ``samples`` order."""
        return [s.n_new_tokens for s in self.samples]
