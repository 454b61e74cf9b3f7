"""Tokenising batches with padding, and the absolute positions of every padded slot.

Absolute position = index of the token in its own unpadded sequence (0 = first token). With
left padding a row's tokens sit at slots pad..T-1, with right padding at 0..len-1; `position_ids`
are passed explicitly so that padded rows compute exactly what unpadded rows compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Int

from .models import Model


@dataclass
class Batch:
    """A padded batch: ids, mask, position ids, offsets, and each row's pad count and length."""

    input_ids: Int[torch.Tensor, "batch seq"]
    attention_mask: Int[torch.Tensor, "batch seq"]
    position_ids: Int[torch.Tensor, "batch seq"]
    offsets: list[list[tuple[int, int]]]  # per row, unpadded
    lengths: list[int]
    pads: list[int]  # slots before a row's first token (left padding), else 0
    side: str

    def slot(self, row: int, position: int) -> int:
        """The padded slot that holds absolute `position` of `row`."""
        return self.pads[row] + position


def positions_from_mask(mask: Int[torch.Tensor, "batch seq"]) -> Int[torch.Tensor, "batch seq"]:
    """Absolute positions of each slot: cumulative count of real tokens - 1 (pads get 0)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def encode(model: Model, texts: list[str], side: str = "right", max_length: int | None = None) -> Batch:
    """Tokenise `texts` (special tokens added as the tokenizer does) into a padded Batch."""
    tok = model.tokenizer
    enc = tok(texts, add_special_tokens=True, return_offsets_mapping=True, truncation=max_length is not None,
              max_length=max_length)
    ids = enc["input_ids"]
    lengths = [len(r) for r in ids]
    width = max(lengths)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    pads = []
    for i, row in enumerate(ids):
        start = width - len(row) if side == "left" else 0
        input_ids[i, start : start + len(row)] = torch.tensor(row)
        mask[i, start : start + len(row)] = 1
        pads.append(start)
    offsets = [[tuple(o) for o in row] for row in enc["offset_mapping"]]
    return Batch(input_ids, mask, positions_from_mask(mask), offsets, lengths, pads, side)
