"""Activation rows straight from a model's forward passes, as a re-openable `RowSource` (no capture folder).

`model_source(model, inputs, site, select)` runs the model over `inputs` in batches of `batch_size`
(one read-only hook on `site`, the forward stopped after it, no gradient) and yields the selected rows
of each group of `lens.capture_memory.GROUP_BATCHES` batches as one chunk: the same rows, in the same
order, as `lens.capture_to_disk` with the same model, inputs, site, selection, batch size and dtype
writes to a folder. `shuffled_batches` mixes them through its bounded buffer exactly as it mixes a
folder's rows (its output depends on the row order only, not on chunk sizes), so training on the
stream equals training on that folder: same batches, same weights. Memory: one group of batches' rows
plus the shuffling buffer, however many inputs there are.

Each epoch of training runs the forwards again (the inputs are re-read), so the inputs must be
re-openable: a JSONL path, a list, or a function returning a fresh iterable. A resumed run replays the
stream up to the rows already consumed (forwards, no training steps) to rebuild the buffer exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from jaxtyping import Float

from lens.errors import LensError, check_number

from .buffer import RowSource


def _reopener(inputs) -> tuple[Callable[[], Iterable], str]:
    """(a function giving a fresh iterable of the inputs each call, what they are in words)."""
    if isinstance(inputs, (str, Path)):
        from lens.capture_folder import read_jsonl

        path = Path(inputs)
        return (lambda: read_jsonl(path)), f"inputs {path}"
    if callable(inputs):
        return inputs, "inputs from a function"
    if isinstance(inputs, (list, tuple)):
        return (lambda: iter(inputs)), f"{len(inputs)} inputs"
    raise LensError(f"streamed SAE training reads its inputs once per epoch, so they must be re-readable: give a "
                    f"JSONL path, a list, or a function returning the inputs (got {type(inputs).__name__})")


def _inputs_hash(reopen: Callable[[], Iterable]) -> str:
    """sha256 over the inputs as lens reads them (texts, prompt splits, spans, token ids)."""
    from lens.capture_memory import examples_hash
    from lens.selection import to_examples

    return examples_hash(to_examples(reopen())).hexdigest()


def model_source(model, inputs, site: str, select="all", *, batch_size: int = 8, dtype: torch.dtype = torch.float32,
                 too_long: str = "error") -> RowSource:
    """Rows of `site` at the tokens `select` picks, captured on the fly from `model` over `inputs`.

    inputs: a JSONL path, a list, or a function returning a fresh iterable (see module docstring);
    checked once here (their hash names the stream, so a resumed run on other inputs is refused).
    batch_size: inputs per forward pass. The description names the model's fingerprint, the selection,
    dtype and the inputs' hash: equal descriptions mean equal rows.
    """
    from lens.capture_memory import GROUP_BATCHES, ProgressBar, capture_parts, check_sites
    from lens.selection import parse_select, to_examples

    check_number("batch_size", batch_size, 1, integer=True)
    reopen, what = _reopener(inputs)
    (parsed,) = check_sites(model, [site])
    sel = parse_select(select)
    digest = _inputs_hash(reopen)
    if digest == hashlib.sha256().hexdigest():
        raise LensError(f"{what}: no inputs to stream; the input list or file is empty")

    def chunks() -> Iterator[Float[torch.Tensor, "rows d_in"]]:
        # the capture loop of lens.capture_to_disk, one group of batches at a time (bounded memory)
        for part, _ in capture_parts(model, to_examples(reopen()), [parsed], sel, batch_size=batch_size, dtype=dtype,
                                     side="right", bar=ProgressBar(False, None), too_long=too_long,
                                     every_group=batch_size * GROUP_BATCHES, pin=False):
            rows = part[parsed.name]
            if rows.shape[0]:
                yield rows

    desc = (f"model {model.spec} ({model.fingerprint}) on {what} (sha256 {digest[:16]}), select {sel.spec}, "
            f"batch {batch_size}, {str(dtype).removeprefix('torch.')}")
    return RowSource(chunks, int(model.d_model), None, desc, parsed.name, model.facts())


def head_rows(source: RowSource, n: int) -> Float[torch.Tensor, "rows d_in"]:
    """The first `n` rows of `source` (fewer when it has fewer), for evaluating on a stream."""
    out, seen = [], 0
    for chunk in source:
        out.append(chunk[: n - seen])
        seen += out[-1].shape[0]
        if seen >= n:
            break
    return torch.cat(out)
