"""The engine: apply a list of Interventions during any forward pass or HF `generate` call.

`steer(model, interventions)` is a context manager. It registers one read-only pre-hook on the
model's top module, which reads each call's `position_ids` (or, without them, `attention_mask` and
the cache length) to work out the absolute position of every slot, padding- and KV-cache-aware,
and one hook per site that applies the interventions whose `Where` covers those positions.
Everything it added is removed on exit.

What fired is recorded in `handle.log` (step, row, absolute position, site, name, |delta|).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int

from ..errors import LensError
from ..models import Model
from ..site_hooks import add_hook, call_positions
from .ops import apply_op
from .spec import Intervention


@dataclass
class CallState:
    """Positions of the forward call in flight: step index, absolute positions, real (non-pad) slots.

    valid is None when every slot is real (no attention mask given); prompt_len is [batch, 1].
    """

    step: int
    positions: Int[torch.Tensor, "batch seq"]
    valid: Bool[torch.Tensor, "batch seq"] | None
    prompt_len: Int[torch.Tensor, "batch 1"]
    sequence: int = 0  # index of the batch of sequences (a new one starts at each prompt pass)

    def to(self, device: torch.device) -> CallState:
        """The same state with its tensors on `device` (a site on another GPU under a device_map)."""
        return CallState(self.step, self.positions.to(device), None if self.valid is None else self.valid.to(device),
                         self.prompt_len.to(device), self.sequence)

    def real(self) -> Bool[torch.Tensor, "batch seq"]:
        """The real-slot mask (all True when no attention mask was given)."""
        return torch.ones_like(self.positions, dtype=torch.bool) if self.valid is None else self.valid


@dataclass
class Gate:
    """A run-time switch for `Where.on_gate(name)` interventions.

    rows: which batch rows steer at the current call (at their newest position only, or at every real
    position when `everywhere`); vectors: optional per-row replacement vectors [batch, d_model]; scales:
    optional per-row scales.
    `fired` keeps every (row, absolute position) where it applied, for replay and reports (when the
    `steer` block records).
    """

    rows: Bool[torch.Tensor, " batch"] | None = None
    vectors: Float[torch.Tensor, "batch d_model"] | None = None
    scales: Float[torch.Tensor, " batch"] | None = None
    fired: list[tuple[int, int]] = field(default_factory=list)
    everywhere: bool = False

    def set(self, rows, vectors=None, scales=None, everywhere: bool = False) -> None:
        self.rows, self.vectors, self.scales, self.everywhere = rows, vectors, scales, everywhere

    def clear(self) -> None:
        self.rows = self.vectors = self.scales = None
        self.everywhere = False


@dataclass
class FiredLog:
    """Where interventions fired: one record per (call, intervention, row, position).

    sequence: which batch of sequences (0 for the first prompt pass inside the block, 1 for the
    next, ...); row: the row within that batch; step: calls since that batch's prompt pass.
    """

    records: list[dict] = field(default_factory=list)
    enabled: bool = True

    def add(self, step: int, name: str, site: str, mask: torch.Tensor, positions: torch.Tensor,
            delta: torch.Tensor, sequence: int = 0) -> None:
        if not self.enabled:
            return
        rows, slots = mask.nonzero(as_tuple=True)
        if rows.numel() == 0:
            return
        mags = delta[rows, slots].float().norm(dim=-1).tolist()
        for r, s, m in zip(rows.tolist(), positions[rows, slots].tolist(), mags, strict=True):
            self.records.append({"sequence": sequence, "step": step, "row": r, "position": s, "site": site,
                                 "name": name, "magnitude": m})

    def positions(self, row: int, name: str | None = None) -> list[int]:
        """Absolute positions steered in `row` (optionally by one named intervention), in order."""
        return sorted({r["position"] for r in self.records if r["row"] == row and (name is None or r["name"] == name)})

    def __len__(self) -> int:
        return len(self.records)


@dataclass
class Steering:
    """The handle `steer` yields: the log, the gates, and the call state of the last forward."""

    interventions: list[Intervention]
    log: FiredLog
    gates: dict[str, Gate]
    state: CallState | None = None
    prompt_len: torch.Tensor | None = None
    calls: int = 0
    first_call: int = 0
    sequences: int = 0


def _call_state(args, kwargs, h: Steering, fixed_prompt_len) -> CallState:
    try:
        positions, valid, past = call_positions(args, kwargs)
    except LensError as e:
        raise LensError(f"steer: {e}") from None
    batch = positions.shape[0]
    if past == 0:  # a fresh sequence (a prompt pass, or a full recompute): steps count from here
        h.sequences += 1
        h.first_call = h.calls
        if fixed_prompt_len is not None:
            plen = torch.as_tensor(fixed_prompt_len, device=positions.device).long().reshape(batch)
        elif valid is None:  # the prompt pass processes the whole prompt
            plen = positions.amax(-1) + 1
        else:
            plen = torch.where(valid, positions + 1, 0).amax(-1)
        h.prompt_len = plen[:, None]
    return CallState(h.calls - h.first_call, positions, valid, h.prompt_len, h.sequences - 1)


#: which input (prompt index) each row of the forward calls in flight holds, when a caller reorders or splits its
#: inputs into batches (`lens.generate` sorts prompts by length); None: row b of a call is input b
_BATCH_ROWS: ContextVar[tuple[int, ...] | None] = ContextVar("lens_batch_rows", default=None)


@contextmanager
def batch_rows(indices: Sequence[int]) -> Iterator[None]:
    """Declare that the forward calls inside hold inputs `indices` (row r = input indices[r]), so that
    per-example and per-position vectors pick each input's own row."""
    token = _BATCH_ROWS.set(tuple(int(i) for i in indices))
    try:
        yield
    finally:
        _BATCH_ROWS.reset(token)


