"""Scoped hooks on named sites: added by a context manager, removed exactly on exit.

A site function receives the residual-stream tensor `[batch, seq, d_model]` of one forward call
and returns a replacement tensor, or None to leave it unchanged. It is written either `fn(h)` or
`fn(h, site, positions)`: `site` is the site's name (`blocks.L.hook_*`) and `positions` `[batch, seq]`
the absolute position of every slot (the index of its token in its own unpadded sequence; -1 at
slots the attention mask marks as padding), left padding and the KV cache accounted for: in cached
generation a call holds the newest token of each row, at position prompt_len + step - 1.
Only the handles this module created are removed (also on exceptions); hooks a user registered on
the same modules are never touched.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Int
from torch.utils.hooks import RemovableHandle

from .errors import LensError
from .sites import Site, resolve

if TYPE_CHECKING:
    from .models import Model

#: fn(h) or fn(h, site, positions) -> replacement tensor or None (h: [batch, seq, d_model])
SiteFn = Callable[..., "torch.Tensor | None"]


class HookHandle:
    """The hooks one `add_hook` registered (the site's, and for `fn(h, site, positions)` the model-level hook
    that reads each call's positions); `remove()` removes exactly those. Also a context manager."""

    def __init__(self, *handles: RemovableHandle) -> None:
        self.handles = list(handles)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def call_positions(
    args: tuple, kwargs: dict
) -> tuple[Int[torch.Tensor, "batch seq"], Bool[torch.Tensor, "batch seq"] | None, int]:
    """(absolute positions [batch, seq], real-slot mask or None, cached length) of one forward call of a model's
    top module, read from the call's arguments (a forward pre-hook with kwargs sees them).

    Positions are the `position_ids` the model is given when there are any (lens's batching, its decoding loop
    and HF `generate` pass them); else `cumsum(attention_mask) - 1` over the slots of this call; else the
    cached length + 0..seq-1. The mask is the attention mask's slots of this call (None without a 2-D mask)."""
    x = kwargs.get("input_ids")
    if x is None:
        x = args[0] if args else kwargs.get("inputs_embeds")
    if x is None:
        raise LensError("the forward call has neither input_ids nor inputs_embeds")
    batch, t = x.shape[0], x.shape[1]
    mask = kwargs.get("attention_mask")
    pos_ids = kwargs.get("position_ids")
    cache = kwargs.get("past_key_values")
    if cache is None:
        cache = kwargs.get("cache")
    past = int(cache.get_seq_length()) if cache is not None and hasattr(cache, "get_seq_length") else 0
    valid = mask[:, -t:].bool() if mask is not None and mask.dim() == 2 else None
    if pos_ids is not None and pos_ids.dim() == 2:  # what the model itself is told
        positions = pos_ids if pos_ids.shape[0] == batch else pos_ids.expand(batch, t)
    elif valid is not None:  # only when the caller did not pass position ids
        positions = (mask.long().cumsum(-1) - 1)[:, -t:]
        if past == 0:
            positions = positions.clamp(min=0)
    else:
        positions = (past + torch.arange(t, device=x.device)).expand(batch, t)
    return positions, valid, past


def _takes_positions(fn: SiteFn, site: str) -> bool:
    """Whether `fn` is written fn(h, site, positions) (three required positional parameters) rather than fn(h)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # no signature to read (some builtins): the one-argument form
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = sum(p.default is p.empty for p in positional)
    star = any(p.kind is p.VAR_POSITIONAL for p in params)
    keyword_only = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if not keyword_only:
        if required == 3:
            return True
        if required == 1 or (required == 0 and (positional or star)):
            return False
    name = getattr(fn, "__qualname__", repr(fn))
    raise LensError(
        f"hook function {name} for {site} has the signature {inspect.signature(fn)}; a hook function takes "
        "(h) or (h, site, positions): the hidden state [batch, seq, d_model], the site's name, and the "
        "absolute positions [batch, seq]"
    )


def _with_positions(fn: SiteFn, site: str) -> tuple[Callable, Callable]:
    """(the model-level pre-hook that reads each call's positions, the site function that passes them to fn)."""
    state: dict = {}

    def pre(module, args, kwargs):
        positions, valid, _ = call_positions(args, kwargs)
        state["positions"] = positions if valid is None else torch.where(valid, positions, -1)

    def one(h: torch.Tensor):
        positions = state.get("positions")
        if positions is None or positions.shape != h.shape[:2]:
            raise LensError(f"hook on {site}: the tensor there has shape {tuple(h.shape)}, which does not match the "
                            "tokens of the model's forward call; position-aware hooks need the model called with "
                            "input_ids (or inputs_embeds) [batch, seq]")
        return fn(h, site, positions.to(h.device))

    return pre, one


def _post_hook(fn: Callable):
    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        new = fn(hidden)
        if new is None:
            return None
        if isinstance(output, tuple):
            return (new, *output[1:])
        return new

    return hook


def _pre_hook(fn: Callable):
    def hook(module, args, kwargs):
        if args:
            new = fn(args[0])
            return None if new is None else ((new, *args[1:]), kwargs)
        new = fn(kwargs["hidden_states"])
        if new is None:
            return None
        return args, {**kwargs, "hidden_states": new}

    return hook


def add_hook(model: Model, site: str | Site, fn: SiteFn) -> HookHandle:
    """Register `fn` on `site` and return the handle that removes exactly what this registered.

    fn(h) or fn(h, site, positions), told apart by its number of required positional parameters (1 or 3);
    any other signature is a LensError."""
    module, where = resolve(model, site)
    name = Site.parse(site).name
    handles = []
    if _takes_positions(fn, name):
        pre, fn = _with_positions(fn, name)
        handles.append(model.hf.register_forward_pre_hook(pre, with_kwargs=True))
    if where == "pre":
        handles.append(module.register_forward_pre_hook(_pre_hook(fn), with_kwargs=True))
    else:
        handles.append(module.register_forward_hook(_post_hook(fn)))
    return HookHandle(*handles)


@contextmanager
def hooks(
    model: Model, fns: Mapping[str | Site, SiteFn | Sequence[SiteFn]]
) -> Iterator[list[HookHandle]]:
    """Context manager: add every (site, fn) hook, yield the handles, remove them on exit.

    >>> with hooks(model, {"blocks.2.hook_resid_post": lambda h: h * 0.5}):
    ...     model.hf(ids)
    >>> def at_3(h, site, positions):  # absolute positions [batch, seq]; -1 at padding
    ...     return h * (positions != 3)[..., None]
    >>> with hooks(model, {"blocks.2.hook_resid_post": at_3}):
    ...     model(["a prompt", "another prompt"])
    """
    handles: list[HookHandle] = []
    try:
        for site, f in fns.items():
            for one in f if isinstance(f, Sequence) else [f]:
                handles.append(add_hook(model, site, one))
        yield handles
    finally:
        for h in handles:
            h.remove()
