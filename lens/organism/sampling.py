"""Batched generation for the organism (HF ``generate`` with the KV cache, left padding).

The small steering hook used by the organism's own evaluation also lives here
(:func:`first_position_steering`), kept in one function so that a general intervention engine
can replace it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

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
    batch's ``generate`` call (e.g. ``lambda: first_position_steering(model, layer, vec)``).
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
        ctx = hook() if hook is not None else _null()
        with torch.no_grad(), ctx:
            ids = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs)
        new = ids[:, enc["input_ids"].shape[1] :]
        out.extend(prefill + t for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    return out


@contextmanager
def _null() -> Iterator[None]:
    yield


def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder layers of a Llama/Qwen2-style HF causal LM."""
    return model.model.layers


@contextmanager
def first_position_steering(model, layer: int, vector: torch.Tensor) -> Iterator[None]:
    """Add ``vector`` to the output of decoder layer ``layer`` at ONE position per sequence.

    Convention (documented, exact): the vector is added on the *prompt pass* only (the first
    forward call of ``generate`` under the KV cache), at the *last prompt position*, i.e. the
    position whose output predicts the first generated token.  Later decode steps (sequence
    length 1) are untouched.  With left padding the last position is the last prompt token of
    every row.  The hook counts its calls rather than testing the sequence length, so a
    one-token prompt is still steered exactly once.  It is the engine's
    ``Intervention(f"blocks.{layer}.hook_resid_post", vector, where=Where.first_step())``, kept here so the
    organism package does not import the higher intervention layer; tests/test_interventions.py checks
    that the two generate identical tokens and logits.
    """
    calls = {"n": 0}

    def hook(_module, _inputs, output):
        calls["n"] += 1
        if calls["n"] != 1:
            return output
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        hidden[:, -1, :] += vector.to(hidden.dtype)
        if isinstance(output, tuple):
            return (hidden, *output[1:])
        return hidden

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def last_token_residuals(model, tokenizer, prompts: Sequence[str], layer: int, batch_size: int = 256) -> torch.Tensor:
    """Output of decoder layer ``layer`` at the last prompt token, one row per prompt."""
    rows: list[torch.Tensor] = []
    store: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        store["h"] = hidden[:, -1, :].detach()

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        model.eval()
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(list(prompts[i : i + batch_size]), return_tensors="pt", padding=True)
            mask = enc["attention_mask"]
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.no_grad():
                model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=position_ids)
            rows.append(store["h"])
    finally:
        handle.remove()
    return torch.cat(rows)
