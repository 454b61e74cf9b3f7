"""Capture residual-stream activations at chosen sites and tokens, in memory or streamed to disk.

`capture(model, inputs, sites, select)` runs batched forward passes with one read-only hook per
site, keeps only the selected rows (a token, or the mean over a group of tokens such as a
sentence) and either returns them (`Activations`) or, with `out=DIR`, streams them to a folder
of safetensors shards plus `manifest.json` (see `capture_folder.py`), resuming an interrupted run.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from itertools import islice

import torch
from jaxtyping import Float, Int

from .batching import TOO_LONG, Batch, fit_context, flat_ids, pad, token_rows
from .errors import LensError, check_number
from .families import family_of
from .heap import settle_heap
from .models import Model
from .selection import AllTokens, Example, Group, Selection, parse_select, to_examples
from .site_hooks import hooks
from .sites import Site, resolve

META_KEYS = ("example", "start", "end", "token_id")
KIND_ORDER = {"hook_resid_pre": 0, "hook_attn_out": 1, "hook_mlp_out": 2, "hook_resid_post": 3}
#: batches a streamed capture reads at once (`capture_parts(every_group=batch_size * GROUP_BATCHES)`): tokenised
#: together, read with one set of hooks; also the unit a data-parallel capture splits its inputs by
GROUP_BATCHES = 8


#: a batch's forward: (state, model, batch) -> logits [batch, seq, vocab] or None; it calls state["read"](site, hidden)
Forward = Callable[[dict, Model, Batch], "torch.Tensor | None"]


class _StopForward(Exception):
    """Raised by the last capture hook: nothing after the deepest captured site is needed."""


@dataclass
class Activations:
    """Captured rows: one vector per site and row, with where each row came from.

    acts[site]: [rows, d_model]; example: input index; start/end: absolute token positions
    [start, end) that the row averages (end = start + 1 for single tokens); token_id: the token
    at `start` for single-token rows, -1 for means; labels: the group's label ("" if none).
    """

    acts: dict[str, Float[torch.Tensor, "rows d_model"]]
    example: Int[torch.Tensor, " rows"]
    start: Int[torch.Tensor, " rows"]
    end: Int[torch.Tensor, " rows"]
    token_id: Int[torch.Tensor, " rows"]
    labels: list[str] = field(default_factory=list)
    model: dict = field(default_factory=dict)
    n_tokens: int = 0  # tokens run through the model to produce these rows

    def __getitem__(self, site: str | Site | tuple[str, int]) -> Float[torch.Tensor, "rows d_model"]:
        """The rows of one site: ``acts["blocks.3.hook_resid_post"]``, ``acts["resid_post.3"]`` or
        ``acts["resid_post", 3]``."""
        name = Site.parse(site).name
        if name not in self.acts:
            raise LensError(f"site {name} was not captured; captured: {', '.join(self.acts)}")
        return self.acts[name]

    def layers(self, kind: str = "resid_post") -> list[int]:
        """The layers captured at hook kind `kind` (with or without ``hook_``), ascending."""
        full = Site.kind_name(kind)
        return sorted(s.layer for s in map(Site.parse, self.acts) if s.kind == full)

    def stack(self, kind: str = "resid_post") -> Float[torch.Tensor, "layers rows d_model"]:
        """Every captured layer of one hook kind as one tensor, layers ascending (`layers(kind)` names them)."""
        found = self.layers(kind)
        if not found:
            raise LensError(f"no {Site.kind_name(kind)} site was captured; captured: {', '.join(self.acts)}")
        return torch.stack([self[kind, layer] for layer in found])

    @property
    def sites(self) -> list[str]:
        return list(self.acts)

    def __len__(self) -> int:
        return int(self.example.numel())

    def meta_tensors(self) -> dict[str, torch.Tensor]:
        return {"example": self.example, "start": self.start, "end": self.end, "token_id": self.token_id}

    @classmethod
    def concat(cls, parts: list[Activations]) -> Activations:
        if not parts:
            raise LensError("no rows were captured: the selection matched no token in any input")
        if len(parts) == 1:
            return parts[0]
        return cls(
            acts={s: torch.cat([p.acts[s] for p in parts]) for s in parts[0].acts},
            **{k: torch.cat([getattr(p, k) for p in parts]) for k in META_KEYS},
            labels=[lab for p in parts for lab in p.labels],
            model=parts[0].model,
            n_tokens=sum(p.n_tokens for p in parts),
        )


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` on `device`; from the host to an accelerator through pinned memory, without waiting for the
    work already queued there (a plain copy from pageable memory waits for the device to go idle)."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class _GatherPlan:
    """Which padded slots each selected group averages, built once per batch and moved once per device."""

    def __init__(self, batch: Batch, groups: list[list]):
        slots, owner, counts = [], [], []
        width = batch.input_ids.shape[1]
        for row, row_groups in enumerate(groups):
            for grp in row_groups:
                for p in grp.positions:
                    slots.append(row * width + batch.slot(row, p))
                    owner.append(len(counts))
                counts.append(len(grp.positions))
        self.single = all(c == 1 for c in counts)
        self.n = len(counts)
        self.host = (torch.tensor(slots, dtype=torch.long), torch.tensor(owner, dtype=torch.long),
                     torch.tensor(counts, dtype=torch.float32))
        self.on: dict[torch.device, tuple] = {}

    def gather(self, hidden: Float[torch.Tensor, "batch seq d"]) -> Float[torch.Tensor, "rows d"]:
        """Each group's mean (its single row when every group is one token), on hidden's device."""
        flat = hidden.reshape(-1, hidden.shape[-1])
        got = self.on.get(flat.device)
        if got is None:
            got = self.on[flat.device] = tuple(to_device(t, flat.device) for t in self.host)
        idx, owner, counts = got
        if self.single:
            return flat.index_select(0, idx)
        out = torch.zeros(self.n, flat.shape[-1], device=flat.device, dtype=torch.float32)
        out.index_add_(0, owner, flat.index_select(0, idx).float())
        return out / counts[:, None]


@contextmanager
def reading(model: Model, sites: list[Site], *, stop: bool = True) -> Iterator[dict]:
    """Read-only hooks on `sites`, registered once for a whole capture run.

    Yields a state dict; each batch sets `state["read"] = fn(name, hidden)` and runs its forward
    inside `_forward(state, ...)`. The hooks act only during that forward: a forward of the same model
    made meanwhile by someone else (say, a lazy input generator that generates text) is untouched.
    With `stop` the capture's forward stops after the deepest site (nothing later is needed, the unembedding
    included); without it the forward runs to the logits (`lens.run`).
    """
    state: dict = {"on": False, "causal": model.causal, "mask_expected": family_of(model.family).mask_expected}

    def reader(name: str):
        def fn(h: torch.Tensor) -> None:
            if state["on"]:
                state["read"](name, h)

        return fn

    def stop_forward(h: torch.Tensor) -> None:
        if state["on"]:
            raise _StopForward

    deepest = max(sites, key=lambda s: (s.layer, KIND_ORDER[s.kind]))
    fns: dict[str, list] = {s.name: [reader(s.name)] for s in sites}
    if stop:
        fns[deepest.name].append(stop_forward)
    with hooks(model, fns):
        yield state


def _forward(state: dict, model: Model, batch: Batch) -> torch.Tensor | None:
    """The capture's own forward pass over `batch` (hooks of `reading` active), stopped after the deepest site
    (None) or, when `reading` was told not to stop, run to the end (the logits [batch, seq, vocab])."""
    dev = model.device
    ids, mask, pos = batch.input_ids, batch.attention_mask, batch.position_ids
    if batch.side == "right":
        # Real tokens sit at 0..n-1 in every row, so (1) one broadcast row of positions serves all rows, as
        # HF makes by default (a [batch, seq] one makes rotary embeddings compute batch x the cos/sin), and
        # (2) a causal model needs no padding mask: no token sees a later slot, and right pads only come
        # after a row's real tokens, so real tokens compute exactly what they compute unpadded (the pads'
        # own rows differ, and are never read). Without the mask HF skips building a [batch, 1, seq, seq]
        # one and SDPA takes its causal kernel. A family marked `mask_expected` (GPT-2) gets an all-ones mask
        # instead (same path in HF, no "pass an attention_mask" warning); a bidirectional config keeps the padding mask.
        if state["causal"]:
            ids = to_device(ids, dev)
            mask = torch.ones_like(ids) if state["mask_expected"] else None
        elif ids.device != dev:
            ids, mask = to_device(torch.stack([ids, mask.long()]), dev).unbind(0)
        pos = torch.arange(ids.shape[1], device=ids.device)[None]
    elif ids.device != dev:  # one copy for the three
        ids, mask, pos = to_device(torch.stack([ids, mask.long(), pos]), dev).unbind(0)
    state["on"] = True
    try:
        with torch.no_grad():
            return model.hf(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
    except _StopForward:
        return None
    finally:
        state["on"] = False


def capture_batch(
    model: Model,
    examples: list[Example],
    sites: list[Site],
    select: Selection,
    first_index: int = 0,
    dtype: torch.dtype = torch.float32,
    side: str = "right",
    state: dict | None = None,
    device: torch.device | str = "cpu",
    too_long: str = "error",
    logits: list | None = None,
    forward: Forward | None = None,
) -> Activations:
    """Capture one batch of examples (one forward pass, no gradient).

    logits: a list to which each example's logits [tokens, vocab] (unpadded, on the CPU) are appended;
    needs `state` from `reading(..., stop=False)`.

    state: from `reading(model, sites)` when called in a loop (hooks registered once); None
    registers them for this batch only. device: where the rows are returned (default CPU).
    too_long: "error" or "truncate", for inputs longer than the model's context (`fit_context`).
    forward: runs the batch in place of lens's hooked forward and hands each site's hidden states
        [batch, seq, d_model] to ``state["read"](site name, hidden)`` (e.g. through nnsight:
        `lens.interventions.backends.nnsight_capture`); `state` is then any dict (no hooks are registered).
    """
    if state is None and forward is not None:
        state = {}
    if state is None:
        with reading(model, sites) as st:
            return capture_batch(model, examples, sites, select, first_index, dtype, side, st, device, too_long,
                                 logits)
    every = isinstance(select, AllTokens)  # fast path: one row per real token, gathered by mask
    if select.reads_text:
        for i, ex in enumerate(examples):
            if ex.token_ids is not None:
                raise LensError(f"input {first_index + i} is token ids, but selection {select.spec!r} reads text "
                                "(character spans); pass the text, or select all, last:N or positions:...")
    ids, offsets = token_rows(model, [e.token_ids if e.token_ids is not None else e.text for e in examples],
                              offsets=not every)
    fit_context(model, ids, offsets, too_long, first_index)
    try:
        batch = pad(model, ids, offsets, side)
    except LensError as e:
        raise LensError(f"inputs {first_index}..: {e}") from None
    groups = []
    if not every:
        for i, ex in enumerate(examples):
            try:
                groups.append(select.groups(ex, batch.offsets[i]))
            except LensError as e:
                raise LensError(f"input {first_index + i}: {e}") from None
    seen: dict[str, torch.Tensor] = {}
    real = batch.attention_mask.bool()
    if every:
        groups = [[Group((p,)) for p in range(int(n))] for n in batch.lengths]  # no offsets read
    plan = _GatherPlan(batch, groups)

    def read(name: str, h: torch.Tensor) -> None:
        seen[name] = plan.gather(h.detach())  # stays on the device until the forward is done

    state["read"] = read
    out = (forward or _forward)(state, model, batch)
    if logits is not None:
        if out is None:
            raise LensError("logits were asked for but the forward stopped at the deepest site; "
                            "use reading(model, sites, stop=False)")
        for i, n in enumerate(batch.lengths):
            first = batch.slot(i, 0)
            logits.append(out[i, first : first + n].detach().float().cpu())
    for name, t in seen.items():  # the first copy waits for the forward; the others find the device idle
        seen[name] = t.to(device, dtype)
    long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    if every:
        rows_of = torch.arange(len(examples))[:, None].expand_as(real)[real]
        start = batch.position_ids[real]
        example, end, token_id = rows_of + first_index, start + 1, batch.input_ids[real]
        labels = [""] * int(real.sum())
    else:
        ex_l, st_l, en_l, tok_l, labels = [], [], [], [], []
        for i, row_groups in enumerate(groups):
            for grp in row_groups:
                ex_l.append(first_index + i)
                st_l.append(grp.positions[0])
                en_l.append(grp.positions[-1] + 1)
                tok_l.append(int(batch.input_ids[i, batch.slot(i, grp.positions[0])]) if len(grp.positions) == 1
                             else -1)
                labels.append(grp.label)
        example, start, end, token_id = long(ex_l), long(st_l), long(en_l), long(tok_l)
    for name, t in seen.items():
        if not torch.isfinite(t.float().sum()):  # one reduction: NaN/inf anywhere makes the sum non-finite
            raise LensError(f"NaN or inf in {name} for inputs {first_index}..{first_index + len(examples) - 1}; "
                            "check the model weights and dtype (try dtype=float32)")
    acts = Activations(seen, example, start, end, token_id, labels, model.facts())
    acts.n_tokens = int(batch.attention_mask.sum())
    return acts


def capture_args(model: Model, sites: Iterable[str | Site] | str | Site, select: Selection | str, batch_size: int,
                 dtype: torch.dtype | str, too_long: str) -> tuple[list[Site], Selection, torch.dtype]:
    """The checked arguments every capture entry point shares: (sites, selection, dtype); a bad one fails
    in one LensError naming it."""
    check_number("batch_size", batch_size, 1, integer=True)
    if too_long not in TOO_LONG:
        raise LensError(f"too_long must be one of {', '.join(TOO_LONG)}, got {too_long!r}")
    return check_sites(model, sites), parse_select(select), getattr(torch, dtype) if isinstance(dtype, str) else dtype


def check_sites(model: Model, sites: Iterable[str | Site] | str | Site) -> list[Site]:
    if isinstance(sites, (str, Site)):
        sites = [sites]
    parsed = []
    for s in sites:
        resolve(model, s)  # raises with the valid range / nearest names
        parsed.append(Site.parse(s))
    if not parsed:
        raise LensError("no sites given; name at least one, e.g. blocks.0.hook_resid_post")
    return sorted(set(parsed))


def batches(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def examples_hash(examples: Iterable[Example], h=None):
    """Running sha256 over example texts, prompt splits and spans (to check a resumed capture's inputs)."""
    h = h or hashlib.sha256()
    for ex in examples:
        h.update(repr((ex.text, ex.prompt_chars, ex.spans, ex.token_ids)).encode())
    return h


def capture_parts(model: Model, examples: Iterable[Example], sites: list[Site], select: Selection, *,
                  batch_size: int, dtype: torch.dtype, side: str, bar: ProgressBar, first_index: int = 0,
                  device: torch.device | str = "cpu", too_long: str = "error", forward: Forward | None = None,
                  every_group: int | None = None, pin: bool = True,
                  logits: list | None = None) -> Iterator[tuple[Activations, list[Example]]]:
    """The capture loop of `capture` (rows in memory) and `capture_to_disk` (rows to shards): each batch's rows,
    with the examples they came from, in input order; example numbers start at `first_index`.

    `select` all (and lens's own forward): groups of `every_group` examples (None: all of them at once)
    through `capture_every`, whose forward passes write straight into preallocated rows; any other
    selection, or a `forward` of another backend: one forward per `batch_size` examples (`capture_batch`)
    with the read-only hooks installed once for the whole loop. `bar` counts examples and tokens.
    logits: a list to which each example's logits [tokens, vocab] are appended; the forward passes then run
    to the end instead of stopping after the deepest site (`lens.run`)."""
    device = torch.device(device)
    if isinstance(select, AllTokens) and forward is None and logits is None:
        chunks = batches(examples, every_group) if every_group else [list(examples)]
        for k, items in enumerate(chunks):
            if not items:
                return
            yield capture_every(model, items, sites, batch_size, dtype, side, bar,
                                first_index + k * (every_group or 0), device=device, pin=pin,
                                too_long=too_long), items
        return
    # forward: no lens hooks
    with reading(model, sites, stop=logits is None) if forward is None else nullcontext({}) as state:
        for k, chunk in enumerate(batches(examples, batch_size)):
            t0 = time.perf_counter()
            part = capture_batch(model, chunk, sites, select, first_index + k * batch_size, dtype, side, state,
                                 device, too_long, logits=logits, forward=forward)
            bar.update(len(chunk), part.n_tokens, time.perf_counter() - t0)
            yield part, chunk


def capture(
    model: Model,
    inputs: Iterable[str | dict | Example | list[int] | torch.Tensor],
    sites: Iterable[str | Site] | str | Site,
    select: Selection | str = AllTokens(),
    *,
    batch_size: int = 8,
    dtype: torch.dtype | str = torch.float32,
    padding_side: str = "right",
    progress: bool = True,
    total: int | None = None,
    device: torch.device | str = "cpu",
    too_long: str = "error",
    out: None = None,
) -> Activations:
    """Capture `sites` at the tokens chosen by `select` for every input, in memory (`Activations`).

    To stream rows to a capture folder instead (bounded memory, resumable), use
    `lens.capture_to_disk(model, inputs, sites, select, out=FOLDER)`.

    inputs: strings, dicts ({"text"} or {"prompt", "completion"}, optional "spans" of
        [start, end, label] character ranges), token-id sequences (lists of ints, 1-D tensors or
        {"input_ids"}: read as given, no special tokens added) or Examples; any iterable (read lazily).
    padding_side: "right" or "left"; results are identical either way (positions are passed).
    device: where in-memory rows are kept: "cpu" (default; from an accelerator they are copied
        asynchronously into pinned memory, so the copies overlap the forward passes) or a device such
        as "cuda" (rows stay there, as TransformerLens's run_with_cache keeps them).
    too_long: an input longer than the model's context (config `max_position_embeddings` or
        `n_positions`) raises a LensError naming it ("error"), or is cut to its first tokens ("truncate").

    Rows whose norm is over 10x the median row norm (SmolLM2's first token, an attention sink) are
    kept, with an `OutlierWarning` naming their positions and the selection that skips them (`from:1`).
    """
    site_list, select, dtype = capture_args(model, sites, select, batch_size, dtype, too_long)
    settle_heap()  # output buffers of repeated captures reused, not page-faulted again (lens.heap)
    device = torch.device(device)
    if out is not None:
        raise LensError("capture() keeps the rows in memory; to write a capture folder use "
                        "lens.capture_to_disk(model, inputs, sites, select, out=FOLDER)")
    bar = ProgressBar(progress, total)
    parts = [part for part, _ in capture_parts(model, to_examples(inputs), site_list, select, batch_size=batch_size,
                                               dtype=dtype, side=padding_side, bar=bar, device=device,
                                               too_long=too_long)]
    bar.close()
    if not parts:
        raise LensError("no inputs to capture; the input list or file is empty")
    _warn_outliers(parts)
    return Activations.concat(parts)


def capture_shared(
    model: Model,
    inputs: Iterable,
    sites: Iterable[str | Site] | str | Site,
    select: Selection | str = AllTokens(),
    *,
    data_parallel: bool | None = None,
    batch_size: int = 8,
    **kw,
) -> Activations:
    """`capture`, its inputs shared among the launcher's ranks (`lens.distributed`): each rank captures one
    contiguous block of whole batches (the batches one process forms) and every rank returns all the rows,
    in input order, bit for bit one process's (example numbers too). data_parallel: True (split when
    launched with several processes), False (never: `capture`), None (inside a `data_parallel()` block)."""
    from .distributed import all_gather_json, all_gather_rows, block, sharing

    r = sharing(data_parallel)
    if r is None:
        return capture(model, inputs, sites, select, batch_size=batch_size, **kw)
    items = list(inputs)
    if not items:
        raise LensError("no inputs to capture; the input list or file is empty")
    mine = block(len(items), r, align=batch_size)
    site_list, _, dtype = capture_args(model, sites, select, batch_size, kw.get("dtype", torch.float32),
                                       kw.get("too_long", "error"))
    if len(mine):
        part = capture(model, items[mine.start : mine.stop], site_list, select, batch_size=batch_size, **kw)
        part.example = part.example + mine.start
    else:  # fewer batches than ranks: this one has none
        empty = torch.zeros(0, dtype=torch.long)
        part = Activations({s.name: torch.zeros(0, model.d_model, dtype=dtype) for s in site_list}, empty, empty,
                           empty, empty, [], model.facts())
    told = all_gather_json([part.labels, part.n_tokens])
    return Activations({s.name: all_gather_rows(part.acts[s.name]) for s in site_list},  # same order on every rank
                       **{k: all_gather_rows(v) for k, v in part.meta_tensors().items()},
                       labels=[lab for labels, _ in told for lab in labels], model=part.model,
                       n_tokens=sum(n for _, n in told))


def _warn_outliers(parts: list[Activations]) -> None:
    """Warn (`lens.outliers.OutlierWarning`) when some rows' norms dwarf the median (e.g. the first token)."""
    from .outliers import NormOutliers

    mon = NormOutliers()
    for p in parts:
        mon.update(p)
    mon.warn(stacklevel=4)


PIN_LIMIT = 2 << 30  # bytes of rows an in-memory capture may hold in pinned (page-locked) host memory


def _rows_buffer(n: int, width: int, dtype: torch.dtype, device: torch.device, model: Model, pin: bool,
                 ) -> torch.Tensor:
    """Where one site's rows go: on `device`; with `pin`, pinned host memory when the model sits on an
    accelerator (so each batch's copy to the CPU is asynchronous), plain memory if pinning is refused."""
    if pin and device.type == "cpu" and model.device.type == "cuda":
        try:
            return torch.empty(n, width, dtype=dtype, pin_memory=True)
        except RuntimeError:
            pass
    return torch.empty(n, width, dtype=dtype, device=device)


def capture_every(model: Model, examples: list[Example], sites: list[Site], batch_size: int, dtype: torch.dtype,
                  side: str, bar: ProgressBar, first_index: int = 0,
                  device: torch.device = torch.device("cpu"), pin: bool = True,
                  too_long: str = "error") -> Activations:
    """Every token of every example, in memory: tokenise all inputs first, then each forward pass
    writes its rows straight into one preallocated tensor per site (no per-batch copies to join).
    From an accelerator the copies are asynchronous (into pinned memory) and awaited once at the end,
    when `pin` and the rows fit in `PIN_LIMIT` bytes (pinned memory is locked, and torch keeps it cached);
    otherwise each copy waits. too_long: as in `capture_batch`."""
    ids, _ = token_rows(model, [e.text if e.token_ids is None else e.token_ids for e in examples], offsets=False)
    fit_context(model, ids, [], too_long, first_index)
    lengths = torch.tensor([len(r) for r in ids])
    n = int(lengths.sum())
    pin = pin and n * model.d_model * dtype.itemsize * len(sites) <= PIN_LIMIT
    out = {s.name: _rows_buffer(n, model.d_model, dtype, device, model, pin) for s in sites}
    state_rows: dict = {"at": 0, "idx": None, "on": {}}
    sums: dict[torch.device, list[torch.Tensor]] = {}  # per device: one sum per site and batch, read at the end
    copy_streams: dict[torch.device, torch.cuda.Stream] = {}

    def read(name: str, h: torch.Tensor) -> None:
        a, idx = state_rows["at"], state_rows["idx"]
        dst = out[name][a : a + idx.numel()]
        flat = h.detach().reshape(-1, h.shape[-1])
        if flat.device != idx.device:  # the positions, once per batch and device (layers may sit on several)
            idx = state_rows["on"].get(flat.device)
            if idx is None:
                idx = state_rows["on"][flat.device] = to_device(state_rows["idx"], flat.device)
        if flat.dtype == dst.dtype and flat.device == dst.device:
            rows = torch.index_select(flat, 0, idx, out=dst)
        else:
            rows = flat.index_select(0, idx).to(dst.dtype)
            if flat.is_cuda and dst.is_pinned():
                # copy to the host on a side stream: the next layers compute while the rows travel
                stream = copy_streams.get(flat.device)
                if stream is None:
                    stream = copy_streams[flat.device] = torch.cuda.Stream(flat.device)
                stream.wait_stream(torch.cuda.current_stream(flat.device))
                with torch.cuda.stream(stream):
                    dst.copy_(rows, non_blocking=True)
                rows.record_stream(stream)  # not reused by the compute stream before the copy is done
            else:
                dst.copy_(rows)
        # NaN/inf anywhere makes the sum non-finite: one reduction, no host sync here
        sums.setdefault(rows.device, []).append(rows.sum(dtype=torch.float32))

    with reading(model, sites) as state, torch.no_grad():
        state["read"] = read
        for b in range(0, len(ids), batch_size):
            t0 = time.perf_counter()
            try:
                batch = pad(model, ids[b : b + batch_size], [], side)
            except LensError as e:
                raise LensError(f"inputs {first_index + b}..: {e}") from None
            state_rows["idx"] = torch.nonzero(batch.attention_mask.flatten()).flatten()
            state_rows["on"] = {}
            _forward(state, model, batch)
            state_rows["at"] += state_rows["idx"].numel()
            bar.update(len(batch.lengths), state_rows["idx"].numel(), time.perf_counter() - t0)
    for stream in copy_streams.values():
        stream.synchronize()  # every pending copy into the pinned buffers has landed
    if not all(bool(torch.isfinite(torch.stack(s)).all()) for s in sums.values()):  # one host read per device
        _raise_non_finite(out, lengths, first_index)
    example = torch.repeat_interleave(torch.arange(first_index, first_index + len(ids)), lengths)
    first = torch.repeat_interleave(lengths.cumsum(0) - lengths, lengths)
    start = torch.arange(n) - first
    token_id = flat_ids(ids)
    acts = Activations(out, example, start, start + 1, token_id, [""] * n, model.facts())
    acts.n_tokens = n
    return acts


def _raise_non_finite(out: dict[str, torch.Tensor], lengths: torch.Tensor, first_index: int) -> None:
    """Name the first site and input holding a NaN or inf (the slow search, run only when there is one)."""
    for name, t in out.items():
        bad_rows = (~torch.isfinite(t).all(-1)).nonzero()
        if len(bad_rows):
            ex = int(torch.searchsorted(lengths.cumsum(0).to(t.device), bad_rows[0, 0], right=True))
            raise LensError(f"NaN or inf in {name} for input {first_index + ex}; check the model weights and "
                            "dtype (try dtype=float32)")


class ProgressBar:
    """A tqdm bar over examples that shows tokens/s, or nothing."""

    def __init__(self, on: bool, total: int | None, initial: int = 0):
        self.bar = None
        if on:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="ex", desc="capture", leave=False)
        self.tokens, self.seconds = 0, 0.0

    def update(self, n: int, tokens: int, seconds: float) -> None:
        self.tokens += tokens
        self.seconds += seconds
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(tok_s=f"{self.tokens / max(self.seconds, 1e-9):.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