def current_batch_rows() -> tuple[int, ...] | None:
    """The input index of each row of the forward calls in flight (`batch_rows`), or None: row b is input b."""
    return _BATCH_ROWS.get()


def _per_row(iv: Intervention, vec: torch.Tensor, positions: torch.Tensor, batch: int) -> torch.Tensor:
    """A per-example [inputs, d] or per-position [inputs, n, d] vector laid out on the call's slots [batch, seq|1, d].

    Row r of the call takes the vector of its input (`batch_rows`; else input r). Per position: slot (r, s) at
    absolute position p_j (the j-th of `iv.where.positions`) gets vec[input, j]; other slots get vec[input, 0],
    which the mask never selects."""
    rows = _BATCH_ROWS.get()
    if rows is not None and len(rows) == batch:
        if max(rows) >= vec.shape[0]:
            raise LensError(f"intervention {iv.name or iv.site}: its vector has {vec.shape[0]} rows but the inputs "
                            f"go up to index {max(rows)}; give one row per input")
        vec = vec[torch.tensor(rows, device=vec.device)]
    elif vec.shape[0] != batch:
        raise LensError(f"intervention {iv.name or iv.site}: its vector has {vec.shape[0]} rows but the forward "
                        f"call has {batch}; give one row per input of the batch")
    if vec.dim() == 2:
        return vec[:, None, :]
    lookup = torch.zeros(max(iv.where.positions) + 1, dtype=torch.long, device=positions.device)
    lookup[torch.tensor(iv.where.positions, device=positions.device)] = torch.arange(
        len(iv.where.positions), device=positions.device)
    j = lookup[positions.clamp(0, lookup.numel() - 1)]  # [batch, seq]
    return vec.gather(1, j[..., None].expand(-1, -1, vec.shape[-1]))


