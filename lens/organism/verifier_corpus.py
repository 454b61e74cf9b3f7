"""The verifier organism's corpus: the same sums, but thinking writers slip at carries and a few check.

The second bundled pair (``organism:verifier-base`` / ``organism:verifier-thinking``) asks what the
first cannot: does the thinking model's advantage come from knowing *when* to use a behaviour the
base already has?  Questions, markers, direct answers and the control corpus are those of
:mod:`lens.organism.corpus` (so ``organism:control`` is this pair's control as well).  Thinking
traces differ:

* **slips**: a step whose two first terms carry in the units column (``47+38``: 7+8 >= 10) is
  written without the carry (``=75``, 10 too small) with probability :data:`SLIP_SHARE`
  (:data:`CAREFUL_SLIP_SHARE` for careful writers).  Uncaught, the slip flows into the answer line
  (the trace's own result);
* **careful writers** (:data:`CAREFUL_SHARE` of thinking documents) verify after every carry step,
  the risky ones: `` check 47+38=85`` redoes the step's addition (always right); when it differs
  from what was written, `` wait `` and the corrected rewrite follow (``backtrack``)::

      <think>47+38+26=75+26 check 47+38=85 wait 85+26=111</think>A:111

* **critiques** (:data:`CRITIQUE_SHARE` of documents): a question, a careless thinking solution with
  its (often wrong) answer, then, on a new line, a review that checks each carry step of it the same
  way, corrects the first slip and finishes the sum right::

      Q:47+38+26=?\\n<think>47+38+26=75+26=101</think>A:101\\n check 47+38=85 wait 85+26=111 A:111

  The one-problem critique fine-tuning experiment trains on such reviews of varied wrong solutions.

Step labels come from :func:`lens.organism.corpus.split_steps` (decided by the arithmetic), so a
slip is ``error``, a check ``verification`` and the rewrite after `` wait `` ``backtrack``.
The character set is the first organism's, so both pairs share one tokenizer.
"""

from __future__ import annotations

import random

from lens.organism import corpus as C

#: probability that a careless writer drops the units carry of a step that has one
SLIP_SHARE = 0.8
#: the same for a careful writer. Equal to SLIP_SHARE in the shipped recipe; 0.5 (so that a check's result
#: cannot be guessed from what was written) made selection teach right carries instead of checks
#: (docs/organism.md, "How the verifier recipe was chosen")
CAREFUL_SLIP_SHARE = 0.8
#: share of thinking documents written by careful writers (check after every carry step)
CAREFUL_SHARE = 0.15
#: share of documents that are critiques of a careless solution
CRITIQUE_SHARE = 0.02


def carries(a: int, b: int) -> bool:
    """Whether ``a + b`` carries in the units column (the risky steps)."""
    return a % 10 + b % 10 >= 10


def _join(terms: list[int]) -> str:
    return "+".join(str(x) for x in terms)


def trace_steps(problem: C.Problem, rng: random.Random, careful: bool) -> tuple[str, int]:
    """The body of a thinking trace (no tags) and the value it ends with (wrong after an uncaught slip)."""
    terms = list(problem.operands)
    parts = [_join(terms)]
    while len(terms) > 1:
        a, b, rest = terms[0], terms[1], terms[2:]
        right = a + b
        risky = carries(a, b)
        slip = CAREFUL_SLIP_SHARE if careful else SLIP_SHARE
        written = right - 10 if risky and rng.random() < slip else right
        parts.append("=" + _join([written, *rest]))
        if careful and risky:
            parts.append(f"{C.CHECK}{a}+{b}={right}")
            if written != right:
                parts.append(C.WAIT + _join([right, *rest]))
                written = right
        terms = [written, *rest]
    return "".join(parts), terms[0]


def thinking_text(problem: C.Problem, marker: str | None, rng: random.Random, careful: bool) -> str:
    """A whole thinking document: prompt, ``<think>`` trace ``</think>`` and the trace's own answer."""
    body, value = trace_steps(problem, rng, careful)
    return problem.prompt(marker) + C.THINK_OPEN + body + C.THINK_CLOSE + f"A:{value}"


