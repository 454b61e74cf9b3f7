"""`run`: one forward pass that returns the logits and the captured activations together."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from jaxtyping import Float

from .capture_memory import Activations, ProgressBar, _warn_outliers, capture_parts, check_sites
from .errors import LensError, check_number
from .models import Model
from .selection import Selection, parse_select, to_examples
from .sites import Site


def run(
    model: Model,
    inputs: Iterable,
    sites: Iterable[str | Site] | str | Site,
    select: Selection | str = "all",
    *,
    batch_size: int = 8,
    dtype: torch.dtype = torch.float32,
    too_long: str = "error",
) -> tuple[list[Float[torch.Tensor, "tokens vocab"]], Activations]:
    """(logits per input [tokens, vocab], unpadded, float32 on the CPU; the `Activations` of `sites` at the
    tokens `select` picks) from ONE forward per batch, like TransformerLens's `run_with_cache`.

    Inputs, sites and selections are those of `lens.capture`, which returns the same rows (it stops each
    forward after the deepest site; this one runs to the logits); it warns of outlier rows as capture does.
    """
    check_number("batch_size", batch_size, 1, integer=True)
    site_list = check_sites(model, sites)
    sel = parse_select(select)
    logits: list[torch.Tensor] = []
    parts = [part for part, _ in capture_parts(model, to_examples(inputs), site_list, sel, batch_size=batch_size,
                                               dtype=dtype, side="right", bar=ProgressBar(False, None),
                                               too_long=too_long, logits=logits)]
    if not parts:
        raise LensError("no inputs to run; the input list or file is empty")
    _warn_outliers(parts)
    return logits, Activations.concat(parts)