def _site_fn(h: Steering, items: list[Intervention]):
    cache: dict = {}  # (intervention, device, dtype) -> (vector there, scale still to apply)

    def prepared(iv: Intervention, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        vec = iv.vector.to(hidden.device, hidden.dtype)
        if iv.where.kind != "gate" and iv.op == "add":  # fold the constant scale into the vector
            got = cache[id(iv)] = (vec * iv.scale, 1.0)
        else:
            got = cache[id(iv)] = (vec, iv.scale)
        return got

    def fn(hidden: torch.Tensor) -> torch.Tensor | None:
        st = h.state
        if st is None or hidden.shape[:2] != st.positions.shape:
            raise LensError("steer: a site saw a tensor whose shape does not match the call's tokens; "
                            "only decoder-only models called with input_ids are supported")
        if st.positions.device != hidden.device:  # layers split across devices: positions follow the site
            st = st.to(hidden.device)
        out = hidden
        for iv in items:
            got = cache.get(id(iv))
            if got is None or got[0].dtype != hidden.dtype or got[0].device != hidden.device:
                got = prepared(iv, hidden)
            vec, scale = got
            if iv.where.kind == "gate":
                gate = h.gates[iv.where.gate]
                if gate.rows is None:
                    continue
                real = st.real()
                if gate.everywhere:
                    mask = real & gate.rows.to(hidden.device)[:, None]
                else:
                    newest = st.positions == torch.where(real, st.positions, -1).amax(-1, keepdim=True)
                    mask = newest & real & gate.rows.to(hidden.device)[:, None]
                if gate.vectors is not None:
                    vec = gate.vectors.to(hidden.device, hidden.dtype)[:, None, :]
                if gate.scales is not None:
                    scale = gate.scales.to(hidden.device, hidden.dtype)[:, None, None] * iv.scale
                if h.log.enabled:  # two reads to the host per call, not two per row
                    rows, slots = mask.nonzero(as_tuple=True)
                    gate.fired.extend(zip(rows.tolist(), st.positions[rows, slots].tolist(), strict=True))
            else:
                mask = iv.where.mask(st.positions, st.prompt_len)
                if st.valid is not None:
                    mask = mask & st.valid
                if vec.dim() > 1:
                    vec = _per_row(iv, vec, st.positions, hidden.shape[0])
            if hidden.device.type == "cpu":
                every = bool(mask.all())
                if not every and not bool(mask.any()):
                    continue
            else:  # deciding on the host would wait for the accelerator at every call; the masked form is exact
                every = False
            # every slot, constant vector, add (the common steering case): no mask to multiply by
            new = apply_op(iv.op, out, vec, scale, None if every and iv.op == "add" and vec.dim() == 1 else mask)
            if h.log.enabled:
                h.log.add(st.step, iv.name or iv.source or iv.op, iv.site, mask, st.positions, (new - out).detach(),
                          st.sequence)
            out = new
        return out

    return fn


@contextmanager
def steer(
    model: Model,
    interventions: list[Intervention] | Intervention,
    *,
    prompt_lengths: Int[torch.Tensor, " batch"] | list[int] | None = None,
    record: bool = True,
) -> Iterator[Steering]:
    """Apply `interventions` to every forward call made inside the block (plain forward or generate).

    prompt_lengths: each row's prompt length P (what `Where` counts from). Default: inferred at each
        call with an empty cache (a prompt pass, as `generate` starts every batch), as the longest
        real sequence of that call. Pass it explicitly for a full recompute of prompt + generated text.
    record: keep `handle.log` and each gate's `fired` (what fired where). On an accelerator this reads
        the fired slots back to the host at every call; record=False leaves the steered forward free of
        host syncs (the hybrid, which decides on the host anyway, runs with record=False).
    """
    items = [interventions] if isinstance(interventions, Intervention) else list(interventions)
    for iv in items:
        iv.check(model)
    gates = {iv.where.gate: Gate() for iv in items if iv.where.kind == "gate"}
    handle = Steering(items, FiredLog(enabled=record), gates)

    def pre(module, args, kwargs):
        handle.state = _call_state(args, kwargs, handle, prompt_lengths)
        handle.calls += 1

    by_site: dict[str, list[Intervention]] = {}
    for iv in items:
        by_site.setdefault(iv.site, []).append(iv)
    handles = [model.hf.register_forward_pre_hook(pre, with_kwargs=True)]
    try:
        for site, group in by_site.items():
            handles.append(add_hook(model, site, _site_fn(handle, group)))
        yield handle
    finally:
        for hd in handles:
            hd.remove()
