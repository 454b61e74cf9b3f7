"""Run intervention specs through nnsight: `generate_nnsight(lm, model, interventions, ids, n, attention_mask)`.

The same spec (site, op, vector, scale, where) becomes edits of a layer's input or output inside an nnsight
generation trace, step by step. Positions are lens's: on a left-padded batch, absolute position p of row b is
its p-th real token (pads are never touched) and Where counts from each row's own prompt length, exactly as
the engine (`lens.interventions.steer`) reads them from the position ids Hugging Face's ``generate`` passes.
Which slots each step touches is worked out here, before the trace; the trace body itself holds only the ops
(`lens.interventions.ops.apply_op`, which imports torch only and is shipped by value) on precomputed masks and
vectors, so the same body can run on NDIF (``remote=True``, a pass-through to nnsight, not tested here), with the
model built by `remote_model` (nnsight's meta build from the hub config: no weights here).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Bool, Float, Int

from ...capture_memory import KIND_ORDER
from ...errors import LensError
from ...models import Model
from ...sites import Site, site_path, walk
from .. import ops
from ..engine import _per_row
from ..ops import apply_op
from ..spec import Intervention

_NEVER_REACHED = ".*was never reached.*"  # nnsight's warning when generation ends before a planned step


def require_nnsight() -> None:
    """Raise a LensError naming the fix when nnsight (an optional dependency) is not installed."""
    import importlib.util

    if importlib.util.find_spec("nnsight") is None:
        raise LensError("the nnsight backend needs nnsight, an optional dependency: "
                        "pip install 'reasoning-lens[nnsight]'")


def language_model(model: Model) -> Any:
    """An nnsight `TransformersModel` over `model`'s own weights (no copy), with a copy of its tokenizer.

    nnsight sets its tokenizer to pad on the left; the copy keeps lens's tokenizer as it was.
    """
    require_nnsight()
    from nnsight.modeling.transformers import TransformersModel

    return TransformersModel(model.hf, task="text-generation", tokenizer=copy.deepcopy(model.tokenizer))


def remote_model(repo_id: str) -> tuple[Any, Model]:
    """(nnsight model, lens `Model`) for a run on NDIF: no weights are loaded here.

    nnsight's `TransformersModel(repo_id, task="text-generation")`, not dispatched, builds the module tree on the
    meta device from the checkpoint's config (shapes and dtypes, no storage) and loads the tokenizer; its remote
    traces name the model by `repo_id` (nnsight's model key), and NDIF runs them on the weights it holds. The
    lens `Model` wraps the same meta module, for the family layout, sites, width, vocabulary and planning; its
    fingerprint is ``remote:<repo_id>`` (there are no values to hash). Both get their own copy of the tokenizer
    (nnsight sets its copy to pad on the left). Running the meta module here fails; pass ``remote=True``.
    """
    require_nnsight()
    from nnsight.modeling.transformers import TransformersModel
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(repo_id)
    lm = TransformersModel(repo_id, task="text-generation", tokenizer=copy.deepcopy(tokenizer))
    return lm, Model(hf=lm._module, tokenizer=tokenizer, spec=repo_id, source="hub", fingerprint=f"remote:{repo_id}")


def site_order(site: str | Site) -> tuple[int, int]:
    """Where a site is reached in a forward pass: nnsight needs its reads and edits in that order."""
    s = Site.parse(site)
    return s.layer, KIND_ORDER[s.kind]


def envoy(lm: Any, model: Model, site: str | Site) -> tuple[Any, str]:
    """The nnsight envoy a site lives on and whether it is read at its "input" (resid_pre) or "output"."""
    path, side = site_path(model, site)
    return walk(lm, path), "input" if side == "pre" else "output"


#: one intervention at one call: (op, slots it touches [batch, seq] bool, vector [d] / [batch, 1|seq, d], scale);
#: a plain tuple, so that a trace sent to NDIF carries nothing but tensors and builtins
Edit = tuple[str, Bool[torch.Tensor, "batch seq"], Float[torch.Tensor, "*rows d_model"], float]


@dataclass
class Plan:
    """What a generation does at each step: {step: [(envoy, "input"|"output", [Edit])]} in the order the
    forward reaches the sites, plus a record per (step, row, absolute position, site) touched."""

    steps: dict[int, list[tuple[Any, str, list[Edit]]]] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)

    def fired(self, n_steps: list[int] | None = None) -> list[dict]:
        """The records, keeping for row b only the steps it ran alone (`n_steps[b]`: its new tokens)."""
        if n_steps is None:
            return list(self.records)
        return [r for r in self.records if r["step"] < n_steps[r["row"]]]


def call_slots(step: int, attention_mask: Int[torch.Tensor, "batch prompt"]) -> tuple[torch.Tensor, torch.Tensor]:
    """(absolute positions [batch, T], real slots [batch, T]) of generation call `step` on a left-padded batch:
    step 0 is the prompt pass (position = index among the row's real tokens), step s >= 1 one new token each,
    at (the row's prompt length) + s - 1."""
    mask = attention_mask.long()
    if step == 0:
        return (mask.cumsum(-1) - 1).clamp(min=0), mask.bool()
    pos = mask.sum(-1, keepdim=True) + step - 1
    return pos, torch.ones_like(pos, dtype=torch.bool)


def plan(lm: Any, model: Model, interventions: list[Intervention],
         attention_mask: Int[torch.Tensor, "batch prompt"], max_new_tokens: int) -> Plan:
    """Which slots each intervention touches at each of the `max_new_tokens` generation calls."""
    for iv in interventions:
        iv.check(model)
        if iv.where.kind == "gate":
            raise LensError("gated interventions run on the lens engine only (lens.interventions.steer)")
    mask = attention_mask.cpu()
    batch = mask.shape[0]
    plen = mask.long().sum(-1, keepdim=True)
    ordered = sorted(interventions, key=lambda iv: site_order(iv.site))  # stable: list order within a site
    out = Plan()
    for step in range(max_new_tokens):
        pos, real = call_slots(step, mask)
        groups: dict[str, list[Edit]] = {}
        for iv in ordered:
            hit = iv.where.mask(pos, plen) & real
            if not bool(hit.any()):
                continue
            vec = iv.vector.detach().cpu()
            if vec.dim() > 1:
                vec = _per_row(iv, vec, pos, batch)
            groups.setdefault(iv.site, []).append((iv.op, hit, vec, float(iv.scale)))
            rows, slots = hit.nonzero(as_tuple=True)
            out.records += [{"row": r, "step": step, "position": p, "site": iv.site}
                            for r, p in zip(rows.tolist(), pos[rows, slots].tolist(), strict=True)]
        if groups:
            out.steps[step] = [(*envoy(lm, model, site), edits) for site, edits in groups.items()]
    return out


def generate_nnsight(
    lm: Any,
    model: Model,
    interventions: list[Intervention],
    input_ids: Int[torch.Tensor, "batch prompt"],
    max_new_tokens: int,
    attention_mask: Int[torch.Tensor, "batch prompt"] | None = None,
    remote: bool = False,
    **generate_kwargs: Any,
) -> Int[torch.Tensor, "batch total"]:
    """Greedy generation under `interventions` through nnsight; returns the full sequences [batch, prompt + new].

    lm: an nnsight `TransformersModel` / `LanguageModel` over the same weights as `model` (`language_model`);
        lens uses `model` for its family layout and width. input_ids: a batch, left-padded when the prompts
        differ in length, with its `attention_mask` (None: every slot is real). Padded rows generate what
        each row generates alone, and Where means the positions it means on the lens engine.
    Interventions: one vector [d_model], per-row vectors [batch, d_model], or per-position ones with
        Where.absolute; gates run on the lens engine only. remote: passed to nnsight's trace (NDIF).
    generate_kwargs: passed to Hugging Face's generate (e.g. ``generation_config``, ``pad_token_id``).
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    todo = plan(lm, model, interventions, attention_mask, max_new_tokens)
    return generate_planned(lm, todo, input_ids, attention_mask, max_new_tokens, remote, **generate_kwargs)


def generate_planned(
    lm: Any,
    todo: Plan,
    input_ids: Int[torch.Tensor, "batch prompt"],
    attention_mask: Int[torch.Tensor, "batch prompt"],
    max_new_tokens: int,
    remote: bool = False,
    **generate_kwargs: Any,
) -> Int[torch.Tensor, "batch total"]:
    """`generate_nnsight` with its `plan` made already (the caller keeps the plan's records)."""
    steps = todo.steps
    if remote:  # the server has no lens: the ops travel with the trace, as source
        from nnsight import register

        register(ops)
    if "generation_config" not in generate_kwargs:
        generate_kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False, **generate_kwargs}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NEVER_REACHED)  # every row ended before a planned step
        with lm.generate(remote=remote, **generate_kwargs) as tracer:
            with tracer.invoke(input_ids=input_ids, attention_mask=attention_mask):
                for step in tracer.iter[sorted(steps)]:
                    for env, attr, edits in steps[step]:
                        out = env.output if attr == "output" else env.input
                        h = out[0] if isinstance(out, tuple) else out
                        for op, hit, vec, scale in edits:
                            h = apply_op(op, h, vec.to(h.device, h.dtype), scale, hit.to(h.device))
                        new = (h, *out[1:]) if isinstance(out, tuple) else h
                        if attr == "output":
                            env.output = new
                        else:
                            env.input = new
            with tracer.invoke():  # its own invoke: it runs even when generation ends before a planned step
                result = tracer.result.save()
    return result
