"""Batched generation for the organism (HF ``generate`` with the KV cache, left padding)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 120,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 256,
    prefill: str = "",
    hook: Callable[[], object] | None = None,
) -> list[str]:
    """Complete each prompt; returns the completions (``prefill`` included, special tokens dropped).

    ``temperature == 0`` is greedy; otherwise plain sampling (no top-k / top-p truncation), with
    ``torch.manual_seed(seed + batch_index)`` before each batch so results are reproducible.
    ``hook``, when given, is a zero-argument factory of a context manager entered around each
    batch's ``generate`` call (e.g. :func:`lens.organism.evaluate.first_step_steering`).
    """
    model.eval()
    out: list[str] = []
    texts = [p + prefill for p in prompts]
    for b, i in enumerate(range(0, len(texts), batch_size)):
        chunk = texts[i : i + batch_size]
        enc = tokenizer(chunk, return_tensors="pt", padding=True)
        kwargs: dict = dict(
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
        )
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        else:
            kwargs.update(do_sample=False)
        torch.manual_seed(seed + b)
        ctx = hook() if hook is not None else nullcontext()
        with torch.no_grad(), ctx:
            ids = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs)
        new = ids[:, enc["input_ids"].shape[1] :]
        out.extend(prefill + t for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    return out
