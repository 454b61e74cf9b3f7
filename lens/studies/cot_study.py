"""Finding 4 (Wang & Zhou 2402.10200): CoT-decoding vs greedy, and the confidence of reasoning branches."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..decoding.cot import ANSWER_PROMPT, confidence_by_reasoning, cot_decode
from ..evaluation.answers import Extractor
from ..evaluation.metrics import accuracy
from ..models import Model


def run(
    model: Model,
    prompts: Sequence[str],
    answer_ok: Callable[[int, str | None], bool],
    *,
    k: int = 10,
    max_new_tokens: int = 120,
    extractor: str | Extractor = "auto",
    is_reasoning: Callable[[str], bool] | None = None,
    batch_size: int = 160,
    answer_prompt: str | None = ANSWER_PROMPT,
    say: Callable[[str], None] = lambda _m: None,
    data_parallel: bool | None = None,
) -> dict:
    """Accuracy of greedy (the rank-0 branch), CoT-decoding (max and sum) and the branch confidences.

    answer_ok(i, answer) checks an extracted answer string of prompt ``i``. answer_prompt: appended to a
    branch without an answer to get one (None: no such fallback); ``answered_by_prompt`` counts those.
    data_parallel: under a launcher, the ranks share out the chunks of prompts and every rank
    returns the whole result, equal to one process's; None: inside a `lens.distributed.data_parallel()` block.
    """
    from ..distributed import sharing

    say(f"CoT-decoding: {len(prompts)} prompts x {k} branches")
    res = cot_decode(model, list(prompts), k=k, max_new_tokens=max_new_tokens, extractor=extractor,
                     is_reasoning=is_reasoning, aggregate="max", batch_size=batch_size, answer_prompt=answer_prompt,
                     data_parallel=sharing(data_parallel) is not None)
    from ..decoding.cot import aggregate_branches

    greedy = [answer_ok(i, r.greedy.answer) for i, r in enumerate(res)]
    best = [answer_ok(i, r.answer) for i, r in enumerate(res)]
    summed = [answer_ok(i, aggregate_branches(r.branches, "sum")[0]) for i, r in enumerate(res)]
    conf = {"reasoning": [], "non_reasoning": []}
    for r in res:
        for b in r.branches:
            if b.confidence is not None:
                conf["reasoning" if b.reasoning else "non_reasoning"].append(b.confidence)
    any_right = [any(answer_ok(i, b.answer) for b in r.branches) for i, r in enumerate(res)]
    return {
        "status": "ok", "n": len(prompts), "k": k, "max_new_tokens": max_new_tokens, "answer_prompt": answer_prompt,
        "answered_by_prompt": sum(b.answer_source == "answer_prompt" for r in res for b in r.branches),
        "greedy": accuracy(greedy).as_dict(), "cot": accuracy(best).as_dict(), "cot_sum": accuracy(summed).as_dict(),
        "oracle_any_branch": accuracy(any_right).as_dict(),
        "by_reasoning": confidence_by_reasoning(res), "confidences": conf,
        "branch_reasoning_rate": sum(b.reasoning for r in res for b in r.branches) / max(1, len(res) * k),
        "example": {"greedy": res[0].greedy.text if res else "", "best": (res[0].best.text if res and res[0].best
                                                                          else "")},
    }
