"""Compile intervention specs to TransformerLens hooks (HookedTransformer or TransformerBridge).

`transformer_lens_hooks(interventions, prompt_len)` returns `fwd_hooks` for `model.hooks(...)`.
TransformerLens hooks are told neither the step nor the absolute position, so the returned
hooks track them: a call with more than one token is a prompt pass (positions 0..T-1), a call
with one token is the next generated position. Unpadded batches only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...sites import Site
from ..ops import apply_op
from ..spec import Intervention
from .positions import slots


class _Tracker:
    def __init__(self, prompt_len: int):
        self.prompt_len = prompt_len
        self.positions = torch.arange(0)

    def see(self, act: torch.Tensor, hook=None) -> torch.Tensor:
        t = act.shape[1]
        if t > 1:
            self.positions = torch.arange(t)
        else:
            self.positions = self.positions[-1:] + 1
        return act


def transformer_lens_hooks(interventions: list[Intervention], prompt_len: int) -> list[tuple[str, Callable]]:
    """`fwd_hooks` applying the interventions at their absolute positions (first hook tracks positions)."""
    tracker = _Tracker(prompt_len)
    hooks: list[tuple[str, Callable]] = [("blocks.0.hook_resid_pre", tracker.see)]
    for iv in interventions:
        site = Site.parse(iv.site).name

        def fn(act: torch.Tensor, hook=None, iv: Intervention = iv) -> torch.Tensor:
            idx = slots(iv, tracker.positions, tracker.prompt_len)
            if not idx:
                return act
            act = act.clone()
            i = torch.tensor(idx, device=act.device)
            act[:, i] = apply_op(iv.op, act[:, i], iv.vector.to(act.device, act.dtype), iv.scale)
            return act

        hooks.append((site, fn))
    return hooks
