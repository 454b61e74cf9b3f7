"""Tokenising batches with padding, and the absolute positions of every padded slot.

Absolute position = index of the token in its own unpadded sequence (0 = first token). With
left padding a row's tokens sit at slots pad..T-1, with right padding at 0..len-1; `position_ids`
are passed explicitly so that padded rows compute exactly what unpadded rows compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Int

from .errors import LensError
from .models import Model


@dataclass
class Batch:
    """A padded batch: ids, mask, position ids, offsets, and each row's pad count and length."""

    input_ids: Int[torch.Tensor, "batch seq"]
    attention_mask: Int[torch.Tensor, "batch seq"]
    position_ids: Int[torch.Tensor, "batch seq"]
    offsets: list[list[tuple[int, int]]]  # per row, unpadded ((0, 0) for token-id rows; [] if not asked)
    lengths: list[int]
    pads: list[int]  # slots before a row's first token (left padding), else 0
    side: str

    def slot(self, row: int, position: int) -> int:
        """The padded slot that holds absolute `position` of `row`."""
        return self.pads[row] + position


def positions_from_mask(mask: Int[torch.Tensor, "batch seq"]) -> Int[torch.Tensor, "batch seq"]:
    """Absolute positions of each slot: cumulative count of real tokens - 1 (pads get 0)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def encode(model: Model, texts: list[str], side: str = "right", max_length: int | None = None,
           offsets: bool = True) -> Batch:
    """Tokenise `texts` (special tokens added as the tokenizer does) into a padded Batch.

    offsets=False skips the character offsets (Batch.offsets is then empty) for callers that only
    count tokens.
    """
    tok = model.tokenizer
    enc = tok(texts, add_special_tokens=True, return_offsets_mapping=offsets, truncation=max_length is not None,
              max_length=max_length)
    offs = [[tuple(o) for o in row] for row in enc["offset_mapping"]] if offsets else []
    return pad(model, enc["input_ids"], offs, side)


def encode_mixed(model: Model, items: list[str | tuple[int, ...]], side: str = "right",
                 offsets: bool = True) -> Batch:
    """A padded Batch from texts (tokenised, special tokens added) and token-id tuples (taken as given).

    Token-id rows get offsets of (0, 0) per token (no text); ids outside the vocabulary raise.
    """
    texts = [(i, x) for i, x in enumerate(items) if isinstance(x, str)]
    if len(texts) == len(items):
        return encode(model, [x for _, x in texts], side, offsets=offsets)
    ids: list = list(items)
    offs: list = [[(0, 0)] * len(x) if not isinstance(x, str) else None for x in items]
    if texts:
        enc = encode(model, [x for _, x in texts], side, offsets=offsets)
        for k, (i, _) in enumerate(texts):
            ids[i] = enc.input_ids[k, enc.pads[k]:enc.pads[k] + enc.lengths[k]].tolist()
            offs[i] = enc.offsets[k] if offsets else None
    vocab = model.vocab_size
    for i, row in enumerate(ids):
        if max(row) >= vocab:
            raise LensError(f"input {i}: token id {max(row)} is outside the model's vocabulary of {vocab}; "
                            "were these ids made by another tokenizer?")
    return pad(model, ids, offs if offsets else [], side)


def pad(model: Model, ids: list, offsets: list, side: str) -> Batch:
    """Pad rows of token ids into a Batch (pad token, mask, absolute positions)."""
    tok = model.tokenizer
    lengths = [len(r) for r in ids]
    width = max(lengths)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    n = torch.tensor(lengths)[:, None]
    slots = torch.arange(width)[None, :]
    mask = (slots >= width - n) if side == "left" else (slots < n)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    input_ids[mask] = torch.tensor([t for row in ids for t in row], dtype=torch.long)  # row-major = token order
    pads = [width - k for k in lengths] if side == "left" else [0] * len(ids)
    mask = mask.long()
    return Batch(input_ids, mask, positions_from_mask(mask), offsets, lengths, pads, side)
