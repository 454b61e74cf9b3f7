"""Log-likelihood of a continuation under a model, given a context.

Use: is the thinking model's output already likely under the base model? Score the thinking
model's completions (as text or as its exact token ids) under both models.

Tokenization: the context is encoded with special tokens (e.g. ``<bos>``), the continuation
without, and the two id lists are concatenated, so the scored tokens are exactly the
continuation's own encoding (or the ids given). Rows are right-padded: every real token keeps the
position it has alone, and the attention mask hides the padding. Log-probabilities are natural
logs (nats).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..batching import pad_id, pad_rows
from ..errors import LensError


@dataclass
class Likelihood:
    """Log-likelihood of one continuation: ``sum`` and ``mean`` per token of ``token_logprobs``."""

    sum: float
    mean: float
    n_tokens: int
    token_logprobs: Float[Tensor, " n_tokens"]


def _ids(tokenizer: Any, x: str | Sequence[int], special: bool) -> list[int]:
    if isinstance(x, str):
        from ..batching import adds_special_tokens  # a chat-templated context already has its BOS

        return list(tokenizer(x, add_special_tokens=special and adds_special_tokens(tokenizer, x))["input_ids"])
    return [int(t) for t in x]


def continuation_logprobs(
    model: Any,
    contexts: Sequence[str | Sequence[int]],
    continuations: Sequence[str | Sequence[int]],
    *,
    batch_size: int = 16,
    add_special_tokens: bool = True,
) -> list[Likelihood]:
    """log p(continuation | context) for each pair, token by token, batched and padding-aware.

    contexts / continuations: strings or token-id lists, one per row. A context may be empty only
    if the tokenizer adds a BOS token (the first scored token needs a previous position).
    """
    if isinstance(contexts, str) or isinstance(continuations, str):
        raise LensError("contexts and continuations must be lists (one entry per row), not single strings")
    if len(contexts) != len(continuations):
        raise LensError(f"{len(contexts)} contexts but {len(continuations)} continuations: give one of each per row")
    tok = model.tokenizer
    rows = []
    for i, (ctx, cont) in enumerate(zip(contexts, continuations, strict=True)):
        a = _ids(tok, ctx, add_special_tokens)
        b = _ids(tok, cont, False)
        if not a:
            raise LensError(f"row {i}: the context is empty and the tokenizer added no BOS; give a context")
        rows.append((a, b))
    pad = pad_id(tok)
    out: list[Likelihood] = []
    model.hf.eval()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        ids, mask = pad_rows([a + b for a, b in chunk], pad, "right")
        with torch.no_grad():
            logits = model.hf(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
        for r, (a, b) in enumerate(chunk):
            if not b:
                out.append(Likelihood(0.0, float("nan"), 0, torch.zeros(0)))
                continue
            pos = torch.arange(len(a) - 1, len(a) + len(b) - 1, device=logits.device)
            lp = logits[r, pos].float().log_softmax(-1)
            target = torch.tensor(b, device=logits.device)
            token_lp = lp.gather(-1, target[:, None])[:, 0].cpu()
            out.append(Likelihood(float(token_lp.sum()), float(token_lp.mean()), len(b), token_lp))
    return out
