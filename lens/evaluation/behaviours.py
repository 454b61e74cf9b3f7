"""Behaviour detectors: self-reflection keywords, the thinking format, reflection@k and its relation to correctness.

Self-reflection is detected by keywords. Two named detectors, reported side by side:

* ``oat_zero`` (the default): as Liu et al. count it in oat-zero ("There May Not be Aha Moment in
  R1-Zero-like Training", github.com/sail-sg/oat-zero, ``analysis/eval_self_reflect.py``): a sample
  reflects when its lower-cased text contains one of the keywords as a SUBSTRING (``"rechecking"``
  counts as ``recheck``), the number of reflections is the sum over keywords of ``text.count(kw)``,
  and the keyword set is chosen per model family (:data:`OAT_ZERO_KEYWORDS`, :func:`oat_zero_group`).
  Their question-level statistics are :func:`reflection_precision_recall`.
* ``words``: case-insensitive whole-word matches of a broader set per family
  (:data:`REFLECTION_KEYWORDS`, with ``wait``, ``hmm``, ``verify`` ...).

The bundled organism writes ``wait`` and ``check``; its set (``"organism"``) is used by both detectors.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import LensError, closest
from .metrics import pass_at_k

#: oat-zero's keyword sets, by the group :func:`oat_zero_group` picks from a model's name.
#: Source: sail-sg/oat-zero, analysis/eval_self_reflect.py. The per-family sets (qwen, deepseek,
#: llama, microsoft) and the question-level precision/recall are those of its first commit
#: (41ed659, 2025-02-06); "unified" is the single set that commit c99fa82 (2025-03-22, "update
#: keyword analysis") applies to every model instead and that the repository's head still uses.
#: The set of a model that none of the family tests matches is "unified" here (oat-zero raised an
#: error for such a model in its first commit).
OAT_ZERO_KEYWORDS: dict[str, tuple[str, ...]] = {
    "qwen": ("recheck", "rethink", "try again"),
    "llama": ("recheck", "rethink", "check again", "re-evaluate", "try again", "re-examine"),
    "deepseek": ("reevaluate", "reevaluation", "recheck", "rethink", "check again", "re-evaluate", "try again",
                 "re-examine"),
    "microsoft": ("recheck", "rethink", "check again", "re-evaluate", "try again", "re-examine"),
    "unified": ("recheck", "rethink", "reevaluate", "re-evaluate", "reevaluation", "re-examine", "reexamine",
                "try again", "check again", "think again", "go over the steps"),
}

#: The organism's reflection words (its traces write ``wait`` and ``check``).
ORGANISM_KEYWORDS: tuple[str, ...] = ("wait", "check")

#: family -> keywords of the ``words`` detector. "default" is used for families without their own set.
REFLECTION_KEYWORDS: dict[str, tuple[str, ...]] = {
    "default": (
        "wait", "recheck", "re-check", "retry", "try again", "double-check", "double check", "let me check",
        "let's check", "let me verify", "verify", "re-evaluate", "reevaluate", "reconsider", "mistake",
        "hmm", "alternatively", "on second thought", "i made an error", "that's not right",
    ),
    "organism": ORGANISM_KEYWORDS,
    "qwen2": (
        "wait", "recheck", "re-check", "try again", "double-check", "let me check", "let me verify", "verify",
        "re-evaluate", "reconsider", "mistake", "hmm", "alternatively",
    ),
    "llama": (
        "wait", "recheck", "re-check", "try again", "double-check", "let me check", "let me verify", "verify",
        "re-evaluate", "reconsider", "mistake", "hmm", "alternatively",
    ),
}

#: Detector names: ``oat_zero`` (per-family substring sets), ``oat_zero_unified`` (oat-zero's single
#: set for every model), ``words`` (whole words, :data:`REFLECTION_KEYWORDS`).
DETECTORS = ("oat_zero", "oat_zero_unified", "words")


def oat_zero_group(name: str) -> str:
    """oat-zero's keyword group for a model name or family: ``qwen``, ``deepseek``, ``llama``, ``microsoft``
    or ``unified``.

    The tests run in oat-zero's order (``Qwen`` first, so ``DeepSeek-R1-Distill-Qwen`` counts as Qwen and
    ``deepseek-math`` as DeepSeek); they ignore case here, where oat-zero matched ``Qwen`` and the
    lower-case others exactly. ``rho-math`` (microsoft/rho-math-7b) is also ``microsoft``.
    """
    s = name.lower()
    for group in ("qwen", "deepseek", "llama", "microsoft"):
        if group in s:
            return group
    return "microsoft" if "rho-math" in s else "unified"


def reflection_keywords(family: str = "default") -> tuple[str, ...]:
    """The ``words`` keyword set of ``family`` (``qwen2``, ``llama``, ``organism`` ...; unknown -> default)."""
    return REFLECTION_KEYWORDS.get(family, REFLECTION_KEYWORDS["default"])


@dataclass
class ReflectionDetector:
    """Finds self-reflection keywords in a text, case-insensitively.

    match: ``"substring"`` (oat-zero's rule: anywhere in the text, ``"rechecking"`` counts) or ``"word"``
    (whole words only: ``"awaiting"`` does not count as ``wait``). name: the label results carry.
    The default is oat-zero's unified set, matched as substrings.
    """

    keywords: Sequence[str] = field(default_factory=lambda: OAT_ZERO_KEYWORDS["unified"])
    match: str = "substring"
    name: str = "oat_zero"

    def __post_init__(self) -> None:
        if isinstance(self.keywords, str):
            raise LensError("keywords must be a list of strings, not one string: wrap it in [...]")
        if not self.keywords:
            raise LensError("a ReflectionDetector needs at least one keyword")
        if self.match not in ("substring", "word"):
            raise LensError(f"match must be 'substring' or 'word', got {self.match!r}")
        self._words = sorted({k.lower() for k in self.keywords}, key=len, reverse=True)
        if self.match == "word":
            alternatives = "|".join(re.escape(w) for w in self._words)
            self._pattern = re.compile(r"(?<![A-Za-z])(?:" + alternatives + r")(?![A-Za-z])", re.IGNORECASE)
        else:
            self._patterns = [(w, re.compile(re.escape(w), re.IGNORECASE)) for w in self._words]

    @classmethod
    def for_family(cls, family: str) -> ReflectionDetector:
        """The ``words`` detector of ``family``."""
        return cls(reflection_keywords(family), match="word", name="words")

    def find(self, text: str) -> list[tuple[str, int, int]]:
        """``(keyword, start, end)`` of every match, by position (substring mode: each keyword's own
        non-overlapping matches, so ``"recheck again"`` holds ``recheck`` and ``check again``)."""
        if self.match == "word":
            return [(m.group(0).lower(), m.start(), m.end()) for m in self._pattern.finditer(text)]
        hits = [(w, m.start(), m.end()) for w, p in self._patterns for m in p.finditer(text)]
        return sorted(hits, key=lambda h: (h[1], -len(h[0])))

    def count(self, text: str) -> int:
        """Number of reflections: oat-zero's ``sum(text.lower().count(kw))`` in substring mode, matches in word mode."""
        if self.match == "substring":
            low = text.lower()
            return sum(low.count(w) for w in self._words)
        return len(self.find(text))

    def __call__(self, text: str) -> bool:
        if self.match == "substring":
            low = text.lower()
            return any(w in low for w in self._words)
        return self._pattern.search(text) is not None

    def describe(self) -> dict:
        """``{name, match, keywords}``, as results record the detector."""
        return {"name": self.name, "match": self.match, "keywords": sorted(self._words)}


@dataclass(frozen=True)
class ThinkingFormat:
    """A thinking block delimited by ``open`` / ``close`` tags (default ``<think>`` ... ``</think>``).

    ``state(text)``: ``"none"`` (no opener), ``"open"`` (opened, never closed), ``"closed"``.
    Prompts that prefill the opener (R1-Zero style, or R1's chat template, which ends
    ``<｜Assistant｜><think>\n``) should pass ``prefilled=True``: the completion is then inside the
    block from its first character. ``opened_by(prompt)`` tells such prompts; ``in_format`` is what
    thinking-format rates count.
    """

    open: str = "<think>"
    close: str = "</think>"

    def state(self, text: str, prefilled: bool = False) -> str:
        i = 0 if prefilled else text.find(self.open)
        if i < 0:
            return "none"
        return "closed" if text.find(self.close, i) >= 0 else "open"

    def opened_by(self, prompt: str) -> bool:
        """Whether ``prompt`` ends inside an open block (its last opener has no closer after it), as
        prompts built with R1's chat template do: the completion then starts inside the block."""
        i = prompt.rfind(self.open)
        return i >= 0 and prompt.find(self.close, i + len(self.open)) < 0

    def in_format(self, text: str, prefilled: bool = False) -> bool:
        """Whether a completion is in the thinking format, as thinking-format rates count it: it opens a
        block (`uses`); or, when its prompt opened the block (``prefilled``), it closes it (contains
        ``close``): the opener is the template's, and an unclosed completion cannot be told from one
        that ignored the block."""
        return self.complete(text, prefilled=True) if prefilled else self.uses(text)

    def uses(self, text: str, prefilled: bool = False) -> bool:
        """Whether the text opens a thinking block (closed or not)."""
        return self.state(text, prefilled) != "none"

    def complete(self, text: str, prefilled: bool = False) -> bool:
        return self.state(text, prefilled) == "closed"

    def thinking(self, text: str, prefilled: bool = False) -> str:
        """The text inside the block ("" if none)."""
        if self.state(text, prefilled) == "none":
            return ""
        start = 0 if prefilled else text.index(self.open) + len(self.open)
        end = text.find(self.close, start)
        return text[start:] if end < 0 else text[start:end]

    def after(self, text: str, prefilled: bool = False) -> str:
        """The text after the block (the whole text if there is no block; "" if it is unclosed)."""
        state = self.state(text, prefilled)
        if state == "none":
            return text
        if state == "open":
            return ""
        start = 0 if prefilled else text.index(self.open)
        return text[text.index(self.close, start) + len(self.close) :]


_ARITHMETIC_STEP = re.compile(r"\d\s*[-+*/×x]\s*\d[^=\n]{0,40}=\s*-?\d")
_WORDS_DEFAULT = ReflectionDetector.for_family("default")


def looks_like_reasoning(text: str, fmt: ThinkingFormat | None = None) -> bool:
    """Default CoT-decoding ``is_reasoning``: a thinking block, an arithmetic step ``a op b ... = c``, or reflection.

    Reflection here is the ``words`` detector's default set (``wait``, ``hmm``, ``verify`` ...). A
    heuristic, meant to be replaced for real studies (pass ``is_reasoning=`` to ``cot_decode``).
    """
    fmt = fmt or ThinkingFormat()
    return fmt.uses(text) or _ARITHMETIC_STEP.search(text) is not None or _WORDS_DEFAULT(text)


def reflection_at_k(
    samples: Sequence[Sequence[str]], ks: Sequence[int], detector: ReflectionDetector | None = None
) -> dict[int, float]:
    """reflection@k: the chance that at least one of ``k`` samples of a problem reflects, averaged over problems.

    Uses the unbiased pass@k estimator with "reflects" in place of "correct"; ``samples`` is
    ``[problem][sample]`` text. At ``k`` = the number of samples this is the share of problems with at
    least one reflective sample: oat-zero's reflection@k divided by the number of questions.
    """
    detector = detector or ReflectionDetector()
    flags = [[detector(t) for t in row] for row in samples]
    out: dict[int, float] = {}
    for k in ks:
        vals = [pass_at_k(len(row), sum(row), k) for row in flags if len(row) >= k]
        if not vals:
            raise LensError(f"reflection@{k} needs at least {k} samples per problem")
        out[int(k)] = sum(vals) / len(vals)
    return out


def _rate(num: int, den: int) -> float:
    return num / den if den else float("nan")


def reflection_vs_correctness(
    texts: Sequence[str],
    correct: Sequence[bool],
    detector: ReflectionDetector | None = None,
    fmt: ThinkingFormat | None = None,
    prefilled: bool | Sequence[bool] = False,
) -> dict:
    """How reflection (and the thinking format) relate to correctness, over flat lists of samples.

    prefilled: whether each sample's prompt opened the thinking block (one flag, or one per sample;
    see `ThinkingFormat.opened_by`); such a sample is in the thinking format when it closes the block
    (`ThinkingFormat.in_format`). Returns counts of the 2x2 table (``reflective_correct`` ...), the
    reflection rate, accuracy given reflection and given none, and the same for the thinking format.
    """
    if len(texts) != len(correct):
        raise LensError(f"texts ({len(texts)}) and correct ({len(correct)}) must have the same length")
    flags = [bool(prefilled)] * len(texts) if isinstance(prefilled, bool) else [bool(x) for x in prefilled]
    if len(flags) != len(texts):
        raise LensError(f"prefilled has {len(flags)} flags for {len(texts)} texts; give one per text (or one bool)")
    detector = detector or ReflectionDetector()
    fmt = fmt or ThinkingFormat()
    refl = [detector(t) for t in texts]
    think = [fmt.in_format(t, f) for t, f in zip(texts, flags, strict=True)]
    ok = [bool(c) for c in correct]
    n = len(texts)
    table = {
        "n": n,
        "reflective_correct": sum(r and c for r, c in zip(refl, ok, strict=True)),
        "reflective_wrong": sum(r and not c for r, c in zip(refl, ok, strict=True)),
        "plain_correct": sum(not r and c for r, c in zip(refl, ok, strict=True)),
        "plain_wrong": sum(not r and not c for r, c in zip(refl, ok, strict=True)),
    }
    n_refl = sum(refl)
    n_think = sum(think)
    table.update(
        reflection_rate=_rate(n_refl, n),
        accuracy_if_reflective=_rate(table["reflective_correct"], n_refl),
        accuracy_if_not_reflective=_rate(table["plain_correct"], n - n_refl),
        thinking_rate=_rate(n_think, n),
        accuracy_if_thinking=_rate(sum(t and c for t, c in zip(think, ok, strict=True)), n_think),
        accuracy_if_not_thinking=_rate(sum(not t and c for t, c in zip(think, ok, strict=True)), n - n_think),
        keyword_counts=_keyword_counts(detector, texts),
    )
    return table


def reflection_precision_recall(
    texts: Sequence[Sequence[str]], correct: Sequence[Sequence[bool]], detector: ReflectionDetector | None = None
) -> dict:
    """oat-zero's question-level statistics of reflection against correctness.

    ``texts`` and ``correct`` are ``[question][sample]``. A question is solved when one of its samples
    is correct and reflective when one of its samples reflects (not necessarily the same sample);
    precision = P(solved | reflective), recall = P(reflective | solved), over questions (nan when the
    condition never holds). Returns the counts (``questions``, ``samples``, ``solved``, ``reflective``,
    ``solved_and_reflective``), ``pass_at_n`` and ``reflection_at_n`` as shares of questions,
    ``precision``, ``recall`` and ``reflections_per_sample`` (mean of :meth:`ReflectionDetector.count`).
    """
    if len(texts) != len(correct):
        raise LensError(f"texts ({len(texts)} questions) and correct ({len(correct)}) must have the same length")
    for i, (t, c) in enumerate(zip(texts, correct, strict=True)):
        if isinstance(t, str) or len(t) != len(c):
            raise LensError(f"question {i}: texts and correct must be lists of the same length per question "
                            "([question][sample])")
    detector = detector or ReflectionDetector()
    counts = [[detector.count(t) for t in row] for row in texts]
    solved = [any(bool(c) for c in row) for row in correct]
    reflective = [any(n > 0 for n in row) for row in counts]
    both = sum(s and r for s, r in zip(solved, reflective, strict=True))
    n_q, n_s = len(texts), sum(len(row) for row in texts)
    return {
        "questions": n_q,
        "samples": n_s,
        "solved": sum(solved),
        "reflective": sum(reflective),
        "solved_and_reflective": both,
        "pass_at_n": _rate(sum(solved), n_q),
        "reflection_at_n": _rate(sum(reflective), n_q),
        "precision": _rate(both, sum(reflective)),
        "recall": _rate(both, sum(solved)),
        "reflections_per_sample": _rate(sum(sum(row) for row in counts), n_s),
    }


def _keyword_counts(detector: ReflectionDetector, texts: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in texts:
        for word, _, _ in detector.find(t):
            counts[word] = counts.get(word, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def detector_for(family_or_keywords: str | Sequence[str], detector: str = "oat_zero") -> ReflectionDetector:
    """A detector from a model name or family (``Qwen/Qwen2.5-Math-1.5B``, ``qwen2``, ``llama``, ``organism`` ...)
    or an explicit keyword list.

    detector: ``oat_zero`` (substrings; the keyword set of :func:`oat_zero_group` of the name),
    ``oat_zero_unified`` (substrings; oat-zero's single set) or ``words`` (whole words;
    :data:`REFLECTION_KEYWORDS` by family, default set for others). ``organism`` takes the organism's
    words under every detector. A keyword list is matched as the detector says.
    """
    if detector not in DETECTORS:
        hint = closest(detector, list(DETECTORS))
        raise LensError(f"unknown reflection detector {detector!r}; choose one of {', '.join(DETECTORS)}"
                        + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    match = "word" if detector == "words" else "substring"
    if not isinstance(family_or_keywords, str):
        return ReflectionDetector(list(family_or_keywords), match=match, name=detector)
    name = family_or_keywords
    if name.lower() == "organism":
        return ReflectionDetector(ORGANISM_KEYWORDS, match=match, name=detector)
    if detector == "words":
        if name not in REFLECTION_KEYWORDS:
            hint = closest(name, list(REFLECTION_KEYWORDS))
            if hint and name.lower() == hint[0].lower():
                name = hint[0]
        return ReflectionDetector(reflection_keywords(name), match="word", name="words")
    group = "unified" if detector == "oat_zero_unified" else oat_zero_group(name)
    return ReflectionDetector(OAT_ZERO_KEYWORDS[group], match="substring", name=detector)


def reflection_detectors(family: str, model_name: str = "") -> dict[str, ReflectionDetector]:
    """The two detectors reported side by side for a model: ``oat_zero`` (keyword set from the model's
    name, else its family) and ``words`` (by family)."""
    if family.lower() == "organism":
        return {d: detector_for("organism", d) for d in ("oat_zero", "words")}
    oat_name = model_name if oat_zero_group(model_name) != "unified" else family
    return {"oat_zero": detector_for(oat_name, "oat_zero"), "words": detector_for(family, "words")}
