"""Training problems for RL: the organism's training split, data regimes (one problem, a few, the
full set), the 1-shot RLVR paper's choice of the one problem, and the spurious-rewards paper's
incorrect labels.

A problem is a plain dict (``id``, ``prompt``, ``answer``, optional ``incorrect_answer``), the row
the trainer's data set holds and every reward reads.

* :func:`organism_train_problems` -- problems of the organism's task that are not in its held-out set.
* :func:`regime` -- ``one`` (one problem, repeated to fill each batch, as the 1-shot paper does),
  ``few`` (the first ``k``) or ``full``.
* :func:`one_shot_by_variance` -- the 1-shot RLVR paper (Wang et al. 2025, arXiv 2504.20571) ranks
  training examples by the variance of their training accuracy over a full-set run and takes the
  largest; here the history is the per-problem training accuracy of a ``lens rl`` log.
* :func:`majority_wrong_labels` -- the spurious-rewards paper's incorrect labels: a model's
  majority-vote answer of each problem, kept only where it is wrong.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence

from ..errors import LensError
from ..evaluation.tasks import Task


def organism_train_problems(n: int = 512, seed: int = 7, n_operands: int = 5) -> list[dict]:
    """``n`` organism problems (sums of ``n_operands`` two-digit numbers) outside the held-out set."""
    from ..organism import corpus as C
    from ..organism import load_heldout

    held = {r["expression"] for r in load_heldout()}
    rng = random.Random(seed)
    out: list[dict] = []
    seen: set[str] = set()
    while len(out) < n:
        p = C.random_problem(rng, n_operands)
        if p.expression in held or p.expression in seen:
            continue
        seen.add(p.expression)
        out.append({"id": f"organism-train-{len(out)}", "prompt": p.prompt(), "answer": str(p.answer)})
    return out


#: completion budget of ``lens rl train`` by default; the verifier pair's checked traces need more
DEFAULT_COMPLETION_LENGTH = 120
VERIFIER_COMPLETION_LENGTH = 220


def completion_length(spec: str) -> int:
    """Default completion budget for model ``spec``: 220 tokens for the verifier pair (``organism:verifier-*``:
    its traces with checks and corrected rewrites run to about 175 tokens, so 120 would cut the longest,
    checked ones and reward them 0), 120 for every other model."""
    from ..organism import VERIFIER_NAMES

    name = spec.split(":", 1)[1] if spec.startswith("organism:") else None
    return VERIFIER_COMPLETION_LENGTH if name in VERIFIER_NAMES else DEFAULT_COMPLETION_LENGTH


def from_tasks(tasks: Sequence[Task], prompts: Sequence[str] | None = None) -> list[dict]:
    """Problems from ``Task`` records (``prompts``: the templated prompt of each, default the question)."""
    if not tasks:
        raise LensError("the task set is empty: nothing to train on")
    out = []
    for i, t in enumerate(tasks):
        if t.answer is None or str(t.answer).strip() == "":
            raise LensError(f"task {t.id or i} has no answer: RL with a verifiable reward needs a reference "
                            "answer for every training problem")
        row = {"id": t.id or f"task-{i}", "prompt": prompts[i] if prompts is not None else t.question,
               "answer": str(t.answer)}
        if "incorrect_answer" in t.meta:
            row["incorrect_answer"] = str(t.meta["incorrect_answer"])
        out.append(row)
    return out


def regime(problems: Sequence[dict], name: str, k: int = 4, index: int | None = None) -> list[dict]:
    """The problems a run trains on: ``one`` (``problems[index or 0]``), ``few`` (the first ``k``), ``full``."""
    if not problems:
        raise LensError("no training problems")
    if name == "one":
        i = 0 if index is None else index
        if not 0 <= i < len(problems):
            raise LensError(f"problem index {i} is outside the {len(problems)} training problems")
        return [dict(problems[i])]
    if name == "few":
        if k < 1:
            raise LensError(f"--few needs k >= 1, got {k}")
        return [dict(p) for p in problems[:k]]
    if name == "full":
        return [dict(p) for p in problems]
    raise LensError(f"unknown data regime {name!r}: use one, few or full")


def repeat(problems: Sequence[dict], n_rows: int) -> list[dict]:
    """The problems cycled to ``n_rows`` rows (at least one pass over all of them)."""
    n = max(n_rows, len(problems))
    return [dict(problems[i % len(problems)]) for i in range(n)]


def one_shot_by_variance(history: Mapping[str, Sequence[float]], problems: Sequence[dict] | None = None,
                         top: int = 1) -> list[str]:
    """Problem ids with the largest variance of historical training accuracy (the 1-shot paper's pi_1 first).

    history: problem id -> its training accuracy at each logged step of a full-set run (``lens rl``'s
    ``train_accuracy_by_problem``). Ties break by id. ``problems`` restricts the choice to those ids.
    """
    allowed = None if problems is None else {p["id"] for p in problems}
    scored = [(statistics.pvariance(v) if len(v) > 1 else 0.0, pid) for pid, v in history.items()
              if v and (allowed is None or pid in allowed)]
    if not scored:
        raise LensError("no training-accuracy history to choose the one problem from: run a full-set "
                        "lens rl first (its log records each problem's accuracy) or give the problem's index")
    scored.sort(key=lambda t: (-t[0], t[1]))
    return [pid for _, pid in scored[:top]]


def majority_wrong_labels(answers: Sequence[Sequence[str | None]], problems: Sequence[dict]) -> list[dict]:
    """The problems whose majority-vote answer (over each problem's sampled ``answers``) is wrong, with it
    as ``incorrect_answer``: the spurious-rewards paper's incorrect-label data (others dropped)."""
    from ..evaluation.answers import NumericChecker

    out = []
    for row, got in zip(problems, answers, strict=True):
        votes = Counter(a for a in got if a is not None)
        if not votes:
            continue
        label = sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        if not NumericChecker()(label, row["answer"]):
            out.append({**row, "incorrect_answer": label})
    return out
