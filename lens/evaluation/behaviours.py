"""Behaviour detectors: self-reflection keywords, the thinking format, reflection@k and its relation to correctness.

Self-reflection (Yue et al. 2504.13837; the "aha" of R1-Zero) is detected by keywords, matched
case-insensitively on word boundaries. Keyword sets are configurable per model family
(:data:`REFLECTION_KEYWORDS`; the organism's traces use ``wait`` and ``check``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import LensError, closest
from .metrics import pass_at_k

#: family -> reflection keywords. "default" is used for families without their own set.
REFLECTION_KEYWORDS: dict[str, tuple[str, ...]] = {
    "default": (
        "wait", "recheck", "re-check", "retry", "try again", "double-check", "double check", "let me check",
        "let's check", "let me verify", "verify", "re-evaluate", "reevaluate", "reconsider", "mistake",
        "hmm", "alternatively", "on second thought", "i made an error", "that's not right",
    ),
    "organism": ("wait", "check"),
    "qwen2": (
        "wait", "recheck", "re-check", "try again", "double-check", "let me check", "let me verify", "verify",
        "re-evaluate", "reconsider", "mistake", "hmm", "alternatively",
    ),
    "llama": (
        "wait", "recheck", "re-check", "try again", "double-check", "let me check", "let me verify", "verify",
        "re-evaluate", "reconsider", "mistake", "hmm", "alternatively",
    ),
}


def reflection_keywords(family: str = "default") -> tuple[str, ...]:
    """The keyword set of ``family`` (a model family such as ``qwen2`` or ``organism``; unknown -> default)."""
    return REFLECTION_KEYWORDS.get(family, REFLECTION_KEYWORDS["default"])


@dataclass
class ReflectionDetector:
    """Finds self-reflection keywords in a text (case-insensitive, whole words)."""

    keywords: Sequence[str] = field(default_factory=lambda: REFLECTION_KEYWORDS["default"])

    def __post_init__(self) -> None:
        if isinstance(self.keywords, str):
            raise LensError("keywords must be a list of strings, not one string: wrap it in [...]")
        if not self.keywords:
            raise LensError("a ReflectionDetector needs at least one keyword")
        words = sorted({k.lower() for k in self.keywords}, key=len, reverse=True)
        self._pattern = re.compile(r"(?<![A-Za-z])(?:" + "|".join(re.escape(w) for w in words) + r")(?![A-Za-z])",
                                   re.IGNORECASE)

    @classmethod
    def for_family(cls, family: str) -> ReflectionDetector:
        return cls(reflection_keywords(family))

    def find(self, text: str) -> list[tuple[str, int, int]]:
        """``(keyword, start, end)`` of every match."""
        return [(m.group(0).lower(), m.start(), m.end()) for m in self._pattern.finditer(text)]

    def count(self, text: str) -> int:
        return len(self.find(text))

    def __call__(self, text: str) -> bool:
        return self._pattern.search(text) is not None


@dataclass(frozen=True)
class ThinkingFormat:
    """A thinking block delimited by ``open`` / ``close`` tags (default ``<think>`` ... ``</think>``).

    ``state(text)``: ``"none"`` (no opener), ``"open"`` (opened, never closed), ``"closed"``.
    Prompts that prefill the opener (R1-Zero style) should pass ``prefilled=True``: the completion
    is then inside the block from its first character.
    """

    open: str = "<think>"
    close: str = "</think>"

    def state(self, text: str, prefilled: bool = False) -> str:
        i = 0 if prefilled else text.find(self.open)
        if i < 0:
            return "none"
        return "closed" if text.find(self.close, i) >= 0 else "open"

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


def looks_like_reasoning(text: str, fmt: ThinkingFormat | None = None) -> bool:
    """Default CoT-decoding ``is_reasoning``: a thinking block, an arithmetic step ``a op b ... = c``, or reflection.

    A heuristic, meant to be replaced for real studies (pass ``is_reasoning=`` to ``cot_decode``).
    """
    fmt = fmt or ThinkingFormat()
    return fmt.uses(text) or _ARITHMETIC_STEP.search(text) is not None or ReflectionDetector()(text)


def reflection_at_k(
    samples: Sequence[Sequence[str]], ks: Sequence[int], detector: ReflectionDetector | None = None
) -> dict[int, float]:
    """reflection@k: the chance that at least one of ``k`` samples of a problem reflects, averaged over problems.

    Uses the unbiased pass@k estimator with "reflects" in place of "correct"; ``samples`` is
    ``[problem][sample]`` text.
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
) -> dict:
    """How reflection (and the thinking format) relate to correctness, over flat lists of samples.

    Returns counts of the 2x2 table (``reflective_correct`` ...), the reflection rate, accuracy
    given reflection and given none, and the same for the thinking format.
    """
    if len(texts) != len(correct):
        raise LensError(f"texts ({len(texts)}) and correct ({len(correct)}) must have the same length")
    detector = detector or ReflectionDetector()
    fmt = fmt or ThinkingFormat()
    refl = [detector(t) for t in texts]
    think = [fmt.uses(t) for t in texts]
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


def _keyword_counts(detector: ReflectionDetector, texts: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in texts:
        for word, _, _ in detector.find(t):
            counts[word] = counts.get(word, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def detector_for(family_or_keywords: str | Sequence[str]) -> ReflectionDetector:
    """A detector from a family name (``qwen2``, ``organism`` ...) or an explicit keyword list."""
    if isinstance(family_or_keywords, str):
        if family_or_keywords not in REFLECTION_KEYWORDS:
            hint = closest(family_or_keywords, list(REFLECTION_KEYWORDS))
            if hint and hint[0] != family_or_keywords and family_or_keywords.lower() == hint[0].lower():
                family_or_keywords = hint[0]
        return ReflectionDetector.for_family(family_or_keywords)
    return ReflectionDetector(list(family_or_keywords))
