"""CoT-decoding (Wang & Zhou, "Chain-of-Thought Reasoning Without Prompting", arXiv 2402.10200).

For each prompt:

1. one forward pass over the prompt (a ``generate`` call with ``max_new_tokens=1``) gives the
   distribution of the FIRST new token and the prompt's KV cache;
2. the top-``k`` tokens of that distribution start ``k`` branches; the cache is expanded ``k`` times
   (``batch_repeat_interleave``) and ONE batched greedy ``generate`` call continues all branches of
   all prompts of a chunk, feeding only the branch tokens on top of the shared prompt cache;
3. each branch's answer is read by an extractor that returns a character span of the branch text;
   the span is mapped to token positions through the tokenizer's offsets
   (:func:`lens.decoding.spans.token_char_spans`);
4. confidence = mean over the answer's tokens of p(top-1) - p(top-2) of the model's distribution at
   that position (for a token at step 0 this is the prompt's distribution, shared by all branches);
5. a branch without an answer gets one as the paper does: the answer prompt (default
   ``"\nSo the answer is"``) is appended to the branch and decoding continues greedily (at most
   ``answer_max_new_tokens``, up to the first newline); the answer is read from that continuation and
   its confidence is the margin over the continuation's answer tokens (``answer_source="answer_prompt"``);
6. the prompt's answer is the most confident branch's (``aggregate="max"``) or the answer whose
   branches' confidences sum highest (``aggregate="sum"``); numerically equal answers (``18``,
   ``18.0``, ``18.00``, ``1/2`` and ``0.5``) count as one, named by the spelling of the lowest-ranked
   branch that gave it.

:func:`cot_decode_reference` does the same with ``k`` separate, uncached-prompt runs per prompt: the
slow, obviously-correct version that tests and the benchmark compare against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..batching import left_pad, pad_id
from ..errors import LensError
from ..evaluation.answers import Extractor, get_extractor, normalise, to_number
from ..evaluation.behaviours import looks_like_reasoning
from .generate import (
    Prompt,
    StepProcessor,
    StopStrings,
    cache_kwarg,
    cut_at_eos,
    encode_prompts,
    eos_ids,
    generate,
    generation_config,
)
from .loop import returned_cache
from .spans import decode, token_char_spans, tokens_in_span

#: Appended to a branch that has no answer, as in Wang & Zhou (2402.10200, "So the answer is"); the
#: leading newline is the unofficial sglang example's (examples/frontend_language/usage/cot_decoding.py).
ANSWER_PROMPT = "\nSo the answer is"


@dataclass
class Branch:
    """One branch: the ``rank``-th most likely first token, then greedy decoding.

    text: the branch's completion (first token included); token_ids: its generated ids.
    margins: p(top-1) - p(top-2) at each generated position (``[n_new]``).
    answer / answer_span: extracted answer and its character span in ``text`` (in ``fallback_text``
        when ``answer_source`` is ``"answer_prompt"``); None if none.
    answer_tokens: positions of the answer's tokens: indices into ``token_ids`` (into
        ``fallback_token_ids`` for an answer read after the answer prompt).
    confidence: mean of ``margins`` (``fallback_margins``) over ``answer_tokens`` (None when there is no answer).
    reasoning: the ``is_reasoning`` predicate on ``text``.
    answer_source: ``"branch"`` (read from the branch), ``"answer_prompt"`` (read from the greedy
        continuation after the answer prompt) or ``"none"``.
    fallback_text / fallback_token_ids / fallback_margins: that continuation (answer prompt excluded),
        its ids and its margins; empty (None) when the answer prompt was not used.
    """

    rank: int
    first_token: int
    first_token_prob: float
    text: str
    token_ids: list[int]
    finish_reason: str
    margins: Float[Tensor, " n_new"]
    answer: str | None
    answer_span: tuple[int, int] | None
    answer_tokens: list[int]
    confidence: float | None
    reasoning: bool
    answer_source: str = "branch"
    fallback_text: str = ""
    fallback_token_ids: list[int] = field(default_factory=list)
    fallback_margins: Float[Tensor, " n_fallback"] | None = None

    @property
    def n_new_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class CotResult:
    """CoT-decoding of one prompt: all ``k`` branches, the chosen answer and the per-answer scores."""

    prompt_index: int
    branches: list[Branch]
    answer: str | None
    aggregate: str
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def greedy(self) -> Branch:
        """The rank-0 branch: plain greedy decoding."""
        return self.branches[0]

    @property
    def best(self) -> Branch | None:
        """The most confident branch that has an answer."""
        scored = [b for b in self.branches if b.confidence is not None]
        return max(scored, key=lambda b: (b.confidence, -b.rank)) if scored else None


def _finish_branch(
    tokenizer: Any,
    raw_ids: Sequence[int],
    raw_margins: Tensor,
    eos: Sequence[int],
    stop_strings: Sequence[str],
) -> tuple[list[int], str, str, Tensor]:
    """Cut a branch's raw ids at the first EOS or stop string; (ids, text, reason, margins)."""
    ids = [int(t) for t in raw_ids]
    end, reason = cut_at_eos(ids, eos)
    ids = ids[:end]
    text = decode(tokenizer, ids)
    hits = [text.find(s) + len(s) for s in stop_strings if s and s in text]
    if hits:
        cut = min(hits)
        spans = token_char_spans(tokenizer, ids, text)
        last = next((j for j, (_, e) in enumerate(spans) if e >= cut), len(ids) - 1)
        ids = ids[: last + 1]
        text = decode(tokenizer, ids)
        text = text[: min((text.find(s) + len(s) for s in stop_strings if s and s in text), default=len(text))]
        reason = "stop"
    return ids, text, reason, raw_margins[: len(ids)].clone()


