"""Character spans of generated tokens inside their decoded text.

CoT-decoding needs to know which generated tokens carry the answer. An answer extractor returns a
character span of the completion text; these helpers map it to token positions. Two ways:

1. the tokenizer's offsets: re-encode the completion with ``return_offsets_mapping=True``; used when
   the re-encoding gives back exactly the generated ids (the usual case for greedy text);
2. otherwise, incremental decoding: token ``i`` covers
   ``[len(decode(ids[:i])), len(decode(ids[:i+1])))`` of ``decode(ids)``; exact for any tokenizer
   whose decode of a prefix is a prefix of the decode of the whole (byte-level BPE, WordPiece,
   character tokenizers), approximate only inside multi-token UTF-8 characters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    """Text of ``ids`` the way `lens` decodes completions (special tokens dropped, no clean-up)."""
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def token_char_spans(tokenizer: Any, ids: Sequence[int], text: str | None = None) -> list[tuple[int, int]]:
    """``(start, end)`` character span in ``decode(tokenizer, ids)`` of each token of ``ids``.

    Special tokens (dropped by decoding) get an empty span at their place.
    """
    ids = [int(i) for i in ids]
    if text is None:
        text = decode(tokenizer, ids)
    if not ids:
        return []
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        kept = [i for i in ids if i not in special]
        if list(enc["input_ids"]) == kept:
            offsets = iter(enc["offset_mapping"])
            spans: list[tuple[int, int]] = []
            last = 0
            for i in ids:
                if i in special:
                    spans.append((last, last))
                else:
                    s, e = next(offsets)
                    spans.append((int(s), int(e)))
                    last = int(e)
            return spans
    except (NotImplementedError, TypeError, KeyError):  # slow tokenizers have no offsets
        pass
    prefixes = [decode(tokenizer, ids[: j + 1]) for j in range(len(ids))]
    spans = []
    prev = 0
    for p in prefixes:
        end = max(prev, min(len(p), len(text)))
        spans.append((prev, end))
        prev = end
    return spans


def tokens_in_span(spans: Sequence[tuple[int, int]], start: int, end: int) -> list[int]:
    """Indices of the tokens whose non-empty character span overlaps ``[start, end)``."""
    return [i for i, (s, e) in enumerate(spans) if e > s and s < end and e > start]
