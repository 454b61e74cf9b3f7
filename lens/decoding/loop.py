"""lens's own KV-cached decoding loop: the steps of Hugging Face's greedy `generate`, without its set-up.

`decode_loop` runs one prefill forward and then one forward per new token, passing the model exactly
what `generate` passes it (transformers 5): ``input_ids`` (the newest token), ``position_ids``
(``cumsum(attention_mask) - 1``, 0 at pads), the attention mask
(dropped when nothing is padded, as `generate` drops it), the KV cache, and ``logits_to_keep=1`` at
the prefill (a one-token step has one position's logits anyway). Per
step it hands float32 logits to the logits processor, takes the argmax, writes ``pad_id`` into rows
that already ended, and ends a row at an EOS id or when the stopping criterion says so. Tokens
therefore equal `generate`'s for the same processor and criterion (tested per family, padded batches,
with and without steering), and hooks on the model (e.g. `lens.steer`) see ordinary forward calls.

What it leaves out is what `generate` spends per call and per step on configuration, input checks and
model-kwarg bookkeeping, 100-160 us per step on the tiny CPU model: there lens's steered generation
runs 1.03-1.07x plain `generate` (docs/benchmarks.md); on SmolLM2 the saving is within noise.
``generate(..., backend="hf")`` still runs Hugging Face's loop.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

Processor = Callable[[Tensor, Tensor], Tensor]
Criterion = Callable[[Tensor, Tensor], Tensor]


@functools.lru_cache(maxsize=32)
def forward_kwargs(forward_class: type) -> tuple[str, bool]:
    """(the forward's cache argument: ``cache`` in transformers >= 5, ``past_key_values`` before;
    whether it takes ``logits_to_keep``)."""
    params = inspect.signature(forward_class.forward).parameters
    return ("cache" if "cache" in params else "past_key_values"), "logits_to_keep" in params


def returned_cache(out: object) -> object:
    """The KV cache a forward returned (``cache`` in transformers >= 5, ``past_key_values`` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values  # type: ignore[attr-defined]


@torch.no_grad()
def decode_loop(
    hf: torch.nn.Module,
    ids: Int[Tensor, "batch prompt"],
    mask: Int[Tensor, "batch prompt"],
    max_new_tokens: int,
    pad_id: int,
    eos: Sequence[int],
    processor: Processor | None = None,
    stop: Criterion | None = None,
    check_every: int | None = None,
) -> Int[Tensor, "batch new"]:
    """Greedy decoding of left-padded ``ids`` with the KV cache; returns the new tokens (``pad_id`` after
    a row ended; at most ``max_new_tokens`` columns, fewer when every row ended earlier).

    processor(ids so far, float32 logits [batch, vocab]) -> scores whose argmax is the token (e.g. a
    sampler that returns -inf except at its draw); stop(ids including the new token, scores) -> [batch]
    bool, rows that end now. Every row's new token k is at absolute position (its prompt length) + k.
    check_every: steps between host reads of "has every row ended" (default 1 on the CPU, 8 on
        accelerators, where each read waits for the device); between reads ended rows get pads, so the
        tokens are the same, but up to check_every - 1 extra forwards of pads can run (and steering hooks
        see them).
    """
    batch, width = ids.shape
    dev = ids.device
    cache_kw, keeps_logits = forward_kwargs(type(hf))
    pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    attn: Tensor | None = None if bool((mask == 1).all()) else mask
    extra = {"logits_to_keep": 1} if keeps_logits else {}
    buf = torch.full((batch, width + max_new_tokens), pad_id, dtype=ids.dtype, device=dev)
    buf[:, :width] = ids
    eos_t = torch.tensor(list(eos), dtype=ids.dtype, device=dev) if eos else None
    unfinished = torch.ones(batch, dtype=torch.bool, device=dev)
    if check_every is None:
        check_every = 1 if dev.type == "cpu" else 8
    out = hf(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, return_dict=True, **extra)
    cache = returned_cache(out)
    last = pos[:, -1:]
    n = max_new_tokens
    for k in range(max_new_tokens):
        # float32 copy on the inputs' device (under a device_map the head may sit on another)
        scores: Float[Tensor, "batch vocab"] = out.logits[:, -1].to(dev, torch.float32, copy=True)
        if processor is not None:
            scores = processor(buf[:, : width + k], scores)
        token = torch.where(unfinished, scores.argmax(-1), pad_id)
        buf[:, width + k] = token
        if eos_t is not None:
            unfinished &= ~torch.isin(token, eos_t)
        if stop is not None:
            unfinished &= ~stop(buf[:, : width + k + 1], scores).to(dev)
        if k == max_new_tokens - 1 or ((k + 1) % check_every == 0 and not bool(unfinished.any())):
            n = k + 1
            break
        if attn is not None:
            attn = torch.cat([attn, attn.new_ones(batch, 1)], dim=-1)
        last = last + 1
        out = hf(input_ids=token[:, None], attention_mask=attn, position_ids=last, use_cache=True, return_dict=True,
                 **{cache_kw: cache})
        cache = returned_cache(out)
    return buf[:, width : width + n]
