"""Answer extraction and checking.

An extractor maps a completion text to an :class:`Extracted` answer: its normalised value and the
character span ``text[start:end]`` it was read from (CoT-decoding scores exactly the tokens of that
span). Extractors:

* :func:`organism_answer` -- ``A:<int>`` after an optional ``<think>...</think>`` block (the bundled
  organism's format; an unclosed think block has no answer);
* :func:`last_number` -- the last number in the text (``1,234``, ``-3.5``, ``3/4``);
* :func:`boxed` -- the content of the last ``\\boxed{...}`` (nested braces allowed);
* :func:`gsm8k_answer` -- the number after ``####``;
* ``"auto"`` -- organism format if present, else ``\\boxed{}``, else ``####``, else the last number.

Checking: :func:`numbers_equal` (relative and absolute tolerance; fractions, ``\\frac``, commas,
``$`` and ``%`` understood), :class:`NumericChecker` (numeric when both sides parse, normalised
string equality otherwise), and the :class:`Checker` protocol for anything else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..errors import LensError, closest


@dataclass(frozen=True)
class Extracted:
    """An answer read from a text: ``value`` (normalised string) from ``text[start:end]``."""

    value: str
    start: int
    end: int


Extractor = Callable[[str], "Extracted | None"]

_ORGANISM = re.compile(r"A:\s*(-?\d+)")
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?")
_GSM8K = re.compile(r"####\s*(-?[\d,]*\.?\d+)")


def organism_answer(text: str, think_open: str = "<think>", think_close: str = "</think>") -> Extracted | None:
    """``A:<int>`` after the (optional) think block; None if the block is unclosed or no answer follows."""
    offset = 0
    if think_open in text:
        close = text.find(think_close, text.index(think_open))
        if close < 0:
            return None
        offset = close + len(think_close)
    m = _ORGANISM.search(text, offset)
    if not m:
        return None
    return Extracted(str(int(m.group(1))), m.start(1), m.end(1))


def last_number(text: str) -> Extracted | None:
    """The last number of ``text`` (thousands separators dropped from the value)."""
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    return Extracted(normalise(m.group(0)), m.start(), m.end())


def boxed(text: str) -> Extracted | None:
    r"""The content of the last ``\boxed{...}`` (or ``\fbox{...}``), braces balanced."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    start = starts[-1]
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                inner = text[start:i]
                lead = len(inner) - len(inner.lstrip())
                trail = len(inner.rstrip())
                return Extracted(normalise(inner), start + lead, start + trail)
    return None


def gsm8k_answer(text: str) -> Extracted | None:
    """The number after ``####`` (GSM8K's reference format)."""
    matches = list(_GSM8K.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    return Extracted(normalise(m.group(1)), m.start(1), m.end(1))


def auto_answer(text: str) -> Extracted | None:
    """Organism format, else ``\\boxed{}``, else ``####``, else the last number."""
    for f in (organism_answer, boxed, gsm8k_answer):
        got = f(text)
        if got is not None:
            return got
    if "<think>" in text and "</think>" not in text:
        return None  # an unfinished trace has no answer yet
    return last_number(text)


EXTRACTORS: dict[str, Extractor] = {
    "auto": auto_answer,
    "organism": organism_answer,
    "last_number": last_number,
    "boxed": boxed,
    "gsm8k": gsm8k_answer,
}


def get_extractor(how: str | Extractor) -> Extractor:
    """An extractor by name (``auto``, ``organism``, ``last_number``, ``boxed``, ``gsm8k``) or the callable itself."""
    if callable(how):
        return how
    if how not in EXTRACTORS:
        hint = closest(how, list(EXTRACTORS))
        raise LensError(
            f"unknown answer extractor {how!r}; choose one of {sorted(EXTRACTORS)}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + " or pass a function text -> Extracted | None"
        )
    return EXTRACTORS[how]


def extract_answer(text: str, how: str | Extractor = "auto") -> str | None:
    """The normalised answer string of ``text`` (None if none)."""
    got = get_extractor(how)(text)
    return None if got is None else got.value


# ---------------------------------------------------------------------------- normalising and numbers

_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")


def normalise(s: str) -> str:
    """Canonical answer string.

    Drops spaces, ``$``, ``\\!``, ``\\left``/``\\right``, the ``\\text{}`` wrapper, a trailing dot and
    thousands separators.
    """
    s = s.strip()
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\!", "").replace("\\,", "").replace("\\left", "").replace("\\right", "")
    s = s.replace("$", "").replace(" ", "")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    return s.rstrip(".")


def to_number(s: str | int | float | None) -> float | None:
    """The number a string denotes (``1,234``, ``-3.5``, ``3/4``, ``\\frac{3}{4}``, ``50%`` -> 50), or None."""
    if s is None:
        return None
    if isinstance(s, (int, float)):
        return float(s)
    t = normalise(str(s)).rstrip("%").replace("^\\circ", "").replace("^{\\circ}", "")
    m = _FRAC.fullmatch(t)
    if m:
        t = f"{m.group(1)}/{m.group(2)}"
    t = t.replace(",", "") if re.fullmatch(r"-?[\d,]+(\.\d+)?", t) else t
    try:
        if re.fullmatch(r"-?\d+(\.\d+)?/-?\d+(\.\d+)?", t):
            a, b = t.split("/")
            return float(a) / float(b) if float(b) != 0 else None
        value = float(t)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def numbers_equal(a: str | float | None, b: str | float | None, rel_tol: float = 1e-6, abs_tol: float = 1e-6) -> bool:
    """Whether ``a`` and ``b`` denote the same number within the tolerances (False if either is not a number)."""
    x, y = to_number(a), to_number(b)
    if x is None or y is None:
        return False
    return math.isclose(x, y, rel_tol=rel_tol, abs_tol=abs_tol)


class Checker(Protocol):
    """Decides whether a predicted answer (None: nothing extracted) matches the reference."""

    def __call__(self, predicted: str | None, reference: str | int | float) -> bool: ...


@dataclass(frozen=True)
class NumericChecker:
    """Numeric equality within tolerance when both sides are numbers, else normalised string equality."""

    rel_tol: float = 1e-6
    abs_tol: float = 1e-6

    def __call__(self, predicted: str | None, reference: str | int | float) -> bool:
        if predicted is None:
            return False
        if to_number(predicted) is not None and to_number(reference) is not None:
            return numbers_equal(predicted, reference, self.rel_tol, self.abs_tol)
        return normalise(str(predicted)) == normalise(str(reference))


def check(
    text: str,
    reference: str | int | float,
    extractor: str | Extractor = "auto",
    checker: Checker | None = None,
) -> bool:
    """Whether the answer extracted from ``text`` matches ``reference``."""
    return (checker or NumericChecker())(extract_answer(text, extractor), reference)
