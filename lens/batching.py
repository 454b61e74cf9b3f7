"""Tokenising batches with padding, and the absolute positions of every padded slot.

Absolute position = index of the token in its own unpadded sequence (0 = first token). With
left padding a row's tokens sit at slots pad..T-1, with right padding at 0..len-1; `position_ids`
are passed explicitly so that padded rows compute exactly what unpadded rows compute.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from jaxtyping import Int

from .errors import LensError

if TYPE_CHECKING:
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


def flat_ids(rows: list) -> Int[torch.Tensor, " tokens"]:
    """Every row's token ids, concatenated, as one long tensor (numpy's fromiter: 4x a list comprehension)."""
    n = sum(len(r) for r in rows)
    return torch.from_numpy(np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=n))


def positions_from_mask(mask: Int[torch.Tensor, "batch seq"]) -> Int[torch.Tensor, "batch seq"]:
    """Absolute positions of each slot: cumulative count of real tokens - 1 (pads get 0)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def adds_special_tokens(tokenizer, text: str) -> bool:
    """Whether `text` gets the tokenizer's special tokens when tokenised: not when it already starts
    with the tokenizer's BOS text (a chat template's output, e.g. R1's ``<｜begin▁of▁sentence｜><｜User｜>...``,
    or Llama-3's ``<|begin_of_text|>...``), which would otherwise start with two BOS. HF's chat
    pipeline does the same: text from ``apply_chat_template`` is encoded with ``add_special_tokens=False``."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (isinstance(bos, str) and bos and text.startswith(bos))


def tokenize(tokenizer, texts: list[str], *, add_special_tokens: bool = True, **kwargs) -> dict:
    """``tokenizer(texts, ...)`` as a dict of per-text lists (``input_ids``, ``offset_mapping`` if asked),
    with special tokens added only to texts that do not already start with the BOS text
    (`adds_special_tokens`); ``add_special_tokens=False`` adds them to none."""
    texts = list(texts)
    want = [add_special_tokens and adds_special_tokens(tokenizer, t) for t in texts]
    out: dict = {}
    for flag in (True, False):
        idx = [i for i, w in enumerate(want) if w is flag]
        if not idx:
            continue
        enc = tokenizer([texts[i] for i in idx], add_special_tokens=flag, **kwargs)
        for key in ("input_ids", "offset_mapping"):
            if key in enc:
                col = out.setdefault(key, [None] * len(texts))
                for k, i in enumerate(idx):
                    col[i] = list(enc[key][k])
    return out


def encode(model: Model, texts: list[str], side: str = "right", max_length: int | None = None) -> Batch:
    """Tokenise `texts` into a padded Batch (special tokens added as the tokenizer does, except to texts
    that already start with its BOS text: see `adds_special_tokens`)."""
    enc = tokenize(model.tokenizer, texts, return_offsets_mapping=True, truncation=max_length is not None,
                   max_length=max_length)
    return pad(model, enc["input_ids"], [[tuple(o) for o in row] for row in enc["offset_mapping"]], side)


def encode_mixed(model: Model, items: list[str | tuple[int, ...]], side: str = "right",
                 offsets: bool = True) -> Batch:
    """A padded Batch from texts (tokenised, special tokens added) and token-id tuples (taken as given)."""
    return pad(model, *token_rows(model, items, offsets), side)


def token_rows(model: Model, items: list[str | tuple[int, ...]], offsets: bool = True) -> tuple[list, list]:
    """(token ids per item, character offsets per item or [] if not asked): texts are tokenised with
    special tokens added (not to a text that already starts with the BOS text: `adds_special_tokens`);
    token-id items are kept as given, with (0, 0) offsets (no text)."""
    texts = [i for i, x in enumerate(items) if isinstance(x, str)]
    ids: list = list(items)
    offs: list = [[(0, 0)] * len(x) if not isinstance(x, str) else None for x in items] if offsets else []
    if texts:
        enc = tokenize(model.tokenizer, [items[i] for i in texts], return_offsets_mapping=offsets)
        for k, i in enumerate(texts):
            ids[i] = enc["input_ids"][k]
            if offsets:
                offs[i] = [tuple(o) for o in enc["offset_mapping"][k]]
    return ids, offs


TOO_LONG = ("error", "truncate")


def context_length(model: Model) -> int | None:
    """The most positions the model reads: its config's `max_position_embeddings` (GPT-2: `n_positions`);
    None when the config names neither."""
    cfg = model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def fit_context(model: Model, ids: list, offsets: list, too_long: str, first_index: int = 0) -> None:
    """Check rows of token ids against the model's context, in place.

    A row longer than `context_length(model)` raises a LensError naming the input (`first_index` + row)
    and both lengths (too_long="error"), or is cut to its first tokens, its offsets with it ("truncate").
    """
    if too_long not in TOO_LONG:
        raise LensError(f"too_long must be one of {', '.join(TOO_LONG)}, got {too_long!r}")
    limit = context_length(model)
    if limit is None:
        return
    cut = []
    for i, row in enumerate(ids):
        if len(row) <= limit:
            continue
        if too_long == "error":
            raise LensError(f"input {first_index + i} is {len(row)} tokens long, more than the {limit} positions "
                            f"{model.spec} reads; shorten it, or cut long inputs to their first {limit} tokens "
                            "(--too-long truncate; too_long=\"truncate\" in Python)")
        cut.append(f"{first_index + i} ({len(row)} tokens)")
        ids[i] = ids[i][:limit]
        if offsets:
            offsets[i] = offsets[i][:limit]
    if cut:
        import warnings

        warnings.warn(f"truncated to the first {limit} tokens that {model.spec} reads: input(s) {', '.join(cut[:10])}"
                      + (f" and {len(cut) - 10} more" if len(cut) > 10 else ""), stacklevel=3)


def pad_id(tokenizer) -> int:
    """The id lens pads with: the tokenizer's pad token, else its EOS (as `Model` sets it), else 0 (a padded
    slot is masked or never read, so any id in the vocabulary gives the same real-token results)."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return 0


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, side: str = "right", device: torch.device | str = "cpu",
             ) -> tuple[Int[torch.Tensor, "batch seq"], Int[torch.Tensor, "batch seq"]]:
    """Rows of token ids padded on `side` to the longest: (input_ids with `pad_id` in pad slots,
    attention_mask with 1 on real tokens), on `device`."""
    lengths = [len(r) for r in rows]
    width = max(lengths)
    n = torch.tensor(lengths)[:, None]
    slots = torch.arange(width)[None, :]
    real = (slots >= width - n) if side == "left" else (slots < n)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    input_ids[real] = flat_ids(rows)  # row-major order of the mask = token order
    return input_ids.to(device), real.long().to(device)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu",
             ) -> tuple[Int[torch.Tensor, "batch seq"], Int[torch.Tensor, "batch seq"]]:
    """`pad_rows` on the left, as generation feeds Hugging Face's ``generate``."""
    return pad_rows(rows, pad_id, "left", device)


def pad(model: Model, ids: list, offsets: list, side: str) -> Batch:
    """Pad rows of token ids into a Batch (pad token, mask, absolute positions); ids outside the
    vocabulary raise."""
    tok = model.tokenizer
    lengths = [len(r) for r in ids]
    width = max(lengths)
    input_ids, mask = pad_rows(ids, pad_id(tok), side)
    flat = input_ids[mask.bool()]
    vocab = model.vocab_size
    if flat.numel() and int(flat.max()) >= vocab:
        bad = int(torch.searchsorted(torch.tensor(lengths).cumsum(0), int((flat >= vocab).nonzero()[0]), right=True))
        raise LensError(f"input {bad} of the batch: token id {int(flat.max())} is outside the model's vocabulary "
                        f"of {vocab}; were these ids made by another tokenizer?")
    pads = [width - k for k in lengths] if side == "left" else [0] * len(ids)
    return Batch(input_ids, mask, positions_from_mask(mask), offsets, lengths, pads, side)
