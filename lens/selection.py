"""Which tokens a capture (or an intervention) reads: token selections over one example.

A selection turns one tokenised example into groups of absolute token positions (positions in
the unpadded sequence, 0 = first token, BOS included when the tokenizer adds one). A group of
one position gives one row per token; a longer group gives one row holding the mean over its
positions (sentence vectors, spans). Selections are plain data: `parse_select("last:4")`.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .errors import LensError, check_text


@dataclass
class Example:
    """One input: its text, where the prompt ends (characters), optional labelled character spans.

    Or already-tokenised input: `token_ids` (exactly what the model reads, no special tokens added),
    e.g. a generated sequence captured without a decode/re-encode round trip; `text` is then "".
    """

    text: str
    prompt_chars: int | None = None
    spans: list[tuple[int, int, str]] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    token_ids: tuple[int, ...] | None = None

    @classmethod
    def of(cls, item: str | dict | Example | Sequence[int] | torch.Tensor) -> Example:
        """Normalise a str, an Example, a sequence / 1-D tensor of token ids, or a dict with "text",
        "prompt"(+"completion") (+"spans"), or "input_ids".

        Texts must be strings of valid Unicode: a number, a null or a lone surrogate is refused with a
        LensError naming the field (a completion is optional: leave the key out, not null).
        """
        if isinstance(item, Example):
            return item
        if isinstance(item, str):
            return cls(check_text("the text", item))
        if isinstance(item, torch.Tensor) or (isinstance(item, (list, tuple)) and item and isinstance(item[0], int)):
            return cls.of_ids(item)
        if isinstance(item, dict):
            if "input_ids" in item:
                meta = {k: v for k, v in item.items() if k != "input_ids"}
                return cls.of_ids(item["input_ids"], meta)
            spans = _spans(item.get("spans", []))
            meta = {k: v for k, v in item.items() if k not in ("text", "prompt", "completion", "spans")}
            if "prompt" in item:
                prompt = check_text('"prompt"', item["prompt"])
                if "completion" in item and item["completion"] is None:
                    raise LensError('"completion" is null; give a string ("" for none) or leave the key out')
                completion = check_text('"completion"', item.get("completion", ""))
                return cls(prompt + completion, len(prompt), spans, meta)
            if "text" in item:
                return cls(check_text('"text"', item["text"]), None, spans, meta)
        raise LensError(
            f"cannot read input {str(item)[:60]!r}: give a string, a list of token ids, or an object with "
            "\"text\", \"prompt\" (and optionally \"completion\", \"spans\") or \"input_ids\""
        )

    @classmethod
    def of_ids(cls, ids: Sequence[int] | torch.Tensor, meta: dict | None = None) -> Example:
        """An already-tokenised input (a flat sequence of non-negative token ids)."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1 or ids.dtype.is_floating_point:
                raise LensError(f"token ids must be a 1-D integer tensor, got shape {tuple(ids.shape)} {ids.dtype}; "
                                "pass one sequence per input (rows of a batch as separate inputs)")
            ids = ids.tolist()
        if isinstance(ids, (str, bytes, dict)) or not isinstance(ids, Sequence):
            raise LensError(f"token ids must be a list of ints, got {type(ids).__name__} {str(ids)[:40]!r}")
        try:
            ids = tuple(map(operator.index, ids))  # ints (numpy ints too); floats raise
        except (TypeError, ValueError):
            raise LensError(f"token ids must be ints, got {list(ids)[:8]}") from None
        if not ids or min(ids) < 0:
            raise LensError(f"token ids must be a non-empty list of non-negative ints, got {list(ids)[:8]}")
        return cls("", meta=dict(meta or {}), token_ids=ids)


def _spans(raw: object) -> list[tuple[int, int, str]]:
    """An input's "spans": [start, end] or [start, end, label] character ranges, checked."""
    if not isinstance(raw, list):
        raise LensError(f'"spans" must be a list of [start, end, label] character ranges, got {raw!r:.60}')
    out = []
    for s in raw:
        if (not isinstance(s, (list, tuple)) or len(s) not in (2, 3)
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in s[:2]) or not 0 <= s[0] <= s[1]):
            raise LensError(f'each of "spans" must be [start, end, label] with 0 <= start <= end ints, got {s!r:.60}')
        label = s[2] if len(s) > 2 else ""
        out.append((s[0], s[1], check_text("a span label", label) if isinstance(label, str) else str(label)))
    return out