def _score_branch(
    tokenizer: Any,
    rank: int,
    first_prob: float,
    ids: list[int],
    text: str,
    reason: str,
    margins: Tensor,
    extractor: Extractor,
    is_reasoning: Callable[[str], bool],
) -> Branch:
    got = extractor(text)
    answer_tokens: list[int] = []
    confidence = None
    if got is not None:
        spans = token_char_spans(tokenizer, ids, text)
        answer_tokens = tokens_in_span(spans, got.start, got.end)
        if answer_tokens:
            confidence = float(margins[answer_tokens].mean())
    return Branch(
        rank=rank,
        first_token=ids[0] if ids else -1,
        first_token_prob=first_prob,
        text=text,
        token_ids=ids,
        finish_reason=reason,
        margins=margins,
        answer=None if got is None else got.value,
        answer_span=None if got is None else (got.start, got.end),
        answer_tokens=answer_tokens,
        confidence=confidence,
        reasoning=bool(is_reasoning(text)),
        answer_source="branch" if got is not None else "none",
    )


def _branch_json(b: Branch) -> dict:
    """A branch as JSON (tensors as float lists) for the data-parallel gather."""
    from .gather import tensor_json

    return {**{k: v for k, v in b.__dict__.items() if k not in ("margins", "fallback_margins")},
            "margins": tensor_json(b.margins), "fallback_margins": tensor_json(b.fallback_margins)}


def _branch_back(d: dict) -> Branch:
    from .gather import tensor_back

    span = d["answer_span"]
    return Branch(**{**d, "answer_span": tuple(span) if span is not None else None,
                     "margins": tensor_back(d["margins"], 0),
                     "fallback_margins": tensor_back(d["fallback_margins"], 0)})


def _answer_prompt_ids(model: Any, answer_prompt: str | None, max_new_tokens: int) -> list[int]:
    """Token ids of the answer prompt ([] when None); refused when the tokenizer cannot spell it."""
    if answer_prompt is None:
        return []
    if max_new_tokens < 1:
        raise LensError(f"answer_max_new_tokens must be >= 1 with an answer prompt, got {max_new_tokens}")
    ids = list(model.tokenizer(answer_prompt, add_special_tokens=False)["input_ids"])
    unk = getattr(model.tokenizer, "unk_token_id", None)
    if not ids or (unk is not None and unk in ids):
        raise LensError(f"the tokenizer cannot spell the answer prompt {answer_prompt!r} (it maps to "
                        f"{'nothing' if not ids else 'the unknown token'}); pass answer_prompt=None or one it can")
    return ids


