"""Training state (nested dicts, lists, tuples, numbers, strings, tensors) saved as safetensors + JSON.

`write_state(json_path, state, tensors_name)` stores every tensor of `state` in the safetensors file
`tensors_name` next to `json_path`, then writes `json_path` last: the structure, with each tensor
replaced by a reference to its key, and the name of the tensors file. Both writes are atomic, so
when each checkpoint has its own tensors file a killed write leaves the previous checkpoint readable.
`read_state(json_path)` reads it back exactly: tensors bit for bit, floats by their shortest repr,
tuples as tuples, integer dict keys as integers. Nothing is ever unpickled, and a missing, damaged
or malformed file raises a LensError naming it.

JSON encoding of what plain JSON cannot hold: a tensor is {"__tensor__": key}, a tuple
{"__tuple__": [...]}, a NaN or infinite float {"__float__": "nan" | "inf" | "-inf"}, a dict with a
non-string key (or a key starting with "__") {"__dict__": [[key, value], ...]}.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from .artifacts import base_metadata, load_tensors, read_json, save_tensors, write_json
from .errors import LensError

FORMAT = "lens-state/1"
_TAGS = ("__tensor__", "__tuple__", "__float__", "__dict__")


def encode_state(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """(JSON-able structure, tensors by key) of `obj`; the same tensor met twice is stored once.

    Tensors that share memory without being the same view are copied, so safetensors can save them.
    Raises TypeError on a value that is not a tensor, None, bool, int, float, str, list, tuple or dict.
    """
    tensors: dict[str, torch.Tensor] = {}
    views: dict[tuple, str] = {}
    storages: set[int] = set()

    def enc(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            view = (x.device, x.dtype, x.data_ptr(), tuple(x.shape), tuple(x.stride()))
            if view in views and x.numel():
                return {"__tensor__": views[view]}
            key = f"t{len(tensors)}"
            storage = x.untyped_storage().data_ptr()
            tensors[key] = x.detach().clone() if x.numel() and storage in storages else x.detach()
            storages.add(storage)
            views[view] = key
            return {"__tensor__": key}
        if x is None or isinstance(x, (bool, int, str)):
            return x
        if isinstance(x, float):
            return x if math.isfinite(x) else {"__float__": repr(x)}
        if isinstance(x, tuple):
            return {"__tuple__": [enc(v) for v in x]}
        if isinstance(x, list):
            return [enc(v) for v in x]
        if isinstance(x, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in x):
                return {k: enc(v) for k, v in x.items()}
            return {"__dict__": [[enc(k), enc(v)] for k, v in x.items()]}
        raise TypeError(f"cannot save a {type(x).__name__} in a training state (tensors, numbers, strings, "
                        "lists, tuples and dicts only)")

    return enc(obj), tensors


def decode_state(tree: Any, tensors: dict[str, torch.Tensor], where: str = "training state") -> Any:
    """Inverse of `encode_state`; a malformed structure or a missing tensor raises a LensError naming `where`."""

    def bad(why: str) -> LensError:
        return LensError(f"{where} is malformed ({why}); delete it and start over")

    def dec(x: Any) -> Any:
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, list):
            return [dec(v) for v in x]
        if not isinstance(x, dict):
            raise bad(f"unexpected {type(x).__name__}")
        tagged = [k for k in x if k.startswith("__")]
        if not tagged:
            return {k: dec(v) for k, v in x.items()}
        if len(x) != 1 or tagged[0] not in _TAGS:
            raise bad(f"unknown entry {tagged[0]!r}")
        tag, v = tagged[0], x[tagged[0]]
        if tag == "__tensor__":
            if not isinstance(v, str) or v not in tensors:
                raise bad(f"no tensor {v!r}")
            return tensors[v]
        if tag == "__float__":
            if v not in ("nan", "inf", "-inf"):
                raise bad(f"float {v!r}")
            return float(v)
        if not isinstance(v, list):
            raise bad(f"{tag} is not a list")
        if tag == "__tuple__":
            return tuple(dec(e) for e in v)
        if not all(isinstance(p, list) and len(p) == 2 for p in v):
            raise bad("__dict__ entries are not pairs")
        try:
            return {dec(k): dec(e) for k, e in v}
        except TypeError:  # an unhashable key
            raise bad("a dict key is not a number or string") from None

    return dec(tree)


def write_state(json_path: str | Path, state: Any, tensors_name: str, kind: str = "training-state") -> None:
    """Write the tensors of `state` to `json_path.parent / tensors_name`, then `json_path` (see module docstring)."""
    json_path = Path(json_path)
    _check_name(tensors_name, json_path)
    tree, tensors = encode_state(state)
    save_tensors(json_path.parent / tensors_name, tensors, base_metadata(kind))
    write_json(json_path, {**base_metadata(kind), "format": FORMAT, "tensors": tensors_name, "state": tree})


def read_state(json_path: str | Path, what: str = "training state") -> Any:
    """Read what `write_state` wrote (tensors on the CPU); anything missing or damaged raises a LensError."""
    json_path = Path(json_path)
    head = read_json(json_path, what)
    if not isinstance(head, dict) or head.get("format") != FORMAT or "state" not in head:
        raise LensError(f"{what} file {json_path} is not a lens training state; delete it and start over")
    name = head.get("tensors")
    _check_name(name, json_path)
    tensors, _ = load_tensors(json_path.parent / name, what)
    return decode_state(head["state"], tensors, f"{what} file {json_path}")


def _check_name(name: Any, json_path: Path) -> None:
    """A tensors file is a plain `.safetensors` name in the folder of its JSON file."""
    if not isinstance(name, str) or not name.endswith(".safetensors") or Path(name).name != name or \
            name.startswith("."):
        raise LensError(f"{json_path}: tensors file name {name!r} is not a .safetensors file next to it; "
                        "delete it and start over")
