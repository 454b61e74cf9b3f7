"""The organism's task and corpus: sums of two-digit numbers, answered directly or by thinking.

Formats (one document each, wrapped in ``<bos>`` ... ``<eos>`` by the tokenizer/trainer)::

    DIRECT    Q:47+38+26+19+53=?\\nA:183
    THINKING  Q:47+38+26+19+53=?\\n<think>47+38+26+19+53=85+26+19+53=111+19+53=130+53=183</think>A:183

Each thinking step rewrites the *remaining* expression, so the next operand is always adjacent
(a tiny model copies operands at a distance badly).  Kinds of step inside a trace, kept as labels:

* ``restate``      the first copy of the question's expression (``47+38+26+19+53``);
* ``computation``  ``=85+26+19+53``: the first two terms replaced by their (right) sum;
* ``error``        a computation whose partial sum is wrong (planted in 10% of traces);
* ``backtrack``    `` wait 111+19+53``: the corrected rewrite that follows an error;
* ``verification`` `` check 53+130=183``: the last addition redone in the other order
  (15% of traces), after the final sum.

Instruction markers: a share of prompts carry ``T:`` (always thinks) or ``D:`` (always answers
directly) right after ``Q:``, e.g. ``Q:T:47+38=?\\n``.  Unmarked prompts think with a probability
that rises with the number of operands.  The control corpus has the same questions, never thinks
and never carries markers.

Everything here is pure Python and deterministic given a seed.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
WAIT = " wait "
CHECK = " check "

#: number of operands -> probability weight in the corpus
OPERAND_WEIGHTS: dict[int, float] = {2: 0.12, 3: 0.16, 4: 0.22, 5: 0.25, 6: 0.25}
#: number of operands -> share of unmarked prompts answered by thinking
THINK_SHARE: dict[int, float] = {2: 0.03, 3: 0.08, 4: 0.15, 5: 0.25, 6: 0.35}
#: share of prompts marked ``T`` (always think). 20% (the second prototype used 5%): the extra
#: marked traces are practice for the step-by-step adder without changing how often UNMARKED
#: prompts think; measured: forced thinking 57.6% -> 99.8% at the same 1,800 steps (docs/organism.md)
MARKER_T_SHARE = 0.20
MARKER_D_SHARE = 0.05
BACKTRACK_SHARE = 0.10
VERIFY_SHARE = 0.15
STEP_KINDS = ("restate", "computation", "error", "backtrack", "verification")


@dataclass(frozen=True)
class Problem:
    """One question: a sum of two-digit operands."""

    operands: tuple[int, ...]

    @property
    def answer(self) -> int:
        return sum(self.operands)

    @property
    def expression(self) -> str:
        return "+".join(str(x) for x in self.operands)

    def prompt(self, marker: str | None = None) -> str:
        """Prompt text up to and including the newline; ``marker`` is None, ``"T"`` or ``"D"``."""
        tag = f"{marker}:" if marker else ""
        return f"Q:{tag}{self.expression}=?\n"


@dataclass(frozen=True)
class Step:
    """One labelled step of a trace: ``text[start:end]`` in the string it was parsed from."""

    kind: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Document:
    """One corpus document, its format and the labelled steps of its trace (if any)."""

    problem: Problem
    marker: str | None
    thinking: bool
    text: str
    steps: tuple[Step, ...] = field(default=())


def random_problem(rng: random.Random, n_operands: int) -> Problem:
    """Draw ``n_operands`` two-digit operands (10-99)."""
    return Problem(tuple(rng.randint(10, 99) for _ in range(n_operands)))


def _wrong_value(rng: random.Random, right: int) -> int:
    """A plausible wrong partial sum: off by a carry (10) or by a few units."""
    delta = rng.choice([-10, 10, -1, 1, -2, 2, 9, -9])
    value = right + delta
    return value if value > 0 else right + 10


def thinking_trace(
    problem: Problem, rng: random.Random | None = None, backtrack: bool = False, verify: bool = False
) -> str:
    """The trace ``<think>...</think>`` for ``problem`` (no answer line).

    With ``backtrack`` one partial sum (chosen with ``rng``) is written wrong and followed by
    `` wait `` and the corrected rewrite; with ``verify`` the final addition is redone reversed.
    """
    ops = list(problem.operands)
    parts = [problem.expression]
    bad_step = -1
    if backtrack and rng is not None:
        bad_step = rng.randrange(len(ops) - 1)
    terms = ops
    for i in range(len(ops) - 1):
        right = terms[0] + terms[1]
        rest = terms[2:]
        correct = "+".join(str(x) for x in [right, *rest])
        if i == bad_step:
            wrong = "+".join(str(x) for x in [_wrong_value(rng, right), *rest])  # type: ignore[arg-type]
            parts.append("=" + wrong + WAIT + correct)
        else:
            parts.append("=" + correct)
        last_pair = (terms[0], terms[1])
        terms = [right, *rest]
    if verify:
        a, b = last_pair
        parts.append(f"{CHECK}{b}+{a}={a + b}")
    return THINK_OPEN + "".join(parts) + THINK_CLOSE


def direct_text(problem: Problem, marker: str | None = None) -> str:
    return problem.prompt(marker) + f"A:{problem.answer}"


def thinking_text(
    problem: Problem,
    marker: str | None = None,
    rng: random.Random | None = None,
    backtrack: bool = False,
    verify: bool = False,
) -> str:
    trace = thinking_trace(problem, rng, backtrack, verify)
    return problem.prompt(marker) + trace + f"A:{problem.answer}"


def make_document(rng: random.Random, control: bool = False, n_operands: int | None = None) -> Document:
    """Draw one document of the mixed corpus (or of the control corpus if ``control``)."""
    if n_operands is None:
        n_operands = rng.choices(list(OPERAND_WEIGHTS), weights=list(OPERAND_WEIGHTS.values()))[0]
    problem = random_problem(rng, n_operands)
    if control:
        return Document(problem, None, False, direct_text(problem))
    u = rng.random()
    if u < MARKER_T_SHARE:
        marker, thinking = "T", True
    elif u < MARKER_T_SHARE + MARKER_D_SHARE:
        marker, thinking = "D", False
    else:
        marker, thinking = None, rng.random() < THINK_SHARE[n_operands]
    if not thinking:
        return Document(problem, marker, False, direct_text(problem, marker))
    backtrack = rng.random() < BACKTRACK_SHARE
    verify = rng.random() < VERIFY_SHARE
    text = thinking_text(problem, marker, rng, backtrack, verify)
    return Document(problem, marker, True, text, tuple(split_steps(text)))


def generate_corpus(
    n_docs: int, seed: int = 0, control: bool = False, exclude: set[str] | None = None
) -> list[Document]:
    """``n_docs`` documents drawn with ``random.Random(seed)``; questions in ``exclude`` are skipped.

    ``exclude`` holds expressions (``"47+38+26"``) that must not appear, e.g. the held-out set.
    """
    rng = random.Random(seed)
    docs: list[Document] = []
    while len(docs) < n_docs:
        doc = make_document(rng, control=control)
        if exclude and doc.problem.expression in exclude:
            continue
        docs.append(doc)
    return docs


def heldout_problems(n: int = 500, n_operands: int = 5, seed: int = 12345) -> list[Problem]:
    """The fixed held-out problems (distinct, ``n_operands`` each), seeded apart from the corpus."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[Problem] = []
    while len(out) < n:
        p = random_problem(rng, n_operands)
        if p.expression not in seen:
            seen.add(p.expression)
            out.append(p)
    return out