def _answer_by_prompt(
    model: Any,
    items: Sequence[tuple[list[int], Branch]],
    tail: list[int],
    max_new_tokens: int,
    eos: Sequence[int],
    extract: Extractor,
    batch_size: int,
    data_parallel: bool = False,
) -> None:
    """Answer each ``(prompt ids, branch)`` without an answer: append ``tail`` (the answer prompt's ids) to
    prompt + branch (a final EOS dropped), continue greedily to the first newline, read the answer there."""
    if not items or not tail:
        return
    contexts = []
    for prompt_ids, b in items:
        ids = list(b.token_ids)
        if ids and b.finish_reason == "eos" and ids[-1] in set(eos):
            ids = ids[:-1]
        contexts.append([*prompt_ids, *ids, *tail])
    g = generate(model, contexts, max_new_tokens, greedy=True, batch_size=batch_size, stop_strings=("\n",),
                 eos_token_id=list(eos) or None, return_top2=True, data_parallel=data_parallel)
    for (_, b), smp in zip(items, g.samples, strict=True):
        assert smp.top2 is not None
        b.fallback_text, b.fallback_token_ids = smp.text, list(smp.token_ids)
        b.fallback_margins = smp.top2[:, 0] - smp.top2[:, 1]
        got = extract(smp.text)
        if got is None:
            continue
        spans = token_char_spans(model.tokenizer, smp.token_ids, smp.text)
        b.answer_tokens = tokens_in_span(spans, got.start, got.end)
        b.answer, b.answer_span, b.answer_source = got.value, (got.start, got.end), "answer_prompt"
        b.confidence = float(b.fallback_margins[b.answer_tokens].mean()) if b.answer_tokens else None


def answer_key(answer: str) -> str:
    """What makes two answers the same for aggregation: the number they denote (``18`` = ``18.0`` =
    ``18.00``, ``1/2`` = ``0.5``, to 12 significant digits), else the normalised string."""
    x = to_number(answer)
    return f"number:{x + 0.0:.12g}" if x is not None else f"text:{normalise(answer)}"


def aggregate_branches(branches: Sequence[Branch], aggregate: str = "max") -> tuple[str | None, dict[str, float]]:
    """(answer, score per distinct answer): ``max`` = best single confidence, ``sum`` = summed confidences.

    Answers are grouped by :func:`answer_key` (numerically equal answers together); a group is named
    by the spelling of its lowest-ranked branch, and ties go to the group seen first (lowest rank).
    """
    if aggregate not in ("max", "sum"):
        raise LensError(f"aggregate must be 'max' or 'sum', got {aggregate!r}")
    name: dict[str, str] = {}  # key -> spelling of the lowest-ranked branch with that answer
    first_seen: dict[str, int] = {}
    for b in sorted(branches, key=lambda b: b.rank):
        if b.answer is not None:
            key = answer_key(b.answer)
            name.setdefault(key, b.answer)
            first_seen.setdefault(key, b.rank)
    scores: dict[str, float] = {}
    for b in branches:
        if b.answer is None or b.confidence is None:
            continue
        label = name[answer_key(b.answer)]
        if aggregate == "sum":
            scores[label] = scores.get(label, 0.0) + b.confidence
        else:
            scores[label] = max(scores.get(label, float("-inf")), b.confidence)
    if not scores:
        return None, scores
    answer = max(scores, key=lambda a: (scores[a], -first_seen[answer_key(a)]))
    return answer, scores


def _check(k: int, max_new_tokens: int, model: Any) -> None:
    if k < 1:
        raise LensError(f"k must be >= 1, got {k}")
    if k > model.vocab_size:
        raise LensError(f"k={k} exceeds the vocabulary ({model.vocab_size} tokens)")
    if max_new_tokens < 2:
        raise LensError(
            f"CoT-decoding needs max_new_tokens >= 2 (the branch token and its continuation), got {max_new_tokens}"
        )


