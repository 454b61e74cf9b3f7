"""Run intervention specs through nnsight: `generate_nnsight(lm, model, interventions, ...)`.

The same spec (site, op, vector, scale, positions) becomes edits of `layer.output` inside an
nnsight generation trace, step by step; pass `remote=True` to run it on NDIF for models too large
to host (the trace is the same; only where it executes changes).
"""

from __future__ import annotations

import torch
from jaxtyping import Int

from ...errors import LensError
from ...families import family_of
from ...models import Model
from ...sites import Site
from ..spec import Intervention
from .positions import apply_op, call_positions, slots


def _envoy(lm, model: Model, site: str):
    s = Site.parse(site)
    fam = family_of(model.family)
    obj = lm
    for part in fam.layers.split("."):
        obj = getattr(obj, part)
    layer = obj[s.layer]
    if s.kind == "hook_resid_post":
        return layer, "output"
    if s.kind == "hook_resid_pre":
        return layer, "input"
    sub = fam.attn_out if s.kind == "hook_attn_out" else fam.mlp_out
    for part in sub.split("."):
        layer = getattr(layer, part)
    return layer, "output"


def generate_nnsight(
    lm,
    model: Model,
    interventions: list[Intervention],
    input_ids: Int[torch.Tensor, "batch prompt"],
    max_new_tokens: int,
    remote: bool = False,
    **generate_kwargs,
) -> Int[torch.Tensor, "batch total"]:
    """Greedy generation under `interventions` through nnsight; returns the full sequences.

    lm: an `nnsight.LanguageModel` wrapping the same weights as `model` (lens uses `model` only for
    its family layout and width). input_ids: an unpadded batch (all prompts of equal length).
    """
    for iv in interventions:
        iv.check(model)
    plen = int(input_ids.shape[1])
    plan = []  # (step, envoy, where, slot index tensor, intervention)
    for step in range(max_new_tokens):
        pos = call_positions(step, plen, plen if step == 0 else 1)
        for iv in interventions:
            idx = slots(iv, pos, plen)
            if idx:
                env, attr = _envoy(lm, model, iv.site)
                plan.append((step, env, attr, torch.tensor(idx), iv))
    if any(attr == "input" for _, _, attr, _, _ in plan):
        raise LensError("the nnsight backend edits outputs; express resid_pre L as resid_post L-1")
    with lm.generate(input_ids, max_new_tokens=max_new_tokens, do_sample=False, remote=remote,
                     **generate_kwargs) as tracer:
        for step in tracer.iter[:max_new_tokens]:
            for s, env, _attr, idx, iv in plan:
                if s == step:
                    out = env.output
                    hidden = out[0] if isinstance(out, tuple) else out
                    hidden[:, idx] = apply_op(iv, hidden[:, idx], iv.vector.to(hidden.device, hidden.dtype))
        result = tracer.result.save()
    return result
