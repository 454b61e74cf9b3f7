"""The one exception type `lens` raises for bad input: it names the problem and the fix."""

from __future__ import annotations


class LensError(ValueError):
    """Bad input or an unusable artifact. The message says what is wrong and how to fix it.

    The CLI prints it as one line and exits non-zero; library callers can catch it.
    """


def closest(name: str, choices: list[str], n: int = 3) -> list[str]:
    """The `n` valid names nearest to `name` (for "did you mean" hints)."""
    import difflib

    return difflib.get_close_matches(name, choices, n=n, cutoff=0.3)


def _bounds(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool, integer: bool) -> str:
    """The allowed range in words: "at least 1", "> 0", "between 0 and 1", "in (0, 1]"."""
    if lo is not None and hi is not None:
        if not lo_open and not hi_open:
            return f"between {lo:g} and {hi:g}"
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        if integer and not lo_open:
            return "a positive integer" if lo == 1 else f"at least {lo:g}"
        return f"> {lo:g}" if lo_open else f">= {lo:g}"
    if hi is not None:
        return f"< {hi:g}" if hi_open else f"<= {hi:g}"
    return "any finite number"


def check_number(name: str, value: float | int | None, lo: float | None = None, hi: float | None = None, *,
                 lo_open: bool = False, hi_open: bool = False, integer: bool = False) -> None:
    """Raise a LensError unless `value` is a finite number within the bounds (None passes: "not given").

    name: how the user wrote the value (a flag such as "--lr", or a field name), named in the message
    with the value and the allowed range; lo/hi: bounds, inclusive unless lo_open/hi_open;
    integer: the value must be an integer (numpy integers too; bools are refused).
    """
    import math
    import numbers

    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
            integer and not isinstance(value, numbers.Integral)):
        kind = "an integer" if integer else "a number"
        raise LensError(f"{name} must be {kind}, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        bounds = "" if lo is None and hi is None else f" ({_bounds(lo, hi, lo_open, hi_open, integer)})"
        raise LensError(f"{name} must be a finite number{bounds}, got {value}")
    below = lo is not None and (value <= lo if lo_open else value < lo)
    above = hi is not None and (value >= hi if hi_open else value > hi)
    if below or above:
        raise LensError(f"{name} must be {_bounds(lo, hi, lo_open, hi_open, integer)}, got {value:g}")


def check_text(name: str, value: object) -> str:
    """`value` if it is a string of valid Unicode; else a LensError naming `name`, the type or the bad character.

    A lone surrogate (U+D800..U+DFFF) comes from bytes that were not UTF-8 (a command-line argument or
    file in another encoding; Python keeps such bytes as U+DC80..U+DCFF) or from a JSON "\\ud800" escape;
    no tokenizer can read it.
    """
    if not isinstance(value, str):
        raise LensError(f"{name} must be a string, got {type(value).__name__} {str(value)[:40]!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        ch = ord(value[e.start])
        what = (f"the byte 0x{ch - 0xDC00:02x}, which is not UTF-8" if 0xDC80 <= ch <= 0xDCFF
                else f"a lone surrogate U+{ch:04X}, which is not valid Unicode")
        raise LensError(f"{name} holds {what} (character {e.start}); pass UTF-8 text") from None
    return value