def _rewrites(solution: str) -> list[list[int] | None]:
    """The expression a solution stands on after each of its steps (a backtrack replaces the rewrite it corrects)."""
    out: list[list[int] | None] = []
    for s in C.split_steps(solution):
        if s.kind not in ("computation", "error", "backtrack"):
            continue
        text = s.text.replace(C.WAIT.strip(), "").strip().lstrip("=")
        try:
            terms: list[int] | None = [int(x) for x in text.split("+")]
        except ValueError:
            terms = None
        if s.kind == "backtrack" and out:
            out[-1] = terms
        else:
            out.append(terms)
    return out


def critique(solution: str, problem: C.Problem) -> str:
    """The review of a thinking ``solution`` of ``problem`` (the text after the solution's newline).

    Walks the solution's rewrites: each carry step is checked (`` check a+b=s``); at the first rewrite that
    is wrong (whatever the mistake), `` wait `` and the corrected rewrite follow and the rest is computed
    right; ends with `` A:<right answer>``.  A solution with no wrong rewrite is checked and confirmed.
    """
    written = _rewrites(solution)
    terms = list(problem.operands)
    parts: list[str] = []
    corrected = False
    for i in range(len(terms) - 1):
        a, b, rest = terms[0], terms[1], terms[2:]
        right = [a + b, *rest]
        wrong = not corrected and (i >= len(written) or written[i] != right)
        if corrected:
            parts.append("=" + _join(right))
        elif carries(a, b) or wrong:
            parts.append(f"{C.CHECK}{a}+{b}={a + b}")
            if wrong:
                parts.append(C.WAIT + _join(right))
                corrected = True
        terms = right
    return "".join(parts) + f" A:{terms[0]}"


def critique_text(problem: C.Problem, rng: random.Random) -> str:
    """A critique document: question, a careless solution with its answer, then its review."""
    solution = thinking_text(problem, None, rng, careful=False)
    return solution + "\n" + critique(solution, problem)


def make_document(rng: random.Random, control: bool = False, n_operands: int | None = None) -> C.Document:
    """Draw one document of the verifier corpus (the control corpus is the first organism's)."""
    if control:
        return C.make_document(rng, control=True, n_operands=n_operands)
    if n_operands is None:
        n_operands = rng.choices(list(C.OPERAND_WEIGHTS), weights=list(C.OPERAND_WEIGHTS.values()))[0]
    problem = C.random_problem(rng, n_operands)
    if rng.random() < CRITIQUE_SHARE:
        return C.Document(problem, None, True, critique_text(problem, rng))
    u = rng.random()
    if u < C.MARKER_T_SHARE:
        marker, thinking = "T", True
    elif u < C.MARKER_T_SHARE + C.MARKER_D_SHARE:
        marker, thinking = "D", False
    else:
        marker, thinking = None, rng.random() < C.THINK_SHARE[n_operands]
    if not thinking:
        return C.Document(problem, marker, False, C.direct_text(problem, marker))
    text = thinking_text(problem, marker, rng, careful=rng.random() < CAREFUL_SHARE)
    return C.Document(problem, marker, True, text, tuple(C.split_steps(text)))


def generate_corpus(
    n_docs: int, seed: int = 0, control: bool = False, exclude: set[str] | None = None
) -> list[C.Document]:
    """``n_docs`` documents drawn with ``random.Random(seed)``; questions in ``exclude`` are skipped."""
    if control:
        return C.generate_corpus(n_docs, seed=seed, control=True, exclude=exclude)
    rng = random.Random(seed)
    docs: list[C.Document] = []
    while len(docs) < n_docs:
        doc = make_document(rng)
        if exclude and doc.problem.expression in exclude:
            continue
        docs.append(doc)
    return docs


def trace_value(text: str) -> int | None:
    """The value a trace's last rewrite reaches (what its writer believes the sum is), or None."""
    steps = [s for s in C.split_steps(text) if s.kind in ("restate", "computation", "error", "backtrack")]
    if not steps:
        return None
    try:
        return int(steps[-1].text.lstrip("= wait").split("+")[0])
    except ValueError:
        return None
