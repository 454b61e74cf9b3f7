"""Held-out measurements of a policy during RL: greedy accuracy, thinking-format rate, response
length and pass@k from seeded samples (each sample seeded by (seed, problem, sample), so a resumed or
repeated evaluation draws the same samples)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..evaluation.answers import NumericChecker, extract_answer
from ..evaluation.behaviours import ThinkingFormat
from ..evaluation.metrics import pass_at_k, powers_of_two


def evaluate_policy(model: Any, problems: Sequence[Mapping], *, samples: int = 8, max_new_tokens: int = 120,
                    temperature: float = 1.0, seed: int = 0, batch_size: int = 64, extractor: str = "auto",
                    fmt: ThinkingFormat | None = None) -> dict:
    """Greedy accuracy, thinking-format rate and mean new tokens on ``problems``; pass@k for k = 1..samples.

    model: a ``lens.Model``. The torch RNG state is left as it was (training is not perturbed).
    """
    from ..decoding import generate

    fmt = fmt or ThinkingFormat()
    check = NumericChecker()
    prompts = [p["prompt"] for p in problems]
    opened = [fmt.opened_by(p) for p in prompts]
    with torch.random.fork_rng(devices=[]):
        greedy = generate(model, prompts, max_new_tokens, greedy=True, batch_size=batch_size)
        texts = [row[0] for row in greedy.texts()]
        right = [check(extract_answer(t, extractor), p["answer"]) for t, p in zip(texts, problems, strict=True)]
        out = {
            "heldout_accuracy": sum(right) / len(problems),
            "thinking_rate": sum(fmt.in_format(t, o) for t, o in zip(texts, opened, strict=True)) / len(problems),
            "mean_tokens": sum(greedy.tokens_used) / len(problems),
            "n": len(problems),
        }
        if samples > 0:
            gen = generate(model, prompts, max_new_tokens, greedy=False, temperature=temperature, n=samples,
                           seed=seed, batch_size=batch_size)
            counts = [sum(check(extract_answer(t, extractor), p["answer"]) for t in row)
                      for row, p in zip(gen.texts(), problems, strict=True)]
            out["pass_at_k"] = {str(k): sum(pass_at_k(samples, c, k) for c in counts) / len(problems)
                                for k in powers_of_two(samples)}
            flat = [fmt.in_format(t, o) for row, o in zip(gen.texts(), opened, strict=True) for t in row]
            out["sample_thinking_rate"] = sum(flat) / len(flat)
    return out
