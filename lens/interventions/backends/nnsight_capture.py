"""Capture through nnsight: `capture_nnsight(lm, model, inputs, sites, select)` returns what `lens.capture` returns.

Each batch is tokenised, left-padded and selected by lens's capture loop (`lens.capture_memory.capture_parts`:
the same examples, groups, positions and metadata); only the forward pass runs in an nnsight trace, which saves each
site's hidden states (input of the layer for resid_pre, output otherwise) and stops after the deepest one. The
attention mask and position ids go in with the ids, so a padded row computes what it computes alone.
``remote=True`` is passed to nnsight's trace (NDIF); remote execution is not tested here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ...batching import Batch
from ...capture_memory import Activations, Forward, ProgressBar, _warn_outliers, capture_args, capture_parts
from ...errors import LensError
from ...models import Model
from ...selection import AllTokens, Example, Selection, to_examples
from ...sites import Site
from .nnsight_backend import envoy, language_model, site_order


def nnsight_forward(lm: Any, model: Model, sites: Iterable[str | Site], remote: bool = False) -> Forward:
    """A batch forward for `capture_batch` / `lens.capture_to_disk(..., forward=)` that runs through nnsight.

    It traces `lm` on the batch's ids, attention mask and position ids, saves every site and hands each
    to ``state["read"]``; the trace stops after the deepest site (nothing later is computed).
    """
    names = sorted({Site.parse(s).name for s in sites}, key=site_order)
    targets = [envoy(lm, model, name) for name in names]

    def forward(state: dict, model: Model, batch: Batch) -> None:
        saved = []
        with torch.no_grad(), lm.trace(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                       position_ids=batch.position_ids, use_cache=False, remote=remote) as tracer:
            for env, attr in targets:
                out = env.output if attr == "output" else env.input
                saved.append((out[0] if isinstance(out, tuple) else out).save())
            tracer.stop()
        for name, hidden in zip(names, saved, strict=True):
            state["read"](name, hidden)
        return None

    forward.backend = "nnsight-remote" if remote else "nnsight"  # recorded per shard by capture_to_disk
    return forward


def capture_nnsight(
    lm: Any,
    model: Model,
    inputs: Iterable[str | dict | Example | list[int] | torch.Tensor],
    sites: Iterable[str | Site] | str | Site,
    select: Selection | str = AllTokens(),
    *,
    batch_size: int = 8,
    dtype: torch.dtype | str = torch.float32,
    remote: bool = False,
    too_long: str = "error",
) -> Activations:
    """`lens.capture(model, inputs, sites, select)` with the forward passes run by nnsight.

    lm: an nnsight `TransformersModel` / `LanguageModel` over `model`'s weights (None: `language_model(model)`).
    The result has the same rows (to float tolerance), example numbers, positions, token ids and labels as
    `lens.capture` for the same inputs, sites and selection. Batches are left-padded, as nnsight pads.
    remote: passed to nnsight's trace (NDIF runs the forward); a pass-through, not tested here.
    """
    site_list, select, dtype = capture_args(model, sites, select, batch_size, dtype, too_long)
    fwd = nnsight_forward(language_model(model) if lm is None else lm, model, site_list, remote)
    parts = [part for part, _ in capture_parts(model, to_examples(inputs), site_list, select, batch_size=batch_size,
                                               dtype=dtype, side="left", bar=ProgressBar(False, None),
                                               too_long=too_long, forward=fwd)]
    if not parts:
        raise LensError("no inputs to capture; the input list or file is empty")
    _warn_outliers(parts)
    return Activations.concat(parts)
