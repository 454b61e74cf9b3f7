"""The four intervention ops on hidden states: add, set, project_out, clamp.

`apply_op(op, hidden, vec, scale, mask)` is the one implementation every runner calls: the lens engine, the
nnsight backend (inside its trace) and the TransformerLens backend (on the slots it selected). It imports torch
only, so that nnsight can ship it by value to a remote (NDIF) trace.
"""

from __future__ import annotations

import torch


def apply_op(op: str, hidden: torch.Tensor, vec: torch.Tensor, scale: torch.Tensor | float = 1.0,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """`op` on hidden [..., d], out of place, on the slots `mask` [...] selects (None: on every slot).

    vec: [d] or broadcastable to hidden; scale: a float, or a tensor broadcastable to hidden's [..., 1].
    add: hidden + scale * vec. set: scale * vec. project_out: hidden less its component along vec.
    clamp: hidden with its component along vec set to scale. Slots the mask leaves out keep their values.
    """
    m = None if mask is None else mask[..., None].to(hidden.dtype)
    if op == "add":
        step = vec if isinstance(scale, float) and scale == 1.0 else scale * vec
        return hidden + step if m is None else hidden + m * step
    if op == "set":
        return (scale * vec).expand_as(hidden).clone() if m is None else hidden + m * (scale * vec - hidden)
    unit = vec / vec.norm(dim=-1, keepdim=True)
    proj = (hidden * unit).sum(-1, keepdim=True)
    if op == "project_out":
        return hidden - proj * unit if m is None else hidden - m * proj * unit
    return hidden + (scale - proj) * unit if m is None else hidden + m * (scale - proj) * unit
