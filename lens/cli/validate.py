"""Checks of command-line values at the edge, before any model is read.

Numbers: each factory returns a typer callback, e.g. ``typer.Option(8, callback=positive)``; a value
that is not finite or out of range fails with one LensError line naming the flag, the value and the
allowed range (`lens.errors.check_number`). Texts: `valid_text` refuses strings that are not valid Unicode.
Inputs: `read_inputs` reads a JSONL file of inputs and checks every line as `Example.of` reads it,
naming the file and line of a bad one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..capture_folder import jsonl_lines as read_lines
from ..errors import LensError, check_number, check_text


def _flag(param: Any) -> str:
    """How the user names a click parameter: its "--name" flags (aliases joined by "/"), else its name."""
    opts = [o for o in getattr(param, "opts", None) or [] if o.startswith("--")]
    return "/".join(opts) if opts else f"<{getattr(param, 'name', 'value')}>"


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
           integer: bool = False):
    """A typer callback: the value (each value, for a repeated option) is finite and within [lo, hi]
    (bounds exclusive with lo_open / hi_open); None (not given) passes."""

    def callback(ctx, param, value):
        for v in value if isinstance(value, (list, tuple)) else [value]:
            check_number(_flag(param), v, lo, hi, lo_open=lo_open, hi_open=hi_open, integer=integer)
            if integer and isinstance(v, int) and v > LARGEST:
                raise LensError(f"{_flag(param)} is too large ({v}); the largest value lens takes is 2**62")
        return value

    return callback


finite = number()
LARGEST = 2**62  # integers past this overflow the C longs torch and itertools use
positive = number(1, integer=True)  # counts and sizes: 1, 2, ...
non_negative = number(0, integer=True)  # indexes, seeds, counts where 0 means "none"
positive_float = number(0, lo_open=True)  # rates, scales that must be > 0
non_negative_float = number(0)  # coefficients, thresholds
fraction = number(0, 1)  # shares and probabilities in [0, 1]


def choice(*allowed: str):
    """A typer callback: the value is one of `allowed` (None passes)."""

    def callback(ctx, param, value):
        if value is not None and value not in allowed:
            raise LensError(f"{_flag(param)} must be one of {', '.join(allowed)}, got {value!r}")
        return value

    return callback


def valid_text(ctx, param, value):
    """A typer callback: each string is valid Unicode (no lone surrogate, no undecodable byte)."""
    for i, v in enumerate(value if isinstance(value, (list, tuple)) else [value]):
        if v is not None:
            check_text(_flag(param) + (f" #{i + 1}" if isinstance(value, (list, tuple)) and len(value) > 1 else ""), v)
    return value


def check_layer(flag: str, layer: int | None, n_layers: int) -> None:
    """`layer` (None passes) is a layer of a model with `n_layers` layers."""
    check_number(flag, layer, 0, n_layers - 1, integer=True)


def iter_inputs(path: Path, what: str = "input file"):
    """The inputs of a JSONL file (strings, {"text"}, {"prompt", "completion"}, {"input_ids"}), lazily,
    each checked as `Example.of` reads it; a bad line fails naming `path:line`."""
    from ..selection import Example

    for n, item in read_lines(path, what):
        try:
            Example.of(item)
        except LensError as e:
            raise LensError(f"{path}:{n}: {e}") from None
        yield item


def read_inputs(path: Path, what: str = "input file") -> list:
    """Every input of a JSONL file (see `iter_inputs`); an empty file fails too."""
    items = list(iter_inputs(path, what))
    if not items:
        raise LensError(f"{what} {path} is empty; write one JSON input per line")
    return items


def check_fits(model, texts: list[str], what: str = "input", extra: int = 0, extra_flag: str = "") -> None:
    """Each text, tokenised as the model reads it, plus `extra` positions (tokens still to generate, named by
    `extra_flag`) fits the model's context; else a LensError naming the text (`what` #i) and both lengths."""
    from ..batching import context_length

    limit = context_length(model)
    if limit is None or not texts:
        return
    for i, ids in enumerate(model.tokenizer(list(texts), add_special_tokens=True)["input_ids"]):
        if len(ids) + extra > limit:
            more = f" plus {extra_flag} {extra}" if extra else ""
            raise LensError(f"{what} #{i + 1} is {len(ids)} tokens{more}, more than the {limit} positions "
                            f"{model.spec} reads; shorten it" + (f" or lower {extra_flag}" if extra else ""))