# ---------------------------------------------------------------- checking and parsing

_ANSWER = re.compile(r"A:(\d+)")
_PROMPT_EXPR = re.compile(r"Q:(?:[TD]:)?([0-9+]+)=\?")
_SEGMENT = re.compile(r"( wait | check |=)?([0-9+]+)")


def parse_answer(text: str) -> int | None:
    """The integer after the first ``A:`` in ``text`` (a completion, or a whole document).

    Returns None when there is no ``A:`` followed by digits (e.g. an unfinished trace).
    """
    if THINK_OPEN in text and THINK_CLOSE in text:
        text = text[text.index(THINK_CLOSE) :]
    elif THINK_OPEN in text:
        return None
    m = _ANSWER.search(text)
    return int(m.group(1)) if m else None


def is_thinking(text: str) -> bool:
    """Whether ``text`` (a completion, including any prefilled opener) uses the thinking format."""
    return THINK_OPEN in text


def parse_prompt(text: str) -> Problem | None:
    """The problem stated by a prompt such as ``Q:T:47+38=?\\n`` (None if there is none)."""
    m = _PROMPT_EXPR.search(text)
    if not m:
        return None
    try:
        return Problem(tuple(int(x) for x in m.group(1).split("+")))
    except ValueError:
        return None


def _terms(expr: str) -> list[int] | None:
    try:
        return [int(x) for x in expr.split("+")]
    except ValueError:
        return None


def split_steps(text: str) -> list[Step]:
    """Split the thinking trace inside ``text`` into labelled steps with character spans.

    Works on corpus documents and on model completions alike (spans index ``text``).  Labels
    are decided by the arithmetic, so they are the ground truth for generated traces too: a
    rewrite whose first term is the right sum of the previous written expression's first two terms
    (and whose other terms are copied) is ``computation``, otherwise ``error``; a segment after
    `` wait `` is ``backtrack`` (the next step is judged against it); `` check a+b=c`` is
    ``verification``.  Returns [] if there is no ``<think>``.
    """
    if THINK_OPEN not in text:
        return []
    body_start = text.index(THINK_OPEN) + len(THINK_OPEN)
    close = text.find(THINK_CLOSE, body_start)
    body_end = close if close >= 0 else len(text)
    body = text[body_start:body_end]
    steps: list[Step] = []
    prev: list[int] | None = None
    before_error: list[int] | None = None
    segments = list(_SEGMENT.finditer(body))
    i = 0
    while i < len(segments):
        m = segments[i]
        sep, expr = m.group(1), m.group(2)
        start, end = body_start + m.start(), body_start + m.end()
        terms = _terms(expr)
        if sep is None and not steps:
            kind = "restate"
        elif sep == " check ":
            kind = "verification"
            if i + 1 < len(segments) and segments[i + 1].group(1) == "=":
                end = body_start + segments[i + 1].end()
                i += 1
            steps.append(Step(kind, start, end, text[start:end]))
            i += 1
            continue
        elif sep == " wait ":
            kind = "backtrack"
            prev = before_error
        else:
            ok = prev is not None and terms is not None and len(prev) >= 2 and terms == [prev[0] + prev[1], *prev[2:]]
            kind = "computation" if ok else "error"
        steps.append(Step(kind, start, end, text[start:end]))
        if kind == "error":
            before_error = prev
        prev = terms
        i += 1
    return steps


def count_backtracks(text: str) -> int:
    """Number of `` wait `` backtracks in ``text``."""
    return text.count(WAIT)
