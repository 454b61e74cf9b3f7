"""Experiment pages of the ``lens reproduce`` report, one per finding, from the results dict.

:func:`build_report` takes the dict that :func:`lens.studies.reproduce.reproduce` writes to
``results.json`` (plain JSON: Estimates as ``{value, lo, hi, n}`` dicts) plus optional feature
dashboard data, and returns a :class:`~lens.dashboards.report.Report`. A step whose ``status`` is
not ``"ok"`` gets a page that says why it was skipped instead of figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from . import figures as F
from .features import feature_page
from .report import Page, Report


def _skipped(page: Page, step: Mapping | None) -> bool:
    if not step:
        page.note("This step was not run.", "skip")
        return True
    if step.get("status", "ok") != "ok":
        page.note(f"Skipped: {step.get('reason', 'no reason recorded')}", "skip")
        return True
    return False


def overview_page(report: Report, results: Mapping) -> Page:
    page = report.page("Overview", lead="Each finding re-run on this model pair, next to the paper's number where "
                                        "the paper has one. Intervals are 95% (bootstrap over problems or Wilson).")
    for t in results.get("tables", []):
        page.table(t["rows"], caption=t["title"])
    meta = results.get("meta", {})
    if meta:
        page.table([{"field": k, "value": v} for k, v in meta.items() if not isinstance(v, (dict, list))],
                   caption="run")
    return page


def sampling_page(report: Report, step: Mapping | None) -> Page:
    page = report.page("1. Base models already sample reasoning", id="sampling",
                       lead="Unbiased pass@k from n samples per problem (base vs thinking), and how often the "
                            "base's own samples use the thinking format or reflect.")
    if _skipped(page, step):
        return page
    page.figure(F.pass_at_k(step["pass_at_k"], f"pass@k on {step.get('n', '?')} problems, "
                                               f"{step.get('samples', '?')} samples each (95% bootstrap CI)"))
    beh = step.get("behaviour", {})
    cats = {"thinking format": "thinking_rate", "self-reflection": "reflection_rate",
            "accuracy": "accuracy"}
    groups = {m: {label: b.get(key) for label, key in cats.items() if b.get(key) is not None}
              for m, b in beh.items()}
    if groups:
        page.figure(F.grouped_bars(groups, "Behaviour of the samples (share of all samples)",
                                   "samples (%)", "behaviour"), height=380)
    if step.get("reflection_at_k"):
        curves = {m: {k: v for k, v in r.items()} for m, r in step["reflection_at_k"].items()}
        page.figure(F.pass_at_k(curves, "reflection@k: chance that one of k samples reflects",
                                 "reflection@k (% of problems)"), height=380)
    keys = list(dict.fromkeys(k for b in beh.values() for k, v in b.items() if not isinstance(v, dict)))
    page.table([{"measure": k, **{m: b.get(k, "") for m, b in beh.items()}} for k in keys],
               caption="behaviour vs correctness (all samples)")
    return page


def hybrid_page(report: Report, step: Mapping | None) -> Page:
    page = report.page("2. Hybrid: base weights + thinking timing", id="hybrid",
                       lead="The base model steered by category vectors only where the thinking model would act "
                            "differently; ablations replace the category choice, the vectors or the guardrail.")
    if _skipped(page, step):
        return page
    runs = step.get("runs", {})
    acc = {"base": step["base"], "thinking": step["thinking"]}
    acc.update({("hybrid" if k == "none" else f"hybrid: {k}"): r["accuracy"] for k, r in runs.items()})
    page.figure(F.grouped_bars({"accuracy": acc}, f"Accuracy on {step.get('n', '?')} held-out problems "
                                                  "(95% Wilson CI)", "accuracy (%)", "model / hybrid run"), height=400)
    page.figure(F.gap_vs_steered({("hybrid" if k == "none" else k): r for k, r in runs.items()},
                                 "Gap recovered vs share of tokens steered (95% paired-bootstrap CI)"))
    page.table([{"run": k, "accuracy": r["accuracy"]["value"], "gap recovered": r["gap_recovered"],
                 "gap CI": r.get("gap_ci"), "tokens steered": r["fraction_steered"],
                 "tokens gated": r.get("fraction_gated"), "category use": r.get("category_use")}
                for k, r in runs.items()], caption=f"runs at {step.get('site', '')}")
    return page


def diff_page(report: Report, step: Mapping | None) -> Page:
    page = report.page("3. Model-pair diff", id="diff",
                       lead="How far tuning moved each layer's weights, and whether the activation change runs "
                            "along the base's own think-vs-direct direction.")
    if _skipped(page, step):
        return page
    if step.get("separability"):
        page.figure(F.per_layer(step["separability"], {"auroc": "held-out AUROC", "auroc_train": "train AUROC"},
                                "Separability of the base's reasoning direction (T vs D prompts) by layer",
                                "AUROC of the projection", chance=0.5), height=380)
    if step.get("activations"):
        page.figure(F.per_layer(step["activations"], {"cosine_with_direction": "cosine(mean diff, base direction)",
                                                      "relative": "|mean diff| / |base residual|"},
                                "Activation change thinking - base, by layer", "value"), height=380)
    w = [r for r in step.get("weights", []) if str(r.get("group", "")).startswith("layer")]
    if w:
        page.figure(F.per_layer(w, {"relative_change": "relative Frobenius change",
                                    "fraction_changed": "fraction of parameters changed"},
                                "Weight change thinking vs base, by layer", "relative change / fraction"),
                    height=380)
    page.table(list(step.get("weights", [])), caption="weight diff")
    return page


def rl_page(report: Report, step: Mapping | None) -> Page:
    page = report.page("3. RL with verifiable and spurious rewards", id="rl",
                       lead="GRPO (TRL) on the base and on the control, which never saw a thinking trace, and "
                            "one-problem critique fine-tuning (cft, TRL's SFT): held-out "
                            "greedy accuracy against training step for each run, pass@k before and after "
                            "1-shot RLVR, and where each run's final checkpoint differs from its start (activation "
                            "shift by layer and its cosine with the start model's reasoning direction).")
    if _skipped(page, step):
        return page
    papers = step.get("papers") or {}
    if papers:  # what the curves below are to be read against
        page.table([{"claim": k.replace("_", " "), "the papers' numbers": v} for k, v in papers.items()],
                   caption="the papers' numbers (Qwen2.5-Math and the other real models; the curves below are the "
                           "organism's)")
    for name, m in step.get("models", {}).items():
        rows = [{"step": c["step"], "accuracy": c["heldout_accuracy"], "run": exp}
                for exp, r in m.get("runs", {}).items() for c in r.get("curve", [])]
        if rows:
            page.figure(F.sweep(rows, "step", "accuracy", "run", f"{name}: held-out greedy accuracy vs step",
                                "training step (GRPO; cft: SFT steps)", "accuracy (%)"), height=380)
        train = [{"train": c["train_accuracy"], "accuracy": c["heldout_accuracy"], "run": exp}
                 for exp, r in m.get("runs", {}).items() if exp == "one_shot" for c in r.get("curve", [])]
        if train:
            page.figure(F.sweep(train, "train", "accuracy", "run", f"{name}: held-out vs training accuracy "
                                "(post-saturation: does held-out keep rising once training is solved?)",
                                "training accuracy of the sampled completions", "held-out accuracy (%)"), height=380)
        pk = m.get("pass_at_k")
        if pk:
            rows = [{"k": int(k), "v": v, "model": f"{name} {when}"} for when in ("before", "after")
                    for k, v in pk[when].items()]
            page.figure(F.sweep(rows, "k", "v", "model", f"{name}: pass@k before and after 1-shot RLVR", "k",
                                "pass@k (%)", dashed=[f"{name} before"]), height=380)
        diffs = m.get("diffs") or {}
        if diffs:
            sites = [a["site"] for a in next(iter(diffs.values()))["activations"]]
            for key, what in (("cosine_with_direction", "cosine of the activation shift with the start model's "
                                                        "reasoning direction"),
                              ("relative", "|activation shift| / |residual|")):
                rows = [{"site": s, **{exp: d["activations"][i].get(key, float("nan")) for exp, d in diffs.items()}}
                        for i, s in enumerate(sites)]
                page.figure(F.per_layer(rows, {exp: exp for exp in diffs}, f"{name}: {what}, each run's final "
                                        "checkpoint vs its start, by layer", "value"), height=360)
    page.table(list(step.get("targets", [])), caption="targets on the organism")
    return page


def cot_page(report: Report, step: Mapping | None) -> Page:
    page = report.page("4. CoT-decoding", id="cot",
                       lead="Branch on the top-k first tokens, continue greedily, answer with the branch whose "
                            "answer tokens are most confident (p(top-1) - p(top-2)).")
    if _skipped(page, step):
        return page
    page.figure(F.grouped_bars({"accuracy": {"greedy": step["greedy"], "CoT-decoding (max)": step["cot"],
                                             **({"CoT-decoding (sum)": step["cot_sum"]} if "cot_sum" in step else {}),
                                             **({"any branch right (oracle)": step["oracle_any_branch"]}
                                                if "oracle_any_branch" in step else {})}},
                               f"Greedy vs CoT-decoding (k={step.get('k')}) on {step.get('n', '?')} problems",
                               "accuracy (%)", "decoding"), height=380)
    conf = step.get("confidences", {})
    if conf:
        page.figure(F.distributions({k.replace("_", "-"): v for k, v in conf.items()},
                                    "Answer confidence of reasoning vs non-reasoning branches",
                                    "confidence: mean p(top-1) - p(top-2) over the answer's tokens"), height=380)
    by = step.get("by_reasoning", {})
    page.table([{"branches": k, **v} for k, v in by.items() if isinstance(v, dict)],
               caption=f"greedy branch reasons on {by.get('greedy_reasoning_rate', float('nan')):.1%} of prompts")
    return page


def feature_step_page(report: Report, step: Mapping | None, feature_ids: Sequence[int] = ()) -> Page:
    page = report.page("5. One SAE feature triggers reasoning", id="feature",
                       lead="SAE features ranked by how differently they fire on think-instructed vs "
                            "direct-instructed prompts; the top feature is added at the last prompt token only "
                            "(position P-1, the forward that produces the first generated token: the paper's "
                            "first step).")
    if _skipped(page, step):
        return page
    sae = step.get("sae") or {}
    info = {k: v for k, v in sae.items() if not isinstance(v, (dict, list)) and k not in ("metrics", "evals")}
    if info:
        page.table([info], caption="SAE")
    metrics = _flat_metrics(sae)
    if metrics:
        page.table([{"metric": k, "value": v} for k, v in metrics.items()], caption="SAE evaluation summary")
        nums = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        frac = {k: v for k, v in nums.items() if 0 <= v <= 1 and "threshold" not in k and any(
            w in k for w in ("explained", "recovered", "fraction", "dead", "dense"))}
        if frac:
            page.figure(F.bars(list(frac), [100 * v for v in frac.values()], "SAE evaluation (proportions)",
                               "metric", "value (%)"), height=340)
    ranking = [r for r in step.get("ranking", []) if r.get("freq_pos", 1) > 0 or r.get("freq_neg", 1) > 0][:20]
    if ranking:
        key = "mean_diff" if "mean_diff" in ranking[0] else "effect_size"
        fig = F.bars([f"feature {r['feature']}" for r in ranking], [r.get(key, 0.0) for r in ranking],
                     f"Top features by {key.replace('_', ' ')} (think minus direct prompts, last prompt token)",
                     f"{key.replace('_', ' ')} (SAE latent units)" if key == "mean_diff" else key, "feature",
                     horizontal=True, text=[f"AUROC {r.get('auroc', float('nan')):.2f}" for r in ranking])
        page.figure(fig, height=max(320, 24 * len(ranking) + 140))
        page.table(ranking, caption="ranking (features that fire in either condition)")
    rows = steer_rows(step.get("steer_check") or [])
    if rows:
        for metric, label in (("accuracy", "accuracy (%)"), ("reasoning_rate", "answers with a reasoning trace (%)")):
            if any(r.get(metric) is not None for r in rows):
                page.figure(F.sweep(rows, "alpha", metric, "label",
                                    f"First-token steering: {metric.replace('_', ' ')} vs alpha "
                                    "(random features dashed)",
                                    "alpha (norm of the added decoder direction)", label,
                                    dashed=[r["label"] for r in rows if r.get("random")]), height=380)
        page.table([{k: (v[:60] + "..." if isinstance(v, str) and len(v) > 60 else v) for k, v in r.items()}
                    for r in step.get("steer_check") or []], caption="steering check (one row per run)")
    if feature_ids:
        page.html("<p>Feature pages: " + ", ".join(f'<a href="#feature-{f}">feature {f}</a>' for f in feature_ids)
                  + "</p>")
    return page


def steer_rows(rows: Sequence[Mapping]) -> list[dict]:
    """Normalise steering-check rows for plotting: a ``label`` per curve, a ``random`` flag, ``reasoning_rate``.

    Rows without a feature (``kind`` ``baseline`` / ``reference``: unsteered runs at alpha 0) become flat
    lines across the swept alphas, so the curves can be read against them.
    """
    out = []
    alphas = sorted({float(r["alpha"]) for r in rows if r.get("feature") is not None and r.get("alpha") is not None})
    for r in rows:
        r = dict(r)
        kind = str(r.get("kind", ""))
        rnd = bool(r.get("random") or r.get("control") or kind.startswith("random"))
        r["random"] = rnd
        if "reasoning_rate" not in r:
            for k in ("reasoning", "thinking_rate", "reasoning_share"):
                if k in r:
                    r["reasoning_rate"] = r[k]
                    break
        if r.get("feature") is None and kind in ("baseline", "reference"):
            r["label"] = "unsteered base" if kind == "baseline" else f"reference: {r.get('model', 'thinking model')}"
            out += [{**r, "alpha": a} for a in (alphas[0], alphas[-1])] if alphas else [r]
            continue
        if "label" not in r:
            r["label"] = f"{'random ' if rnd else ''}feature {r.get('feature', '?')}"
        out.append(r)
    return out


def _flat_metrics(sae: Mapping) -> dict:
    """SAE evaluation numbers, nested dicts flattened (``spliced.ce_recovered``)."""
    src = sae.get("metrics") or sae.get("evals") or sae.get("eval") or {}
    out: dict = {}
    for k, v in src.items():
        if isinstance(v, Mapping):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items() if not isinstance(vv, (Mapping, list))})
        elif not isinstance(v, list):
            out[k] = v
    return out


def build_report(results: Mapping, features: Sequence[Mapping] = (), title: str = "lens reproduce") -> Report:
    """The whole report: overview, the five findings' pages, and one page per feature in ``features``."""
    meta = results.get("meta", {})
    report = Report(title, {k: meta[k] for k in ("base", "thinking", "tasks", "seed", "started") if k in meta})
    overview_page(report, results)
    sampling_page(report, results.get("sampling"))
    hybrid_page(report, results.get("hybrid"))
    diff_page(report, results.get("diff"))
    rl_page(report, results.get("rl"))
    cot_page(report, results.get("cot"))
    step = results.get("feature")
    feature_step_page(report, step, [d["feature"] for d in features])
    rows = steer_rows((step or {}).get("steer_check") or [])
    ranking = {r.get("feature"): r for r in (step or {}).get("ranking", [])}
    for d in features:
        mine = [r for r in rows if r.get("feature") == d["feature"] and not r["random"]]
        controls = [r for r in rows if r["random"] or r.get("feature") is None]
        feature_page(report, d, mine + controls if mine else None, ranking.get(d["feature"]))
    return report
