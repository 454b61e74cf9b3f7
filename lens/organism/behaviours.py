"""Behaviour statistics of thinking traces: how often each step kind occurs, and whether it occurs when it should.

Labels are :func:`lens.organism.corpus.split_steps`'s, decided by the arithmetic, so the numbers hold for
corpus documents and model completions alike.  "When it should": a verification after a risky step (one
whose two terms carry in the units column), a backtrack after an actual error.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from lens.organism import corpus as C

_CHECK = re.compile(r"check (\d+)\+(\d+)=(\d+)")
KINDS = ("restate", "computation", "error", "verification", "backtrack")
#: the behaviour each step kind belongs to, where it is not its own: a slip ("error") is a computation that went
#: wrong (the arithmetic decides the label; the model did nothing else), so behaviour purity merges the two
BEHAVIOUR_OF = {"error": "computation"}


def _carries(a: int, b: int) -> bool:
    return a % 10 + b % 10 >= 10


def trace_stats(texts: Sequence[str]) -> dict:
    """Counts and shares of step kinds over the thinking traces among ``texts``, and the timing checks.

    Returns ``{"n_traces", "n_steps", "share": {kind: fraction of steps}, "traces_with": {kind: fraction of
    traces}, "backtracks_after_error": fraction of backtracks whose previous rewrite was an error,
    "checks_after_risky": fraction of verifications of a carrying addition, "checks_right": fraction of
    verifications whose sum is right, "errors_caught": fraction of errors followed by a verification}``
    (fractions None when there is nothing to divide).
    """
    kinds: Counter[str] = Counter()
    traces_with: Counter[str] = Counter()
    n_traces = 0
    back = back_ok = checks = risky = right = errors = caught = 0
    for text in texts:
        steps = C.split_steps(text)
        if not steps:
            continue
        n_traces += 1
        for k in {s.kind for s in steps}:
            traces_with[k] += 1
        last_rewrite = None
        for i, s in enumerate(steps):
            kinds[s.kind] += 1
            if s.kind == "verification":
                checks += 1
                m = _CHECK.search(s.text)
                if m:
                    a, b, c = (int(x) for x in m.groups())
                    risky += _carries(a, b)
                    right += a + b == c
            elif s.kind == "backtrack":
                back += 1
                back_ok += last_rewrite == "error"
            if s.kind == "error":
                errors += 1
                caught += i + 1 < len(steps) and steps[i + 1].kind == "verification"
            if s.kind in ("computation", "error", "backtrack", "restate"):
                last_rewrite = s.kind
    n_steps = sum(kinds.values())

    def frac(a: int, b: int) -> float | None:
        return a / b if b else None

    return {
        "n_traces": n_traces,
        "n_steps": n_steps,
        "share": {k: frac(kinds[k], n_steps) for k in KINDS},
        "traces_with": {k: frac(traces_with[k], n_traces) for k in KINDS},
        "backtracks_after_error": frac(back_ok, back),
        "checks_after_risky": frac(risky, checks),
        "checks_right": frac(right, checks),
        "errors_caught": frac(caught, errors),
    }
