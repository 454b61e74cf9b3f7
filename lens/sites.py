"""Named residual-stream sites (TransformerLens names) and their Hugging Face modules.

`blocks.{L}.hook_resid_pre`  input of decoder layer L (the residual before the block)
`blocks.{L}.hook_resid_post` output of decoder layer L (before the final norm for the last layer)
`blocks.{L}.hook_attn_out`   the attention contribution added to the residual in layer L
`blocks.{L}.hook_mlp_out`    the MLP contribution added to the residual in layer L
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .errors import LensError, closest
from .families import family_of

if TYPE_CHECKING:
    from .models import Model

KINDS = ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out")
_SITE_RE = re.compile(r"^blocks\.(\d+)\.(\w+)$")


@dataclass(frozen=True, order=True)
class Site:
    """One place in the residual stream: a layer index and a hook kind."""

    layer: int
    kind: str = "hook_resid_post"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise LensError(f"unknown hook kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.layer < 0:
            raise LensError(f"layer {self.layer} is negative; layers count from 0")

    @property
    def name(self) -> str:
        return f"blocks.{self.layer}.{self.kind}"

    @staticmethod
    def kind_name(kind: str) -> str:
        """A hook kind with or without its ``hook_`` prefix (``resid_post`` -> ``hook_resid_post``), checked."""
        full = kind if kind.startswith("hook_") else f"hook_{kind}"
        if full not in KINDS:
            near = closest(kind, [k[5:] for k in KINDS])
            hint = f"; did you mean {near[0]}?" if near else ""
            raise LensError(f"unknown hook kind {kind!r}{hint} Use one of {', '.join(k[5:] for k in KINDS)}")
        return full

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, name: str | Site | tuple[str, int]) -> Site:
        """Parse `blocks.{L}.hook_*`; also accepts `resid_post.L` style shorthands like `resid_post.3`, and a
        (kind, layer) pair such as ``("resid_post", 3)`` (so ``acts["resid_post", 3]`` reads a site)."""
        if isinstance(name, Site):
            return name
        if isinstance(name, tuple):
            if len(name) != 2 or not isinstance(name[0], str) or isinstance(name[1], bool) \
                    or not isinstance(name[1], int):
                raise LensError(f"cannot read site {name!r}; a pair is (kind, layer), e.g. ('resid_post', 3)")
            kind = cls.kind_name(name[0])
            return cls(name[1], kind)
        text = name.strip()
        m = _SITE_RE.match(text)
        if m is None:
            short = re.match(r"^(resid_pre|resid_post|attn_out|mlp_out)\.(\d+)$", text)
            if short is None:
                raise LensError(
                    f"cannot parse site {name!r}; write it as blocks.<layer>.<kind>, e.g. blocks.2.hook_resid_post"
                )
            return cls(int(short.group(2)), "hook_" + short.group(1))
        layer, kind = int(m.group(1)), m.group(2)
        if kind not in KINDS:
            near = closest(kind, list(KINDS))
            hint = f"; did you mean {near[0]}?" if near else ""
            raise LensError(f"unknown site {name!r}{hint} Valid kinds: {', '.join(KINDS)}")
        return cls(layer, kind)


def all_sites(model: Model, kind: str = "hook_resid_post") -> list[Site]:
    """Every site of one kind, layer 0 to n_layers - 1."""
    return [Site(layer, kind) for layer in range(model.n_layers)]


def site_names(model: Model) -> list[str]:
    """Every valid site name of a model (for error messages and listings)."""
    fam = family_of(model.family)
    kinds = [k for k in KINDS if not (k == "hook_attn_out" and fam.attn_out is None)]
    kinds = [k for k in kinds if not (k == "hook_mlp_out" and fam.mlp_out is None)]
    return [Site(layer, k).name for layer in range(model.n_layers) for k in kinds]


def walk(root: Any, dotted: str) -> Any:
    """The object at a dotted path below `root` ("model.layers.3": attributes, digits index), on an HF model or
    on nnsight's envoys of one."""
    obj = root
    for part in dotted.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def decoder_layers(model: Model) -> torch.nn.ModuleList:
    """The model's list of decoder layers."""
    return walk(model.hf, family_of(model.family).layers)


def site_path(model: Model, site: str | Site) -> tuple[str, str]:
    """(the dotted path of the module a site lives on, from the HF model, e.g. "model.layers.3.mlp"; "pre" when
    the site is read at that module's input, "post" at its output). Walked on the HF model by `resolve` and on
    nnsight's envoys by the nnsight backend.

    Raises a LensError naming the valid range for a layer out of range, and the nearest valid
    names for an unknown site.
    """
    try:
        s = Site.parse(site)
    except LensError as e:
        near = closest(str(site), site_names(model))
        raise LensError(f"{e}{' Nearest valid: ' + ', '.join(near) if near else ''}") from None
    if s.layer >= model.n_layers:
        raise LensError(
            f"layer {s.layer} is out of range for {model.spec} ({model.n_layers} layers: 0..{model.n_layers - 1})"
        )
    fam = family_of(model.family)
    layer = f"{fam.layers}.{s.layer}"
    if s.kind in ("hook_resid_pre", "hook_resid_post"):
        return layer, "pre" if s.kind == "hook_resid_pre" else "post"
    sub = fam.attn_out if s.kind == "hook_attn_out" else fam.mlp_out
    if sub is None:
        raise LensError(f"family {fam.name} does not expose {s.kind}; use hook_resid_pre/hook_resid_post")
    return f"{layer}.{sub}", "post"


def resolve(model: Model, site: str | Site) -> tuple[torch.nn.Module, str]:
    """The module a site lives on and whether it is read at its input ("pre") or output ("post").

    Raises a LensError naming the valid range for a layer out of range, and the nearest valid
    names for an unknown site.
    """
    path, side = site_path(model, site)
    return walk(model.hf, path), side
