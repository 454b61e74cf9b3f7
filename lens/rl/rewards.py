"""Rewards for RL with verifiable rewards: named functions of one completion and its problem.

A reward is ``fn(completion, problem, ctx) -> float``: ``completion`` is the generated text (prompt
excluded), ``problem`` the task row (``answer``, ``id``, and ``incorrect_answer`` for the incorrect-label
reward), ``ctx`` a :class:`RewardContext` (answer extractor, thinking format, seed, training step, the
completion's index in its batch). The registry holds the rewards of the spurious-rewards paper
(Shao et al. 2025, arXiv 2506.10947, code: ruixin31/Rethink_RLVR) and one variant of ours:

========== ==================================================================================
correct    1 when the extracted answer equals the reference (the task set's checker); RLVR's reward
format     1 when the completion closes a thinking block and an answer can be read after it, whatever
           its value (the thinking-format analogue of the paper's ``box_only_format``)
boxed      1 when the completion holds a non-empty ``\\boxed{...}`` (the paper's ``box_only_format``)
random     1 with probability 0.5, independent of the completion (the paper's ``random0.5``); seeded
           by (seed, step, index in batch), so a resumed run draws the same rewards
incorrect  1 when the extracted answer equals the problem's *incorrect label* (the paper's
           incorrect-label reward: labels are a model's majority-vote answers, kept only where wrong;
           see ``lens.rl.data.majority_wrong_labels``)
wrong      (ours) 1 for any extracted answer that is not the reference
========== ==================================================================================

Any callable with the same signature can be passed instead of a name, or named as
``package.module:function`` on the command line.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import LensError, closest
from ..evaluation.answers import NumericChecker, boxed, extract_answer
from ..evaluation.behaviours import ThinkingFormat


@dataclass(frozen=True)
class RewardContext:
    """What a reward may read besides the completion and its problem."""

    extractor: str = "auto"
    fmt: ThinkingFormat = field(default_factory=ThinkingFormat)
    seed: int = 0
    step: int = 0
    index: int = 0
    prefilled: bool = False  # the prompt opened the thinking block (R1's template)


Reward = Callable[[str, Mapping, RewardContext], float]


def _answer(completion: str, ctx: RewardContext) -> str | None:
    return extract_answer(completion, ctx.extractor)


def correct(completion: str, problem: Mapping, ctx: RewardContext) -> float:
    """1.0 when the answer read from the completion equals the reference answer, else 0.0."""
    return float(NumericChecker()(_answer(completion, ctx), problem["answer"]))


def thinking_format(completion: str, problem: Mapping, ctx: RewardContext) -> float:
    """1.0 when the completion closes a thinking block and an answer follows it (its value ignored)."""
    if not ctx.fmt.complete(completion, prefilled=ctx.prefilled):
        return 0.0
    close = completion.rfind(ctx.fmt.close)
    return float(_answer(completion[close + len(ctx.fmt.close):], ctx) is not None)


def box_only_format(completion: str, problem: Mapping, ctx: RewardContext) -> float:
    """1.0 when the completion holds a non-empty ``\\boxed{}`` (the spurious-rewards format reward)."""
    got = boxed(completion)
    return float(got is not None and got.value.strip() != "")


def random_half(completion: str, problem: Mapping, ctx: RewardContext) -> float:
    """1.0 with probability 0.5, from a hash of (seed, step, index): independent of the completion."""
    h = hashlib.sha256(f"{ctx.seed}:{ctx.step}:{ctx.index}".encode()).digest()
    return float(h[0] < 128)


def incorrect_label(completion: str, problem: Mapping, ctx: RewardContext) -> float:
    """1.0 when the answer equals the problem's incorrect label (``problem["incorrect_answer"]``)."""
    label = problem.get("incorrect_answer")
    if label is None or label == "":
        raise LensError("reward 'incorrect' needs an incorrect label per problem (field incorrect_answer): make "
                        "them with lens.rl.data.majority_wrong_labels or use reward 'wrong' (any wrong answer)")
    return float(NumericChecker()(_answer(completion, ctx), label))


def any_wrong(completion: str, problem: Mapping, ctx: RewardContext) -> float:
    """1.0 when an answer can be read and it is not the reference (our variant of the incorrect reward)."""
    got = _answer(completion, ctx)
    return float(got is not None and not NumericChecker()(got, problem["answer"]))


REWARDS: dict[str, Reward] = {
    "correct": correct,
    "format": thinking_format,
    "boxed": box_only_format,
    "random": random_half,
    "incorrect": incorrect_label,
    "wrong": any_wrong,
}


def get_reward(name: str | Reward) -> tuple[str, Reward]:
    """The reward named ``name`` (a registry name or ``package.module:function``), or a callable as given."""
    if callable(name):
        return getattr(name, "__name__", "custom"), name
    if name in REWARDS:
        return name, REWARDS[name]
    if ":" in name:
        mod, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise LensError(f"cannot import reward {name!r}: {e}") from None
        if not callable(fn):
            raise LensError(f"reward {name!r} is not a function")
        return attr, fn
    hint = closest(name, list(REWARDS))
    raise LensError(f"unknown reward {name!r}: use one of {', '.join(REWARDS)} or package.module:function"
                    + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def score(reward: Reward, completions: Sequence[str], problems: Sequence[Mapping], ctx: RewardContext) -> list[float]:
    """The reward of each completion (``ctx.index`` set to its place in the batch)."""
    out = []
    for i, (c, p) in enumerate(zip(completions, problems, strict=True)):
        v = reward(c, p, RewardContext(ctx.extractor, ctx.fmt, ctx.seed, ctx.step, i, ctx.prefilled))
        out.append(float(v))
    return out
