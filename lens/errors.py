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
