"""The hybrid study on a task set: base, thinking and hybrid accuracy, gap recovered, ablations.

Category vectors come from labelled thinking traces: the BASE model's mean residual at `site`
over each labelled step (one-vs-rest over step labels), plus a bias vector (the base's difference
of means between inputs that ask for reasoning and inputs that ask for a direct answer). Each is
scaled to `norm_frac` x the mean residual norm where it was measured, so coefficients span a known range.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..capture_memory import capture
from ..decoding.generate import generate
from ..directions import diff_of_means, one_vs_rest
from ..errors import LensError
from ..evaluation.metrics import accuracy, gap_recovered
from ..models import Model
from .config import ALL_ABLATIONS, NO_GUARDRAIL_COEFFICIENT, PAPER_ANSWER_PROMPT, PAPER_COEFFICIENTS, HybridConfig
from .generate import hybrid_generate

PAPER_12 = ("runs.none.fraction_steered: mode paper, where every gated step is steered (the paper's "
            "'tokens steered', 12% on its pairs); runs.unsteered_allowed.fraction_steered counts only steps "
            "where a steered token beat the unsteered one and is not comparable")


def category_vectors(
    base: Model,
    traces: Sequence[dict],
    site: str,
    bias_pos: Sequence,
    bias_neg: Sequence,
    norm_frac: float = 0.5,
    bias_select: str = "last_prompt",
    step_labels: Sequence[str] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
    """(bias, {label: vector}, info) for the hybrid, all on the BASE model's residual at `site`.

    traces: {"prompt", "completion", "spans": [[start, end, label], ...]} (spans index prompt+completion);
        category vectors are one-vs-rest means of the labelled steps, each scaled to `norm_frac` x
        the mean residual norm over steps.
    bias_pos / bias_neg: inputs whose `bias_select` tokens differ by reasoning mode (e.g. prompts that
        ask to think vs to answer directly); the bias is their difference of means, scaled to
        `norm_frac` x the mean residual norm at those tokens.
    step_labels: one label per labelled step (in capture order) replacing the spans' own labels,
        e.g. each step's taxonomy category.
    """
    steps = capture(base, traces, site, "spans", progress=False)
    labels = steps.labels if step_labels is None else list(step_labels)
    if len(labels) != steps[site].shape[0]:
        raise LensError(f"{len(labels)} step labels for {steps[site].shape[0]} labelled steps")
    pos = capture(base, list(bias_pos), site, bias_select, progress=False)
    neg = capture(base, list(bias_neg), site, bias_select, progress=False)
    step_norm = float(steps[site].norm(dim=-1).mean())
    bias_dir = diff_of_means(site, pos, neg, normalize=True)
    bias_norm = norm_frac * bias_dir.info["mean_resid_norm"]
    cats = {k: d.vector * norm_frac * step_norm
            for k, d in one_vs_rest(site, steps, labels, normalize=True).items()}
    counts = {k: labels.count(k) for k in cats}
    info = {"step_resid_norm": step_norm, "category_norm": norm_frac * step_norm,
            "bias_resid_norm": bias_dir.info["mean_resid_norm"], "bias_norm": bias_norm, "step_counts": counts}
    return bias_dir.vector * bias_norm, cats, info


def run_study(
    base: Model,
    thinking: Model,
    prompts: Sequence[str],
    is_correct: Callable[[int, str], bool],
    site: str,
    bias: torch.Tensor,
    categories: dict[str, torch.Tensor],
    *,
    max_new_tokens: int = 96,
    coefficients: tuple[float, ...] = PAPER_COEFFICIENTS,
    ablations: Sequence[str] = ALL_ABLATIONS,
    batch_size: int = 64,
    seed: int = 0,
    selector: object = "nearest",
    progress: Callable[[str], None] | None = None,
    thinking_prompts: Sequence[str] | None = None,
    read_site: str | None = None,
    unsteered_allowed: bool = True,
    think_close: str | None = "</think>",
    answer_prompt: str = PAPER_ANSWER_PROMPT,
    no_guardrail_coefficient: float = NO_GUARDRAIL_COEFFICIENT,
    selector_variants: dict[str, object] | None = None,
    data_parallel: bool | None = None,
    steer_positions: str = "newest",
    candidate_batch: int = 32,
    category_sites: dict[str, str] | None = None,
    site_biases: dict[str, torch.Tensor] | None = None,
) -> dict:
    """Accuracy of base, thinking and the hybrid (and each ablation), gap recovered, tokens steered.

    Every ablation runs in mode paper (`lens.hybrid.config`); `unsteered_allowed` adds one run of lens's
    earlier mode under that name. selector: as in :class:`HybridConfig` ("nearest" or a callable
    [batch, d] -> category indices). site: the steer site; read_site: where the thinking model's residual is
    read for the selector (default `site`). thinking_prompts: the thinking model's own prompts for the same
    problems (default `prompts`): its greedy run and its side of the hybrid read them (`hybrid_generate`).
    think_close / answer_prompt: the reasoning phase of mode paper (`lens.hybrid.region`).
    no_guardrail_coefficient: the fixed coefficient of the no_guardrail ablation (must be in `coefficients`).
    steer_positions: where the mode-paper runs steer a candidate ("newest" or "all", `HybridConfig`); the
    unsteered_allowed run always steers the newest position. candidate_batch: the most sweep candidates per
    base forward (`HybridConfig`; memory only, the tokens do not depend on it). category_sites / site_biases:
    categories steered at other sites than `site`, and the bias at each of those (`HybridConfig`).
    selector_variants: {run name: selector}, one more run each in mode paper without ablation, reported
    beside the hybrid (e.g. ``live_only``: the taxonomy's argmax over the latents with a category).
    data_parallel: under a launcher (`lens.distributed`), the ranks share out the batches of prompts (the
    batches one process forms; `lens.distributed.claimed`) of the greedy runs and of every hybrid run; the
    per-batch results reach every rank in input order and the metrics are formed from them once, so the
    result equals one process's. True: split when launched with several processes; False: never; None: inside a
    `lens.distributed.data_parallel()` block. Random draws follow each prompt's index
    (`lens.hybrid.config.Draws`), never its rank or batch.
    """
    from ..distributed import claimed, gather_indexed, sharing

    t_prompts = list(prompts if thinking_prompts is None else thinking_prompts)
    if len(t_prompts) != len(prompts):
        raise LensError(f"{len(t_prompts)} thinking prompts for {len(prompts)} prompts")
    say = progress or (lambda _msg: None)
    if "no_guardrail" in ablations:  # refuse a no_guardrail coefficient outside the sweep before any generation
        HybridConfig(site, categories, coefficients=coefficients, ablation="no_guardrail",
                     no_guardrail_coefficient=no_guardrail_coefficient)

    def score(texts: list[str]) -> list[float]:
        return [float(is_correct(i, t)) for i, t in enumerate(texts)]

    shared = sharing(data_parallel)
    starts = list(range(0, len(prompts), batch_size))
    split = shared is not None
    say("greedy base / thinking")
    b_texts = [s.text for s in generate(base, list(prompts), max_new_tokens, batch_size=batch_size,
                                        data_parallel=split).samples]
    t_texts = [s.text for s in generate(thinking, t_prompts, max_new_tokens, batch_size=batch_size,
                                        data_parallel=split).samples]
    b, t = score(b_texts), score(t_texts)
    out = {"site": site, "read_site": read_site or site, "n": len(prompts), "coefficients": list(coefficients),
           "no_guardrail_coefficient": no_guardrail_coefficient, "steer_positions": steer_positions,
           "category_sites": dict(category_sites or {}),
           "base": accuracy(b).as_dict(), "thinking": accuracy(t).as_dict(), "runs": {}}
    runs = [(ab, "paper", ab, selector) for ab in ablations]
    runs += [(name, "paper", "none", sel) for name, sel in (selector_variants or {}).items()]
    runs += [("unsteered_allowed", "unsteered_allowed", "none", selector)] if unsteered_allowed else []
    local: dict[int, list] = {}  # (run, batch) -> this rank's results, gathered once after every run
    n_batches = len(starts)
    cfgs = [HybridConfig(site, categories, bias=bias, coefficients=coefficients, ablation=ab, seed=seed,
                         selector=sel, mode=mode, read_site=read_site, think_close=think_close,
                         answer_prompt=answer_prompt, no_guardrail_coefficient=no_guardrail_coefficient,
                         steer_positions=steer_positions if mode == "paper" else "newest",
                         candidate_batch=candidate_batch, category_sites=category_sites, site_biases=site_biases)
            for _name, mode, ab, sel in runs]
    said = -1
    for unit in claimed(len(runs) * n_batches, shared):  # (run, batch) units: all of them in one process
        r_i, i = unit // n_batches, (unit % n_batches) * batch_size
        if r_i != said:
            said = r_i
            say(f"hybrid ({runs[r_i][0]})")
        chunk = list(prompts[i : i + batch_size])
        res = hybrid_generate(base, thinking, chunk, cfgs[r_i], max_new_tokens=max_new_tokens,
                              thinking_prompts=t_prompts[i : i + batch_size], rows=range(i, i + len(chunk)))
        local[unit] = [res.texts, res.n_tokens(), res.n_steered(), res.n_gated(), res.think_region,
                       list(res.category_use().items())]
    every = gather_indexed(local) if split else local  # one exchange: the ranks wait for each other once
    for r_i, (name, mode, ab, _sel) in enumerate(runs):
        texts, steered, gated, use, region = [], 0, 0, {}, False
        n_tok = 0
        for b_i in range(n_batches):  # every batch, in input order
            part_texts, part_tok, part_steered, part_gated, part_region, part_use = every[r_i * n_batches + b_i]
            texts += part_texts
            n_tok += part_tok  # exact integer counts; the fractions are formed once, in float64
            steered += part_steered
            gated += part_gated
            region |= part_region
            for k, v in part_use:
                use[k] = use.get(k, 0) + v
        h = score(texts)
        gap = gap_recovered(b, h, t, seed=seed)
        out["runs"][name] = {"mode": mode, "ablation": ab, "accuracy": accuracy(h).as_dict(),
                             "gap_recovered": gap.value, "gap_ci": [gap.lo, gap.hi],
                             "fraction_steered": steered / max(n_tok, 1), "fraction_gated": gated / max(n_tok, 1),
                             "think_region": region, "category_use": use, "example": texts[0] if texts else ""}
    out["hybrid"] = out["runs"].get("none")
    out["fraction_steered"] = {m: out["runs"][k]["fraction_steered"] for m, k in
                               (("paper", "none"), ("unsteered_allowed", "unsteered_allowed")) if k in out["runs"]}
    out["paper_comparable"] = PAPER_12
    return out
