"""The first-step trigger as a causal check of ranked features (He et al., arXiv 2601.08058).

For each feature f and strength alpha, add `alpha * unit decoder direction of f` to the SAE's
site at one position per prompt: by default `Where.first_step()`, the LAST PROMPT TOKEN (position
P-1, whose forward produces the first generated token; touched once, at step 0 under the KV
cache); or `Where.first_generated_token()` (position P, the first generated token itself, touched
at step 1 when it is fed back). Decode greedily, and
measure accuracy, the rate of reasoning-format answers and the tokens used. Controls: random
features of the same SAE (alive, not among those checked) at the same alphas: decoder rows are
unit norm, so a control adds a vector of exactly the same norm. A baseline row (alpha 0) and an
optional reference model (e.g. the thinking model, unsteered) are reported alongside.

Every steered run checks the intervention log: each prompt must be touched exactly once, at the
named position (P-1 at step 0, or P at step 1); the row says so in `only_at_where` (also
written as `first_step_only`, which saved results files read) and names the position in `where`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch

from lens.decoding.generate import generate
from lens.distributed import claimed, gather_indexed, sharing
from lens.errors import LensError
from lens.evaluation.metrics import accuracy
from lens.interventions import Intervention, Where, steer

from .io import Dictionary


def _measure(gen, is_correct, is_reasoning) -> dict:
    texts = [s.text for s in gen.samples]
    acc = accuracy([is_correct(i, t) for i, t in enumerate(texts)])
    toks = [s.n_new_tokens for s in gen.samples]
    return {"accuracy": acc.value, "accuracy_ci": [acc.lo, acc.hi], "reasoning_rate": sum(map(is_reasoning, texts))
            / max(len(texts), 1), "tokens_mean": sum(toks) / max(len(toks), 1), "n": len(texts),
            "example": texts[0][:160] if texts else ""}


def _step_and_offset(where: Where) -> tuple[int, int]:
    """(decode step, position - P) of the one position per prompt that `where` names."""
    if where.kind not in ("first_step", "last_prompt_token", "first_generated_token"):
        raise LensError(f"the steer-check steers one named position per prompt (first_step, last_prompt_token "
                        f"or first_generated_token); got {where.kind!r}")
    return (1, 0) if where.kind == "first_generated_token" else (0, -1)


def first_step_log_ok(log, n_prompts: int, prompt_lengths: Sequence[int], where: Where | None = None) -> bool:
    """True when each of the n prompts was steered exactly once, at the position `where` names:
    step 0 and position P-1 for `first_step` / `last_prompt_token` (the default), step 1 and
    position P for `first_generated_token`."""
    step, offset = _step_and_offset(where or Where.first_step())
    recs = log.records
    if len(recs) != n_prompts:
        return False
    got = sorted((r["sequence"], r["row"], r["step"], r["position"]) for r in recs)
    return all(s == step for _, _, s, _ in got) and sorted(p for *_, p in got) == sorted(
        p + offset for p in prompt_lengths)


def control_pool(alive: Sequence[int], neutral: Sequence[int], exclude: Sequence[int], n: int,
                 ) -> tuple[list[int], str]:
    """Features to draw `n` random controls from, and which pool it is.

    First choice: features that fire where the steering happens (`alive`) and do not separate the
    conditions (`neutral`). When fewer than `n` of those remain after `exclude` (the features under
    test), every neutral feature: its decoder row is still a unit direction the SAE learned, which is
    what a matched-norm control needs; never a feature that separates the conditions.
    """
    skip, neutral_set = set(exclude), set(neutral)
    first = [f for f in alive if f in neutral_set and f not in skip]
    if len(first) >= n:
        return first, "alive at the steered position, not separating the conditions"
    rest = [f for f in neutral if f not in skip]
    return rest, "not separating the conditions (too few alive at the steered position)"


def steer_check(
    model,
    d: Dictionary,
    features: Sequence[int],
    prompts: Sequence[str],
    is_correct: Callable[[int, str], bool],
    *,
    alphas: Sequence[float] = (4.0, 8.0, 16.0),
    n_random: int = 3,
    random_pool: Sequence[int] | None = None,
    is_reasoning: Callable[[str], bool] | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    reference=None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    where: Where | None = None,
    data_parallel: bool | None = None,
) -> list[dict]:
    """Rows (one per feature x alpha, plus baseline, random controls and reference); JSON-ready.

    random_pool: features to draw controls from (default: every feature not in `features`);
    pass the alive ones. is_reasoning: detector of a reasoning-format completion
    (default `lens.evaluation.behaviours.looks_like_reasoning`).
    where: the one position steered per prompt: `Where.first_step()` (default; = `last_prompt_token()`,
    P-1) or `Where.first_generated_token()` (P).
    data_parallel: under a launcher, the ranks share out the rows' generations (baseline, reference, then
    feature and control runs; `lens.distributed.claimed`) and every rank returns all rows, in this order, equal to
    one process's; None: inside a `lens.distributed.data_parallel()` block.
    """
    from lens.evaluation.behaviours import looks_like_reasoning

    if d.site is None:
        raise LensError("the SAE does not record its site; cannot steer")
    d.check(model, d.site)
    prompts = list(prompts)
    if not prompts:
        raise LensError("steer-check needs at least one prompt")
    is_reasoning = is_reasoning or looks_like_reasoning
    where = where or Where.first_step()
    _step_and_offset(where)  # other kinds are refused before anything runs
    say = progress or (lambda _m: None)
    pool = [f for f in (random_pool if random_pool is not None else range(d.d_sae)) if f not in set(features)]
    rng = random.Random(seed)
    controls = rng.sample(pool, min(n_random, len(pool)))
    plens = [len(ids) for ids in model.tokenizer(prompts, add_special_tokens=True)["input_ids"]]
    jobs: list[tuple[str, int | None, float]] = [("baseline", None, 0.0)]
    if reference is not None:
        jobs.append(("reference", None, 0.0))
    jobs += [(kind, int(f), float(a)) for kind, feats in (("feature", list(features)), ("random", controls))
             for f in feats for a in alphas]

    def run(kind: str, f: int | None, a: float) -> dict:
        if kind == "baseline":
            say("baseline (no steering)")
            return _measure(generate(model, prompts, max_new_tokens, batch_size=batch_size), is_correct, is_reasoning)
        if kind == "reference":
            say("reference model")
            return _measure(generate(reference, prompts, max_new_tokens, batch_size=batch_size), is_correct,
                            is_reasoning)
        say(f"{kind} {f} alpha {a:g}")
        iv = Intervention(d.site, d.direction(f), a, where, op="add", source=f"sae:{d.path}#{f}", name=f"f{f}")
        with steer(model, iv) as h:
            gen = generate(model, prompts, max_new_tokens, batch_size=batch_size)
        return {**_measure(gen, is_correct, is_reasoning),
                "only_at_where": first_step_log_ok(h.log, len(prompts), plens, where), "fired": len(h.log)}

    shared = sharing(data_parallel)
    done = {u: run(*jobs[u]) for u in claimed(len(jobs), shared)}  # each run to the first rank free for it
    if shared is not None:
        done = gather_indexed(done)
    tested = torch.stack([d.direction(f) for f in features]) if len(features) else None
    base = done[0]
    rows: list[dict] = []
    for (kind, f, a), m in zip(jobs, (done[u] for u in range(len(jobs))), strict=True):
        if kind in ("baseline", "reference"):
            rows.append({"kind": kind, "feature": None, "alpha": 0.0,
                         **({"model": reference.spec} if kind == "reference" else {}), **m, "first_step_only": None})
            continue
        # a control whose decoder row leans towards a tested feature's is a weaker control: say how much
        lean = float((tested @ d.direction(f)).max()) if kind == "random" and tested is not None else None
        ok, fired = m.pop("only_at_where"), m.pop("fired")
        rows.append({"kind": kind, "feature": f, "alpha": a, **m, "delta_accuracy": m["accuracy"] - base["accuracy"],
                     "where": where.kind, "only_at_where": ok, "first_step_only": ok, "fired": fired,
                     **({"max_cos_to_tested": lean} if lean is not None else {})})
    return rows


def summarize(rows: list[dict]) -> dict:
    """Best feature row, the largest random-control move, and the reference gap (JSON-ready)."""
    base = next((r for r in rows if r["kind"] == "baseline"), None)
    ref = next((r for r in rows if r["kind"] == "reference"), None)
    feats = [r for r in rows if r["kind"] == "feature"]
    rand = [r for r in rows if r["kind"] == "random"]
    best = max(feats, key=lambda r: r["accuracy"], default=None)
    out = {"baseline_accuracy": base["accuracy"] if base else None,
           "reference_accuracy": ref["accuracy"] if ref else None,
           "best_feature": best["feature"] if best else None, "best_alpha": best["alpha"] if best else None,
           "best_accuracy": best["accuracy"] if best else None,
           "best_reasoning_rate": best["reasoning_rate"] if best else None,
           "best_tokens_mean": best["tokens_mean"] if best else None,
           "max_random_move": max((abs(r["delta_accuracy"]) for r in rand), default=None),
           "max_random_gain": max((r["delta_accuracy"] for r in rand), default=None),
           "max_random_move_at_best_alpha": max((abs(r["delta_accuracy"]) for r in rand
                                                 if best and r["alpha"] == best["alpha"]), default=None),
           "all_first_step_only": all(r["first_step_only"] for r in feats + rand)}
    if ref and best:
        out["gap_to_reference"] = ref["accuracy"] - best["accuracy"]
    return out