def cot_decode(
    model: Any,
    prompts: Sequence[Prompt],
    k: int = 10,
    max_new_tokens: int = 128,
    *,
    extractor: str | Extractor = "auto",
    is_reasoning: Callable[[str], bool] | None = None,
    aggregate: str = "max",
    batch_size: int = 64,
    stop_strings: Sequence[str] = (),
    eos_token_id: int | Sequence[int] | None | str = "default",
    add_special_tokens: bool = True,
    answer_prompt: str | None = ANSWER_PROMPT,
    answer_max_new_tokens: int = 16,
    data_parallel: bool = False,
) -> list[CotResult]:
    """CoT-decoding of every prompt: ``k`` first-token branches, continued greedily, scored, aggregated.

    max_new_tokens counts the branch token. batch_size bounds the rows of one continuation call:
    ``max(1, batch_size // k)`` prompts (times ``k`` branches) share a call. For the prompt format of
    the paper use ``lens.evaluation.templates.apply_template("plain", questions)``.
    extractor: how to read a branch's answer and its character span (see ``lens.evaluation.answers``).
    is_reasoning: predicate on a branch's text; default
    :func:`lens.evaluation.behaviours.looks_like_reasoning`.
    answer_prompt: appended to a branch without an answer, which then continues greedily for at most
    ``answer_max_new_tokens`` (up to a newline) to give one; None: such a branch stays without answer.
    data_parallel: under a launcher (`lens.distributed`), the ranks share out the chunks of
    prompts (and of the answer-prompt continuations); every rank returns all results, equal to one
    process's.
    """
    _check(k, max_new_tokens, model)
    extract = get_extractor(extractor)
    reasoning = is_reasoning or looks_like_reasoning
    tail = _answer_prompt_ids(model, answer_prompt, answer_max_new_tokens)
    encoded = encode_prompts(model, prompts, add_special_tokens)
    pad = pad_id(model.tokenizer)
    eos = eos_ids(model, eos_token_id)
    per_call = max(1, batch_size // k)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    results: dict[int, CotResult] = {}
    model.hf.eval()
    from transformers import LogitsProcessorList, StoppingCriteriaList

    from .gather import my_batches

    starts, shared = my_batches(list(range(0, len(order), per_call)), data_parallel)
    for start in starts:
        chunk = order[start : start + per_call]
        ids, mask = left_pad([encoded[i] for i in chunk], pad, model.device)
        with torch.no_grad():
            first = model.hf.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=generation_config(
                    model, 1, pad, eos, ids.shape[1], output_logits=True, return_dict_in_generate=True
                ),
            )
        probs0 = first.logits[0].float().softmax(-1)  # [P, V]: distribution of the first new token
        top = probs0.topk(max(k, 2), dim=-1)
        margin0 = (top.values[:, 0] - top.values[:, 1]).cpu()
        branch_tokens = top.indices[:, :k]  # [P, k]
        cache = returned_cache(first)
        cache.batch_repeat_interleave(k)
        ids2 = torch.cat([ids.repeat_interleave(k, 0), branch_tokens.reshape(-1, 1)], dim=1)
        mask2 = torch.cat([mask.repeat_interleave(k, 0), torch.ones_like(ids2[:, :1])], dim=1)
        proc = StepProcessor(record_top2=True)
        stop = StopStrings(model.tokenizer, stop_strings, ids.shape[1], ids2.shape[0]) if stop_strings else None
        with torch.no_grad():
            out = model.hf.generate(
                input_ids=ids2,
                attention_mask=mask2,
                generation_config=generation_config(
                    model, max_new_tokens - 1, pad, eos, ids2.shape[1], cache_given=True
                ),
                logits_processor=LogitsProcessorList([proc]),
                stopping_criteria=StoppingCriteriaList([stop] if stop else []),
                **{cache_kwarg(): cache},
            )
        del cache
        new = out[:, ids.shape[1] :].cpu()  # branch token + continuation
        top2 = torch.stack(proc.top2, dim=1)  # [P*k, T-1, 2]
        later = top2[..., 0] - top2[..., 1]
        for p, i in enumerate(chunk):
            branches = []
            for r in range(k):
                row = p * k + r
                margins = torch.cat([margin0[p : p + 1], later[row]])
                b_ids, text, reason, m = _finish_branch(
                    model.tokenizer, new[row].tolist(), margins, eos, stop_strings
                )
                p_first = float(top.values[p, r])
                branches.append(
                    _score_branch(model.tokenizer, r, p_first, b_ids, text, reason, m, extract, reasoning)
                )
            results[i] = CotResult(i, branches, None, aggregate)
    if shared is not None:
        from ..distributed import gather_indexed

        got = gather_indexed({i: [_branch_json(b) for b in res.branches] for i, res in results.items()})
        results = {i: CotResult(i, [_branch_back(b) for b in bs], None, aggregate) for i, bs in got.items()}
    missing = [(encoded[i], b) for i in range(len(encoded)) for b in results[i].branches if b.answer is None]
    _answer_by_prompt(model, missing, tail, answer_max_new_tokens, eos, extract, batch_size, shared is not None)
    for res in results.values():
        res.answer, res.scores = aggregate_branches(res.branches, aggregate)
    return [results[i] for i in range(len(encoded))]


