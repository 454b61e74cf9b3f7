"""Data-parallel decoding: every rank decodes its share of the batches, then all ranks hold all samples.

Used by `generate(..., data_parallel=True)` and `cot_decode(..., data_parallel=True)` under a
launcher (`lens.distributed`). Samples travel as JSON (float32 probabilities as exact decimal
floats), so the gathered results equal a single process's bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ..distributed import Ranks, claimed, gather_indexed, sharing
from .samples import Sample


def my_batches(starts: list[int], flag: bool | None) -> tuple[Iterator[int], Ranks | None]:
    """(the batch starts this rank decodes, drawn as it goes (`lens.distributed.claimed`); its Ranks when the
    work is split, else None). Iterate the starts to the end on every rank.

    Split, the batches go out from the last: callers sort their rows by prompt length, so the costliest
    batches run first and the last ones, which decide when the slowest rank is done, are short."""
    r = sharing(flag)
    if r is None:
        return iter(starts), None
    return (starts[len(starts) - 1 - b] for b in claimed(len(starts), r)), r


def tensor_json(t: torch.Tensor | None) -> list | None:
    return None if t is None else t.tolist()


def tensor_back(v: list | None, width: int) -> torch.Tensor | None:
    """A float32 tensor from `tensor_json` (an empty list keeps its trailing `width`)."""
    if v is None:
        return None
    return torch.tensor(v, dtype=torch.float32) if v else torch.zeros((0, width) if width else (0,))


def gather_samples(results: dict[tuple[int, int], Any], per_prompt: int) -> dict[tuple[int, int], Any]:
    """Every rank's `{(prompt, sample): Sample}` merged on every rank (sample index < `per_prompt`)."""
    local = {i * per_prompt + j: [s.text, s.token_ids, s.n_new_tokens, s.finish_reason, tensor_json(s.top2)]
             for (i, j), s in results.items()}
    out = {}
    for key, (text, ids, n_new, reason, top2) in gather_indexed(local).items():
        i, j = divmod(key, per_prompt)
        out[(i, j)] = Sample(i, j, text, list(ids), n_new, reason, tensor_back(top2, 2))
    return out
