"""Inputs for studies on the bundled organism: prompts, checkers, labelled traces, contrast sets.

Training-side problems use their own seeds, disjoint from the committed held-out set's seed.
"""

from __future__ import annotations

import random

from ..decoding.generate import generate
from ..models import Model
from ..organism import corpus as C


def heldout(n: int) -> tuple[list[str], list[int]]:
    """The first n committed held-out prompts and answers."""
    from ..organism import load_heldout

    rows = load_heldout()[:n]
    return [r["prompt"] for r in rows], [int(r["answer"]) for r in rows]


def checker(answers: list[int]):
    """is_correct(i, completion) for the organism's format."""

    def ok(i: int, text: str) -> bool:
        return C.parse_answer(text) == answers[i]

    return ok


def train_problems(n: int, seed: int = 4242, n_operands: int = 5) -> list[C.Problem]:
    rng = random.Random(seed)
    return [C.random_problem(rng, n_operands) for _ in range(n)]


def dev_problems(n: int, seed: int = 31337) -> tuple[list[str], list[int]]:
    """n training problems for tuning (prompts, answers): their own seed, none equal to a held-out problem."""
    from ..organism import load_heldout

    held = {r["prompt"] for r in load_heldout()}
    rng = random.Random(seed)
    prompts, answers = [], []
    while len(prompts) < n:
        p = C.random_problem(rng, 5)
        if p.prompt() not in held:
            prompts.append(p.prompt())
            answers.append(p.answer)
    return prompts, answers


def marker_contrast(n: int = 128, seed: int = 777) -> tuple[list[str], list[str]]:
    """Prompts with the think marker T and the same problems with the direct marker D."""
    probs = train_problems(n, seed)
    return [p.prompt("T") for p in probs], [p.prompt("D") for p in probs]


def labelled_traces(thinking: Model, n: int = 128, seed: int = 4242, max_new_tokens: int = 110,
                    data_parallel: bool | None = False) -> list[dict]:
    """The thinking model's greedy traces on training problems, with step spans labelled by the arithmetic.

    data_parallel: as `lens.generate`'s (default: never split); when the ranks share the decoding, every rank
    still gets every trace."""
    probs = train_problems(n, seed)
    prompts = [p.prompt() for p in probs]
    outs = generate(thinking, prompts, max_new_tokens, batch_size=64, data_parallel=data_parallel).samples
    traces = []
    for p, s in zip(prompts, outs, strict=True):
        text = p + s.text
        spans = [[st.start, st.end, st.kind] for st in C.split_steps(text)]
        if spans:
            traces.append({"prompt": p, "completion": s.text, "spans": spans})
    return traces


def direct_answers(n: int = 128, seed: int = 4242) -> list[dict]:
    """Direct-format documents for the same training problems (what the base usually writes)."""
    return [{"prompt": p.prompt(), "completion": f"A:{p.answer}"} for p in train_problems(n, seed)]
