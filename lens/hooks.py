"""Scoped hooks on named sites: added by a context manager, removed exactly on exit.

A site function receives the residual-stream tensor `[batch, seq, d_model]` of one forward
call and returns a replacement tensor, or None to leave it unchanged. Only the handles this
module created are removed (also on exceptions); hooks a user registered on the same modules
are never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch.utils.hooks import RemovableHandle

from .sites import Site, resolve

if TYPE_CHECKING:
    from .models import Model

SiteFn = Callable[[Float[torch.Tensor, "batch seq d_model"]], "torch.Tensor | None"]


def _post_hook(fn: SiteFn):
    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        new = fn(hidden)
        if new is None:
            return None
        if isinstance(output, tuple):
            return (new, *output[1:])
        return new

    return hook


def _pre_hook(fn: SiteFn):
    def hook(module, args, kwargs):
        if args:
            new = fn(args[0])
            return None if new is None else ((new, *args[1:]), kwargs)
        new = fn(kwargs["hidden_states"])
        if new is None:
            return None
        return args, {**kwargs, "hidden_states": new}

    return hook


def add_hook(model: Model, site: str | Site, fn: SiteFn) -> RemovableHandle:
    """Register `fn` on `site` and return the handle that removes exactly this hook."""
    module, where = resolve(model, site)
    if where == "pre":
        return module.register_forward_pre_hook(_pre_hook(fn), with_kwargs=True)
    return module.register_forward_hook(_post_hook(fn))


@contextmanager
def hooks(
    model: Model, fns: Mapping[str | Site, SiteFn | Sequence[SiteFn]]
) -> Iterator[list[RemovableHandle]]:
    """Context manager: add every (site, fn) hook, yield the handles, remove them on exit.

    >>> with hooks(model, {"blocks.2.hook_resid_post": lambda h: h * 0.5}):
    ...     model.hf(ids)
    """
    handles: list[RemovableHandle] = []
    try:
        for site, f in fns.items():
            for one in f if isinstance(f, Sequence) else [f]:
                handles.append(add_hook(model, site, one))
        yield handles
    finally:
        for h in handles:
            h.remove()