def cot_decode_reference(
    model: Any,
    prompts: Sequence[Prompt],
    k: int = 10,
    max_new_tokens: int = 128,
    *,
    extractor: str | Extractor = "auto",
    is_reasoning: Callable[[str], bool] | None = None,
    aggregate: str = "max",
    stop_strings: Sequence[str] = (),
    eos_token_id: int | Sequence[int] | None | str = "default",
    add_special_tokens: bool = True,
    answer_prompt: str | None = ANSWER_PROMPT,
    answer_max_new_tokens: int = 16,
) -> list[CotResult]:
    """The same as :func:`cot_decode`, one prompt and one branch at a time (k+1 runs per prompt, no shared cache).

    Slow on purpose: the reference that tests and ``benchmarks/cot_decoding.py`` compare against.
    """
    _check(k, max_new_tokens, model)
    extract = get_extractor(extractor)
    reasoning = is_reasoning or looks_like_reasoning
    tail = _answer_prompt_ids(model, answer_prompt, answer_max_new_tokens)
    encoded = encode_prompts(model, prompts, add_special_tokens)
    eos = eos_ids(model, eos_token_id)
    out: list[CotResult] = []
    for i, prompt_ids in enumerate(encoded):
        x = torch.tensor([prompt_ids], device=model.device)
        with torch.no_grad():
            logits = model.hf(input_ids=x, attention_mask=torch.ones_like(x)).logits[0, -1]
        probs0 = logits.float().softmax(-1)
        top = probs0.topk(max(k, 2))
        margin0 = float(top.values[0] - top.values[1])
        branches = []
        for r in range(k):
            tok = int(top.indices[r])
            if tok in set(eos):
                raw, margins = [tok], torch.tensor([margin0])
            else:
                g = generate(
                    model, [[*prompt_ids, tok]], max_new_tokens - 1, greedy=True, batch_size=1,
                    stop_strings=stop_strings, eos_token_id=eos or None, return_top2=True,
                )
                s = g.samples[0]
                raw = [tok, *s.token_ids]
                assert s.top2 is not None
                margins = torch.cat([torch.tensor([margin0]), s.top2[:, 0] - s.top2[:, 1]])
            b_ids, text, reason, m = _finish_branch(model.tokenizer, raw, margins, eos, stop_strings)
            branches.append(_score_branch(model.tokenizer, r, float(top.values[r]), b_ids, text, reason, m, extract,
                                          reasoning))
            if branches[-1].answer is None:
                _answer_by_prompt(model, [(prompt_ids, branches[-1])], tail, answer_max_new_tokens, eos, extract, 1)
        answer, scores = aggregate_branches(branches, aggregate)
        out.append(CotResult(i, branches, answer, aggregate, scores))
    return out


def confidence_by_reasoning(results: Sequence[CotResult]) -> dict:
    """Confidence of reasoning vs non-reasoning branches (branches with an answer only).

    Returns ``{"reasoning": {...}, "non_reasoning": {...}}``, each with ``n`` (branches),
    ``mean_confidence`` and ``share_of_best`` (how often the prompt's most confident branch is of
    that kind), plus ``greedy_reasoning_rate`` (share of prompts whose greedy branch reasons).
    """
    groups: dict[str, list[float]] = {"reasoning": [], "non_reasoning": []}
    best_counts = {"reasoning": 0, "non_reasoning": 0}
    for res in results:
        for b in res.branches:
            if b.confidence is not None:
                groups["reasoning" if b.reasoning else "non_reasoning"].append(b.confidence)
        best = res.best
        if best is not None:
            best_counts["reasoning" if best.reasoning else "non_reasoning"] += 1
    n_best = sum(best_counts.values())
    out: dict = {}
    for name, vals in groups.items():
        out[name] = {
            "n": len(vals),
            "mean_confidence": sum(vals) / len(vals) if vals else float("nan"),
            "share_of_best": best_counts[name] / n_best if n_best else float("nan"),
        }
    out["greedy_reasoning_rate"] = (
        sum(r.greedy.reasoning for r in results) / len(results) if results else float("nan")
    )
    return out
