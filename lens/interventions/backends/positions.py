"""Slot selection shared by the backends: which slots of a call an intervention touches."""

from __future__ import annotations

import torch

from ...errors import LensError
from ..spec import Intervention


def call_positions(step: int, prompt_len: int, t: int) -> torch.Tensor:
    """Absolute positions of a call's T slots: step 0 is the prompt pass, step s >= 1 one new token."""
    return torch.arange(t) if step == 0 else torch.tensor([prompt_len + step - 1])


def slots(iv: Intervention, positions: torch.Tensor, prompt_len: int) -> list[int]:
    """Indices into the call's slots that `iv` touches (same for every row: unpadded batches only)."""
    if iv.where.kind == "gate":
        raise LensError("gated interventions run on the lens engine only (lens.interventions.steer)")
    if iv.vector.dim() != 1:
        raise LensError("per-example and per-position vectors run on the lens engine only (lens.steer)")
    mask = iv.where.mask(positions[None], torch.tensor([prompt_len]))[0]
    return mask.nonzero().flatten().tolist()