def to_examples(items, first: int = 0):
    """`Example.of` over `items`, lazily; a refused item's LensError names its index (counting from `first`)."""
    for i, item in enumerate(items, first):
        try:
            yield Example.of(item)
        except LensError as e:
            raise LensError(f"input {i}: {e}") from None


@dataclass(frozen=True)
class Group:
    """Absolute positions whose mean is one captured row, with an optional label."""

    positions: tuple[int, ...]
    label: str = ""


def _real(offsets: list[tuple[int, int]]) -> list[int]:
    """Indices of tokens that cover text (special tokens have empty (0, 0) offsets)."""
    return [i for i, (s, e) in enumerate(offsets) if e > s]


def tokens_in_span(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, ...]:
    """Token positions whose character range overlaps [start, end)."""
    return tuple(i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start)


class Selection:
    """Base class: `groups(example, offsets)` lists the Groups to capture for one example.

    `reads_text`: the selection maps character ranges through the tokenizer's offsets, so it
    cannot apply to token-id inputs (which have no text); the others only count tokens.
    """

    reads_text = True

    def groups(self, ex: Example, offsets: list[tuple[int, int]]) -> list[Group]:
        raise NotImplementedError

    @property
    def spec(self) -> str:
        """The CLI string that `parse_select` turns back into this selection."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.spec


@dataclass(frozen=True)
class AllTokens(Selection):
    """Every token, one row each (special tokens such as BOS included)."""

    reads_text = False

    @property
    def spec(self) -> str:
        return "all"


    def groups(self, ex, offsets):
        return [Group((i,)) for i in range(len(offsets))]


@dataclass(frozen=True)
class FromPosition(Selection):
    """Every token from absolute position `start` on, one row each: `from:1` is `all` without the first
    token (BOS, or the first text token when the tokenizer adds none), whose residual is an outlier in
    many models (an attention sink: SmolLM2-135M's norm there is ~150x the others')."""

    reads_text = False

    @property
    def spec(self) -> str:
        return f"from:{self.start}"

    start: int = 1

    def groups(self, ex, offsets):
        return [Group((i,)) for i in range(self.start, len(offsets))]


@dataclass(frozen=True)
class LastPromptToken(Selection):
    """The last token of the prompt (the whole text when the example has no prompt/completion split)."""

    reads_text = False  # without a prompt split (always so for token ids) it is the last token

    @property
    def spec(self) -> str:
        return "last_prompt"


    def groups(self, ex, offsets):
        if ex.prompt_chars is None:
            return [Group((len(offsets) - 1,))]
        inside = [i for i, (s, e) in enumerate(offsets) if e > s and s < ex.prompt_chars]
        if not inside:
            raise LensError(f"prompt of {ex.text[:40]!r} covers no token")
        return [Group((inside[-1],))]


@dataclass(frozen=True)
class FirstGeneratedToken(Selection):
    """The first completion token: the position right after the last prompt token (P, where
    `LastPromptToken` is P-1), as `Where.first_generated_token()` names it in generation. Needs inputs
    with a prompt and a completion. Where one token spans the prompt's end and the completion's start,
    that token is P-1 and this is the one after it (generation tokenises the prompt alone, so its P may
    differ there)."""

    @property
    def spec(self) -> str:
        return "first_generated_token"

    def groups(self, ex, offsets):
        if ex.prompt_chars is None:
            raise LensError("first_generated_token needs inputs with a prompt and a completion "
                            '({"prompt": ..., "completion": ...}); use last_prompt_token for the prompt\'s last token')
        last = LastPromptToken().groups(ex, offsets)[0].positions[0]
        if last + 1 >= len(offsets):
            raise LensError(f"the completion of {ex.text[:40]!r} covers no token after the prompt")
        return [Group((last + 1,))]


@dataclass(frozen=True)
class Positions(Selection):
    """Absolute positions; negative ones count from the end (-1 = last token)."""

    reads_text = False

    @property
    def spec(self) -> str:
        return "positions:" + ",".join(str(p) for p in self.positions)

    positions: tuple[int, ...] = ()

    def groups(self, ex, offsets):
        n = len(offsets)
        out = []
        for p in self.positions:
            q = p + n if p < 0 else p
            if not 0 <= q < n:
                raise LensError(f"position {p} is outside an example of {n} tokens ({ex.text[:40]!r})")
            out.append(Group((q,)))
        return out


@dataclass(frozen=True)
class LastN(Selection):
    """The last n tokens, one row each."""

    reads_text = False

    @property
    def spec(self) -> str:
        return f"last:{self.n}"

    n: int = 1

    def groups(self, ex, offsets):
        return [Group((i,)) for i in range(max(0, len(offsets) - self.n), len(offsets))]


@dataclass(frozen=True)
class CharSpans(Selection):
    """The example's labelled character spans, mapped to tokens through the tokenizer's offsets.

    mean=True gives one row per span (mean over its tokens); False one row per token.
    """

    @property
    def spec(self) -> str:
        return "spans" if self.mean else "spans:tokens"

    mean: bool = True

    def groups(self, ex, offsets):
        out = []
        for s, e, label in ex.spans:
            pos = tokens_in_span(offsets, s, e)
            if not pos:
                continue
            out.extend([Group(pos, label)] if self.mean else [Group((p,), label) for p in pos])
        return out


@dataclass(frozen=True)
class Regex(Selection):
    """Tokens overlapping each match of a regular expression (one row per token, or the mean per match)."""

    @property
    def spec(self) -> str:
        return ("regex-mean:" if self.mean else "regex:") + self.pattern

    pattern: str = ""
    mean: bool = False

    def groups(self, ex, offsets):
        out = []
        for m in re.finditer(self.pattern, ex.text):
            pos = tokens_in_span(offsets, m.start(), m.end())
            if pos:
                out.extend([Group(pos, m.group(0))] if self.mean else [Group((p,), m.group(0)) for p in pos])
        return out


SENTENCE_RE = r"[^.!?\n]+[.!?]?"


@dataclass(frozen=True)
class Sentences(Selection):
    """One row per sentence: the mean residual over its tokens (the hybrid paper's sentence vectors).

    Sentences are matches of `pattern` in the completion (or the whole text when the example has
    no prompt split, or `completion_only=False`); a sentence covered by a labelled span takes its label.
    """

    @property
    def spec(self) -> str:
        return "sentences" if self.pattern == SENTENCE_RE and self.completion_only else f"sentences:{self.pattern}"

    pattern: str = SENTENCE_RE
    completion_only: bool = True

    def groups(self, ex, offsets):
        start = ex.prompt_chars if (self.completion_only and ex.prompt_chars is not None) else 0
        out = []
        for m in re.finditer(self.pattern, ex.text[start:]):
            s, e = m.start() + start, m.end() + start
            if not ex.text[s:e].strip():
                continue
            pos = tokens_in_span(offsets, s, e)
            if pos:
                label = next((lab for a, b, lab in ex.spans if a <= s and e <= b), "")
                out.append(Group(pos, label))
        return out


def parse_select(text: str | Selection) -> Selection:
    """Parse a CLI selection: all | from:N | last_prompt_token (= last_prompt = first_step) | first_generated_token |
    positions:0,5,-1 | last[:N] | spans[:tokens] | regex:PAT | regex-mean:PAT | sentences[:PAT]. `from:1` is every
    token but the first (see `FromPosition`)."""
    if isinstance(text, Selection):
        return text
    name, _, arg = text.partition(":")
    try:
        if name == "all":
            return AllTokens()
        if name in ("last_prompt", "last_prompt_token", "first_step") and not arg:
            return LastPromptToken()
        if name == "first_generated_token":
            return FirstGeneratedToken()
        if name == "from":
            if not arg.strip():
                raise ValueError("give the first position to keep, e.g. from:1 (every token but the first)")
            start = int(arg)
            if start < 0:
                raise ValueError(f"the first position must be >= 0, got {start}")
            return FromPosition(start)
        if name == "positions":
            positions = tuple(int(x) for x in arg.split(",") if x.strip())
            if not positions:
                raise ValueError("give at least one position, e.g. positions:0,-1")
            return Positions(positions)
        if name == "last":
            n = int(arg) if arg else 1  # "last" alone: the last token
            if n < 1:
                raise ValueError(f"N must be at least 1, got {n}")
            return LastN(n)
        if name == "spans":
            return CharSpans(mean=arg != "tokens")
        if name in ("regex", "regex-mean"):
            re.compile(arg)
            return Regex(arg, mean=name == "regex-mean")
        if name == "sentences":
            return Sentences(arg) if arg else Sentences()
    except (ValueError, re.error) as e:
        raise LensError(f"bad selection {text!r}: {e}") from None
    raise LensError(
        f"unknown selection {text!r}; use all, from:N, last_prompt_token (= last_prompt), first_generated_token, "
        "positions:0,5,-1, last[:N], spans, regex:PATTERN or sentences"
    )
