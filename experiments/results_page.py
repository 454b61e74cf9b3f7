"""Write docs/results.md, the results page, from the JSON result files committed in the repository.

Every table on the page is computed here from one JSON file, under the command that writes that file; no
number is typed into the page. The output depends on the JSON files only (no clock, no machine), so running
it twice gives the same bytes; tests/test_results_page.py checks that the committed page equals a fresh run.

    python experiments/results_page.py                 # (re)write docs/results.md   (make results)
    python experiments/results_page.py --out FILE      # write elsewhere
    python experiments/results_page.py --check         # exit 1 when docs/results.md is not up to date
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "results.md"


# --- formatting ----------------------------------------------------------------------------------------


def fixed(v: float | Decimal, digits: int, sign: bool = False) -> str:
    """`v` to `digits` decimals, halves rounded away from zero (0.625 -> 0.63), from its shortest decimal form."""
    d = v if isinstance(v, Decimal) else Decimal(repr(float(v)))
    q = d.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    if q == 0:
        q = abs(q)  # no "-0.0"
    return f"{q:{'+' if sign else ''}.{digits}f}"


def pct(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else fixed(Decimal(repr(float(v))) * 100, digits) + "%"


def points(share: float) -> str:
    """A share as signed percentage points (0.94 -> +94.0)."""
    return fixed(Decimal(repr(float(share))) * 100, 1, sign=True)


def ci_pct(lo: float, hi: float) -> str:
    return f"[{pct(lo)[:-1]}, {pct(hi)[:-1]}]"


def num(v: Any, digits: int = 3) -> str:
    """A plain number: integers as they are, floats to `digits` significant places."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.{digits}g}"


def yes_no(v: bool | None) -> str:
    return "" if v is None else ("yes" if v else "**no**")


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def slug(title: str) -> str:
    """The anchor mkdocs (Python-Markdown's toc) gives a heading."""
    s = re.sub(r"[^\w\s-]", "", title).strip().lower()
    return re.sub(r"[-\s]+", "-", s)


def provenance(data: Any) -> str:
    """The date / lens version / run time the JSON itself records, if any."""
    if not isinstance(data, dict):
        return ""
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    parts = [f"{label} {data.get(key, meta.get(key))}" for key, label in (("date", "date"), ("lens_version", "lens"))
             if isinstance(data.get(key, meta.get(key)), str)]
    metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    seconds = data.get("seconds", metrics.get("eval_seconds"))
    if isinstance(seconds, (int, float)):
        parts.append(f"run time {fixed(seconds, 0)} s")
    return "; ".join(parts)


# --- one renderer per result file ---------------------------------------------------------------------


def organism_properties(d: dict) -> str:
    from lens.organism.evaluate import markdown_table  # the model cards' table, so both read alike

    return markdown_table(d)


HYBRID_LABELS = {
    "none": "hybrid",
    "bias_only": "ablation: bias only",
    "random_category": "ablation: random category",
    "random_vector": "ablation: random vector (fixed per category, bias kept)",
    "random_guardrail": "ablation: random guardrail",
    "no_guardrail": "ablation: no guardrail",
    "random_vector_per_step": "extra: random vector per step, replacing the bias",
    "unsteered_allowed": "hybrid, unsteered token allowed",
    "live_only": "hybrid, argmax over the latents with a category",
}


def hybrid(d: dict) -> str:
    def acc(e: dict) -> str:
        return f"{pct(e['value'])} {ci_pct(e['lo'], e['hi'])}"

    rows = [["base", "-", acc(d["base"]), "-", "-", "-"], ["thinking", "-", acc(d["thinking"]), "-", "-", "-"]]
    for key, r in d["runs"].items():
        label = HYBRID_LABELS.get(key, key)
        if key == "no_guardrail" and "no_guardrail_coefficient" in d:
            label += f" (coefficient {d['no_guardrail_coefficient']})"
        rows.append([f"{label} (`{key}`)", r.get("mode", "-"), acc(r["accuracy"]),
                     f"{pct(r['gap_recovered'])} {ci_pct(*r['gap_ci'])}",
                     pct(r["fraction_steered"]), pct(r["fraction_gated"])])
    e = d["base"]
    v = d.get("vectors", {})
    coefs = d.get("coefficients") or []
    settings = [f"{d['n']} held-out problems", f"steer site `{d['site']}`",
                f"read site `{d.get('read_site', d['site'])}`", f"selector `{v.get('selector', '-')}`"]
    if coefs:
        settings.append(f"coefficients {coefs[0]}..{coefs[-1]} ({len(coefs)})")
    if v.get("method") == "optimised":
        settings.append(f"optimised vectors ({v.get('steps')} Adam steps each)")
    elif "norm_frac" in v:
        settings.append(f"vectors at {v['norm_frac']} x the residual norm")
    if d.get("force_thinking"):
        settings.append("both models' prompts end with the think tag (`--force-thinking`)")
    cal = v.get("calibration")
    if isinstance(cal, dict):
        scales = ", ".join(f"{k} x{fixed(x, 1)}" for k, x in cal["category_scales"].items())
        settings.append(f"scales calibrated on {cal['n']} training problems: bias x{fixed(cal['bias_scale'], 1)}, "
                        f"{scales}")
    layers = calibration_layers(cal) if isinstance(cal, dict) else ""
    tax = v.get("taxonomy")
    if isinstance(tax, dict) and "purity" in tax:
        settings.append(f"taxonomy purity {fixed(tax['purity'], 3)} "
                        f"(majority baseline {fixed(tax['majority_baseline'], 3)})")
        b = tax.get("behaviour_purity")
        if b:
            merged = ", ".join(f"{k} as {x}" for k, x in b["merged"].items())
            settings.append(f"behaviour purity {fixed(b['purity'], 3)} ({merged}; majority baseline "
                            f"{fixed(b['majority_baseline'], 3)})")
    return "\n".join([
        "; ".join(settings) + f". Accuracy with {e['method'].capitalize()} {pct(e['ci'], 0)} intervals, gap "
        "recovered with a paired-bootstrap interval; tokens steered and gated as shares of the generated tokens.",
        "",
        table(["run", "mode", "accuracy", "gap recovered", "tokens steered", "tokens gated"], rows),
        *(["", layers] if layers else []),
    ])


def steerable_rows(d: dict, lead: list[Any] | None = None) -> list[list[Any]]:
    """One row per (vector method, kind of the thinking model's token): positions, then the shares reached by the
    selected category + bias, any category + bias and the bias alone, at each scale."""
    scales = [f"{s:g}" for s in d["scales"]]
    rows = []
    for method, kinds in d["methods"].items():
        for kind in ("<think>", "space", "digit", "other"):
            k = kinds.get(kind)
            if not k:
                continue
            n = k["positions"]

            def share(what: str, k=k, n=n) -> str:
                return " / ".join(pct(k.get(f"{what} x{s}", 0) / n, 0) for s in scales)

            rows.append([*(lead or []), method, f"`{kind}`" if kind == "<think>" else kind, n, share("selected"),
                         share("any"), share("bias")])
    return rows


def hybrid_steerable(d: dict) -> str:
    """Teacher-forced: at the base's disagreements with the thinking model's trace, which vectors make the base
    write the thinking model's token (experiments/hybrid_steerable.py)."""
    scales = [f"{s:g}" for s in d["scales"]]
    rows = steerable_rows(d)
    return "\n".join([
        f"`{d['thinking']}`'s greedy traces on {d['n']} held-out problems, read by `{d['base']}`; vectors at "
        f"`{d['site']}` as `lens hybrid` makes them, categories {', '.join(d['categories'])}. At each position "
        "where the base's next token differs from the trace's, the share of positions where some coefficient of "
        f"the hybrid's sweep times scale {' / '.join(scales)} makes the base write the trace's token:", "",
        table(["vectors", "thinking model's token", "positions", "selected category + bias",
               "any category + bias", "bias alone"], rows)])


def hybrid_steerable_layers(d: dict) -> str:
    """experiments/hybrid_steerable.py --layers: the same check with vectors, selector and steering at each layer."""
    first = d["layers"][0]
    scales = " / ".join(f"{s:g}" for s in first["scales"])
    rows = []
    for r in d["layers"]:
        space = r["methods"].get("optimised", next(iter(r["methods"].values()))).get("space", {})
        picked = sorted(((v, k.split(":", 1)[1]) for k, v in space.items() if k.startswith("selected:")), reverse=True)
        rows += steerable_rows(r, lead=[f"`{r['site']}`", picked[0][1] if picked else "-"])
    return "\n".join([
        f"`{d['thinking']}`'s greedy traces on {d['n']} held-out problems, read by `{d['base']}`; at each layer the "
        "taxonomy, the vectors and the steering are at that layer, as `lens hybrid --layer L` makes them. Shares of "
        "the positions where the base's next token differs from the trace's at which some coefficient of the sweep "
        f"times scale {scales} makes the base write the trace's token; the second column is the category the "
        "selector picks most often where the trace starts a ` check` or ` wait` (the `space` rows):", "",
        table(["layer", "category picked at a check's start", "vectors", "thinking model's token", "positions",
               "selected category + bias", "any category + bias", "bias alone"], rows)])


def hybrid_layers(d: dict) -> str:
    """experiments/hybrid_layers.py: the hybrid and its ablations with everything at one steer layer, per layer."""
    rows = []
    for r in d["layers"].values():
        runs = r["runs"]
        tax = r.get("vectors", {}).get("taxonomy", {})
        b = tax.get("behaviour_purity") or {}
        rows.append([f"`{r['site']}`", pct(r["base"]["value"]), pct(r["thinking"]["value"]),
                     pct(runs["none"]["accuracy"]["value"]), pct(runs["none"]["gap_recovered"]),
                     pct(runs["none"]["fraction_steered"]),
                     *(pct(runs[k]["gap_recovered"]) if k in runs else "-"
                       for k in ("bias_only", "random_category", "random_vector", "random_guardrail")),
                     fixed(tax["purity"], 3) if "purity" in tax else "-",
                     fixed(b["purity"], 3) if "purity" in b else "-"])
    return "\n".join([
        f"`{d['base']}` against `{d['thinking']}` on {d['n']} held-out problems, {d['vectors']} vectors"
        + (", both prompts ending with the think tag" if d.get("force_thinking") else "")
        + "; at each layer the taxonomy (read on the thinking model), the vectors and the steering are at that layer "
        "(`lens hybrid --layer L`). Gap recovered by the hybrid and by each ablation:", "",
        table(["layer", "base", "thinking", "hybrid", "gap recovered", "tokens steered", "bias only",
               "random category", "random vector", "random guardrail", "taxonomy purity", "behaviour purity"],
              rows)])


def calibration_layers(cal: dict) -> str:
    """When the calibration tried several steer layers: each category's best development accuracy per layer."""
    sites = sorted({t["site"] for t in cal["tried"] if "site" in t and t["vector"] != "bias"})
    if len(sites) < 2:
        return ""
    rows = []
    for name in cal["category_scales"]:
        best = {s: max(t["accuracy"] for t in cal["tried"] if t["vector"] == name and t["site"] == s) for s in sites}
        chosen = cal.get("category_sites", {}).get(name, sites[0] if name not in cal.get("category_sites", {}) else "")
        rows.append([name, *(pct(best[s]) for s in sites), f"`{chosen}` x{fixed(cal['category_scales'][name], 1)}"])
    return "\n".join([f"Calibration over steer layers: each category's best development accuracy over the scale grid "
                      f"at each layer tried ({cal['n']} training problems; a category at another layer adds that "
                      "layer's bias), and the (layer, scale) kept:", "",
                      table(["category", *(f"`{s}`" for s in sites), "kept"], rows)])


def minimal_signal(rows: list[dict]) -> str:
    out = []
    for r in rows:
        traces = r.get("train_traces")
        if traces is None:
            traces = "-"
        elif r.get("right_share") and traces:
            traces = f"{traces}, {pct(r['right_share'], 0)} right"
        out.append([r["experiment"], r["model"], traces, pct(r["greedy_acc"]), pct(r["think_rate"]),
                    pct(r["forced_acc"])])
    return table(["experiment", "model", "training traces", "held-out greedy acc", "thinking rate",
                  "forced-thinking acc"], out)


def rl_study(d: dict) -> str:
    models = d["models"]
    names = list(models)
    rows = []
    for exp in d["experiments"]:
        runs = [models[m]["runs"].get(exp, {}) for m in names]
        first = next((r for r in runs if r.get("status") == "done"), {})
        problems = " / ".join(str(r.get("n_problems", "-")) for r in runs)
        cells = []
        for r in runs:
            if r.get("status") != "done":
                cells.append(r.get("status", "-"))
            else:
                cells.append(f"{pct(r['before'])} -> {pct(r['after'])} (thinking {pct(r['thinking_after'], 0)})")
        rows.append([exp, first.get("reward", "-"), problems, *cells])
    parts = [f"{d['n_heldout']} held-out problems (greedy), {d['n_train']} training problems, "
             f"{d['config']['steps']} GRPO steps per run; problems listed per model ({', '.join(names)}).", "",
             table(["experiment", "reward", "training problems", *[f"{m}: before -> after" for m in names]], rows)]
    pk = {m: models[m].get("pass_at_k") for m in names if models[m].get("pass_at_k")}
    if pk:
        ks = list(next(iter(pk.values()))["before"])
        parts += ["", f"pass@k on {d.get('pass_k_n', '-')} held-out problems, before -> after 1-shot RLVR:", "",
                  table(["k", *names], [[k, *[f"{pct(pk[m]['before'][k])} -> {pct(pk[m]['after'][k])}" for m in pk]]
                                        for k in ks])]
    if any(models[m].get("diffs") for m in names):
        parts += ["", *rl_diffs(d)]
    if d.get("targets"):
        parts += ["", table(["target", "value", "met"],
                            [[t["target"], f"{points(t['value'])} points", yes_no(t["ok"])] for t in d["targets"]])]
    return "\n".join(parts)


def rl_diffs(d: dict) -> list[str]:
    """Where each run's final checkpoint differs from its start (`lens diff`), one row per experiment and model."""
    models = d["models"]
    names = [m for m in models if models[m].get("diffs")]
    layers = next(iter(models[names[0]]["diffs"].values()))["activations"]
    n = d.get("diff_prompts", {"reasoning": "-", "direct": "-", "neutral": "-"})
    span = f"layers {layers[0]['site'].split('.')[1]}..{layers[-1]['site'].split('.')[1]}"

    def by_layer(vals: list[str]) -> str:
        return " / ".join(vals)

    rows = []
    for exp in d["experiments"]:
        for m in names:
            diff = models[m]["diffs"].get(exp)
            if diff is None:
                rows.append([exp, m, models[m]["runs"].get(exp, {}).get("status", "-"), "-", "-", "-"])
                continue
            top = max(diff["weights"], key=lambda w: w["relative_change"])
            if top["relative_change"] == 0:
                rows.append([exp, m, "unchanged", pct(0), "-", "-"])
                continue
            changed = sum(w["fraction_changed"] * w["parameters"] for w in diff["weights"])
            acts = diff["activations"]
            rows.append([exp, m, f"{top['group']}: {pct(top['relative_change'], 2)}",
                         pct(changed / sum(w["parameters"] for w in diff["weights"])),
                         by_layer([pct(a["relative"]) for a in acts]),
                         by_layer([fixed(a["cosine_with_direction"], 2, sign=True) for a in acts])])
    auroc = "; ".join(f"{m} {by_layer([fixed(r['auroc'], 2) for r in models[m]['direction']])}"
                      for m in names if models[m].get("direction"))
    return [f"`lens diff` of each run's final checkpoint against its start model: the layer group with the largest "
            "relative weight change (Frobenius norm of the change over that of the start weights) and the share of "
            f"all parameters changed beyond `lens.pair_diff.weight_diff`'s tolerance; on the first {n['neutral']} "
            "held-out prompts (last prompt token), the mean activation shift as a share of the residual norm and its "
            f"cosine with the start model's reasoning direction (mean over {n['reasoning']} T-marker prompts minus "
            f"mean over {n['direct']} D-marker prompts), {span}. The direction's held-out AUROC by layer "
            f"(0.5 is chance): {auroc}.", "",
            table(["experiment", "model", "largest weight change", "parameters changed",
                   f"mean shift / residual norm, {span}", f"cosine with the reasoning direction, {span}"], rows)]


def cft(d: dict) -> str:
    """One-problem CFT beside 1-shot RLVR on the same problems: one row per model and training (none, CFT or
    RLVR on one problem), and the RLVR runs' held-out curves."""
    models = list(d["before"])
    rec = d.get("recipe", {})
    rl = rec.get("rl", {})

    def problem(r: dict) -> str:
        return f"`{r['problem']['prompt'].split(':', 1)[1].split('=')[0]}`"

    def cells(s: dict, train: str = "-") -> list[str]:
        return [pct(s["greedy_accuracy"]), pct(s.get("thinking_rate")), pct(s["forced_thinking_accuracy"]),
                pct(s["forced_shares"].get("verification")),
                pct((s.get("forced_traces_with") or {}).get("verification")),
                pct(s["greedy_shares"].get("verification")) if s.get("greedy_traces") else "-", train]

    def train_acc(r: dict, m: str, key: str) -> str:
        before = (r.get("before_train_problem") or {}).get(m)
        after = r[key][m].get("train_problem")
        if not after:
            return "-"
        return (f"{pct(before['sampled_accuracy'])} -> " if before else "") + pct(after["sampled_accuracy"])

    header = ["model", "training", "problem", "held-out greedy acc", "thinking format (greedy)",
              "forced-thinking acc", "verification share (forced)", "forced traces with a check",
              "verification share (greedy traces)", "training problem acc (T=1), before -> after"]
    rows = []
    for m in models:
        rows.append([m, "none", "-", *cells(d["before"][m])])
        for arm, key in (("CFT", "after"), ("1-shot RLVR", "rlvr")):
            rows += [[m, arm + (f" ({r['n_critiques']} critiques)" if key == "after" else ""), problem(r),
                      *cells(r[key][m], train_acc(r, m, key))] for r in d["runs"] if key in r]
    if "reference" in d:
        rows.append([f"`{d['reference']['model']}`", "none (made by selection)", "-", *cells(d["reference"]["scores"])])
    lines = [f"Base `{d['base']}`, control `{d['control']}`; {d['eval_n']} held-out problems, greedy; forced thinking: "
             "the prompt ends with `<think>`. CFT: "
             f"{rec.get('epochs', '-')} epochs at lr {rec.get('lr', '-')} on critiques of the base's distinct wrong "
             "solutions of the problem (the same critiques for both models)."]
    if any("rlvr" in r for r in d["runs"]):
        lines[0] += (f" 1-shot RLVR: GRPO with the correct reward on the problem alone, {rl.get('steps')} steps at "
                     f"lr {rl.get('learning_rate')}, {rl.get('prompts_per_step')} x {rl.get('num_generations')} "
                     f"completions of up to {rl.get('max_completion_length')} tokens per step, seed {rl.get('seed')}.")
    if rec.get("train_samples"):
        lines[0] += f" Training problem acc: {rec['train_samples']} samples at T=1."
    lines += ["", table(header, rows)]
    curves = [(r, m, r["rlvr"][m]["rl"]) for r in d["runs"] if "rlvr" in r for m in models]
    if curves:
        steps = [e["step"] for e in curves[0][2]["evals"]]
        lines += ["", "1-shot RLVR, held-out greedy accuracy (thinking-format rate) by step, and the training "
                  f"accuracy of the last {rl.get('eval_every')} steps' samples:", "",
                  table(["problem", "model", *[f"step {s}" for s in steps], "training acc, last steps"],
                        [[problem(r), m, *[f"{pct(e['heldout_accuracy'])} ({pct(e['thinking_rate'], 0)})"
                                           for e in c["evals"]], pct(c["final_train_accuracy"])]
                         for r, m, c in curves])]
    seeded = [(r, m, r["rlvr_seeds"][m]) for r in d["runs"] if len(next(iter(r.get("rlvr_seeds", {}).values()), [])) > 1
              for m in models]
    if seeded:
        seeds = [x["seed"] for x in seeded[0][2]]
        lines += ["", "1-shot RLVR, one run per seed (the same recipe; the runs above are seed "
                  f"{seeds[0]}'s): held-out greedy accuracy (verification share of the forced traces) and the mean "
                  "over seeds:", "",
                  table(["problem", "model", *[f"seed {x}" for x in seeds], "mean"],
                        [[problem(r), m, *[f"{pct(x['greedy'])} ({pct(x['verification'], 0)})" for x in runs],
                          pct(sum(x["greedy"] for x in runs) / len(runs))] for r, m, runs in seeded])]
    return "\n".join(lines)


def _steer_rows(d: dict) -> list[list[Any]]:
    rows = []
    for r in d["steer_check"]:
        ci = r.get("accuracy_ci")
        acc = fixed(r["accuracy"], 2) + (f" [{fixed(ci[0], 2)}, {fixed(ci[1], 2)}]" if ci else "")
        what = {"baseline": "base, unsteered", "reference": "reference, unsteered"}.get(r["kind"], r["kind"])
        if r["kind"] == "reference":
            what += f" ({r['model']})" if r.get("model") else f" ({r.get('instruction', '')})"
        rows.append([what, r.get("feature") if r.get("feature") is not None else "-",
                     fixed(r["alpha"], 1) if r.get("alpha") else "-", acc, f"{fixed(r['reasoning_rate'], 2)}",
                     f"{fixed(r['tokens_mean'], 1)}", yes_no(r.get("first_step_only"))])
    return rows


def _sae_line(d: dict) -> str:
    s = d["sae"]
    e = s["evals"]
    sp = e.get("spliced", {})
    parts = [f"SAE: {s['architecture']}, d_sae {s['d_sae']:,} on `{s['site']}` of `{s['model']}`",
             f"{e['rows']:,} rows evaluated", f"explained variance {fixed(e['explained_variance'], 3)}",
             f"L0 {num(e['l0'])}", f"dead {fixed(e['dead_fraction'], 2)}", f"dense {fixed(e['dense_fraction'], 3)}"]
    if sp:
        parts.append(f"spliced in: CE {fixed(sp['ce_clean'], 3)} -> {fixed(sp['ce_sae'], 3)} (zero-ablation "
                     f"{fixed(sp['ce_zero'], 2)}), CE recovered {fixed(sp['ce_recovered'], 3)}, KL recovered "
                     f"{fixed(sp['kl_recovered'], 3)}")
    return "; ".join(parts) + "."


def _ranking(d: dict, top: int) -> str:
    return table(["rank", "feature", "mean diff", "AUROC", "fires on pos", "fires on neg", "effect size"],
                 [[i + 1, r["feature"], *(fixed(r[k], 2) for k in ("mean_diff", "auroc", "freq_pos", "freq_neg",
                                                                   "effect_size"))]
                  for i, r in enumerate(d["ranking"][:top])])


STEER_HEADER = ["run", "feature", "alpha", "accuracy [95% CI]", "thinking / reasoning format", "new tokens",
                "one touch at P-1"]


def cot_decoding(d: dict) -> str:
    """`lens reproduce --steps cot --json`: accuracy of greedy and CoT-decoding, and branch confidence by kind."""
    meta, r = d["meta"], d["cot"]
    rows = (("greedy", "greedy"), ("CoT-decoding, most confident branch", "cot"),
            ("CoT-decoding, confidence summed per answer", "cot_sum"),
            ("any branch right (oracle)", "oracle_any_branch"))
    acc = [[label, f"{pct(r[key]['value'])} {ci_pct(r[key]['lo'], r[key]['hi'])}"] for label, key in rows]
    by = r["by_reasoning"]
    kinds = [[kind.replace("_", "-"), by[kind]["n"], fixed(by[kind]["mean_confidence"], 4),
              pct(by[kind]["share_of_best"])] for kind in ("reasoning", "non_reasoning")]
    return "\n".join([
        f"`{meta['base']}`, {r['n']} held-out problems, {r['k']} branches at the first step, greedy after, up to "
        f"{r['max_new_tokens']} new tokens; Wilson 95% intervals:", "",
        table(["decoding", "accuracy"], acc), "",
        "Branches by whether they reason (confidence: the mean top-1 minus top-2 probability over the answer's "
        "tokens):", "",
        table(["branches", "count", "mean confidence", "most confident branch of its problem"], kinds)])


def rl_run(d: dict) -> str:
    """`lens rl train --json`: held-out accuracy, thinking rate and training accuracy at each evaluation."""
    rows = [[e["step"], pct(e["heldout_accuracy"]), e["n"], pct(e["thinking_rate"]), fixed(e["mean_tokens"], 1),
             "-" if e["train_accuracy"] is None else pct(e["train_accuracy"])] for e in d["evals"]]
    return "\n".join([
        f"`{d['model']}`, reward `{d['reward']}`, {d['n_problems']} training problem(s), {d['steps']} steps; "
        f"training {fixed(d['train_seconds'], 0)} s:", "",
        table(["step", "held-out accuracy (greedy)", "held-out problems", "thinking rate", "mean new tokens",
               "training accuracy (mean over the steps since the last evaluation)"], rows)])


def rl_saturation(d: dict) -> str:
    """`lens rl train --json` of a long 1-shot run: `rl_run`'s table, and where the training problem saturates."""
    first = next((e for e in d["evals"] if e["train_accuracy"] is not None and e["train_accuracy"] >= 0.95), None)
    best = max(d["evals"], key=lambda e: e["heldout_accuracy"])
    last = d["evals"][-1]
    after = [e for e in d["evals"] if first is not None and e["step"] >= first["step"]]
    trend = ("no evaluation after it" if len(after) < 2 else
             f"held-out accuracy {pct(after[0]['heldout_accuracy'])} there and {pct(last['heldout_accuracy'])} at "
             f"step {last['step']} ({'up' if last['heldout_accuracy'] > after[0]['heldout_accuracy'] else 'not up'})")
    return "\n".join([
        rl_run(d), "",
        f"Held-out accuracy peaks at {pct(best['heldout_accuracy'])} (step {best['step']}). "
        + ("The training problem is never solved in >= 95% of its samples over an evaluation interval."
           if first is None else
           f"The training problem is first solved in >= 95% of its samples over an interval at step {first['step']}: "
           f"{trend}. Post-saturation generalisation (held-out accuracy still rising once the one problem is "
           "solved) is what the 1-shot paper reports on Qwen2.5-Math for about 1,400 steps.")])


def reproduce_run(d: dict) -> str:
    """`lens reproduce --json` on the organism: each step's status and time, and the whole job against its budget."""
    m = d["meta"]
    t = m["timings_s"]
    steps = [k for k, v in t.items() if not k.endswith(".cpu") and isinstance(v, (int, float))]
    rows = [[k, d[k]["status"] if isinstance(d.get(k), dict) and "status" in d[k] else "-", fixed(t[k], 1),
             fixed(t[k + ".cpu"], 1) if k + ".cpu" in t else "-"] for k in steps]
    rows.append(["**whole job**", "", f"**{fixed(m['wall_s'], 1)}**", fixed(m["cpu_s"], 1)])
    return "\n".join([
        f"`{m['base']}` against `{m['thinking']}` (control `organism:control` for the RL step), default sizes, "
        f"{m['torch_threads']} torch threads, report {m['report_bytes'] / 1e6:.1f} MB:", "",
        table(["step", "status", "wall s", "CPU s"], rows), "",
        f"Budget (`lens reproduce` on 2 CPU cores): <= 900 s; this run {fixed(m['wall_s'], 0)} s "
        f"({'met' if m['wall_s'] <= 900 else '**not met**'}). The feature step reads the organism's SAE from the "
        "cache when it is there (a fresh machine trains it first, inside the step).", *reproduce_rl(d.get("rl"))])


def reproduce_verifier(d: dict) -> str:
    """`lens reproduce --organism verifier-rl --json`: every step's time, the hybrid's headline, the RL step and
    how familiar one-problem CFT's critiques were to each model (its first and last training loss)."""
    h = d["hybrid"]["runs"]
    st = d["rl"]
    cft = [[name, st["models"][name]["spec"], r.get("n_critiques"), fixed(r["loss"][0], 2), fixed(r["loss"][1], 2)]
           for name in st["models"] for r in [st["models"][name]["runs"].get("cft", {})] if r.get("loss")]
    return "\n".join([
        reproduce_run(d), "",
        f"Hybrid (paper mode, {d['hybrid']['n']} problems): {pct(h['none']['gap_recovered'])} of the gap with "
        f"{pct(h['none']['fraction_steered'])} of tokens steered; bias only {pct(h['bias_only']['gap_recovered'])}, "
        f"random category {pct(h['random_category']['gap_recovered'])}. The RL targets above are the ones set for "
        "the first pair, shown as this pair meets them or not.", "",
        "One-problem CFT's training loss, first and last step (how familiar each model finds the critique format):",
        "", table(["model", "spec", "critiques", "first loss", "last loss"], cft)])


def reproduce_pair(d: dict) -> str:
    """`lens reproduce --json` on a pair other than the organism: each step's status and time, and one line of
    what each step measured."""
    m, t = d["meta"], d["meta"]["timings_s"]
    steps = [k for k, v in t.items() if not k.endswith(".cpu") and isinstance(v, (int, float))]
    rows = [[k, d[k]["status"] if isinstance(d.get(k), dict) and "status" in d[k] else "-", fixed(t[k], 1)]
            for k in steps]
    rows.append(["**whole job**", "", f"**{fixed(m['wall_s'], 1)}**"])
    sm, h, c, f, df = (d[k] for k in ("sampling", "hybrid", "cot", "feature", "diff"))
    pk = sm["pass_at_k"]
    ks = sorted(pk["base"], key=int)
    runs = h["runs"]
    ev = f["sae"]["evals"]
    su = f["summary"]
    sep = [r.get("auroc") for r in df["separability"]] if isinstance(df.get("separability"), list) else []
    found = [["sampling", f"pass@{ks[0]} / pass@{ks[-1]}: base {pct(pk['base'][ks[0]]['value'])} / "
                          f"{pct(pk['base'][ks[-1]]['value'])}, thinking {pct(pk['thinking'][ks[0]]['value'])} / "
                          f"{pct(pk['thinking'][ks[-1]]['value'])} ({sm['n']} problems x {sm['samples']} samples, "
                          f"{sm['max_new_tokens']} new tokens); thinking format closed in "
                          f"{pct(sm['behaviour']['base']['thinking_rate'])} / "
                          f"{pct(sm['behaviour']['thinking']['thinking_rate'])} of samples"],
             ["hybrid", f"greedy base {pct(h['base']['value'])}, thinking {pct(h['thinking']['value'])}, hybrid "
                        f"{pct(runs['none']['accuracy']['value'])} ({h['n']} problems); gap recovered "
                        f"{pct(runs['none']['gap_recovered'])}, {pct(runs['none']['fraction_steered'])} of tokens "
                        "steered; ablations: " + ", ".join(f"{k} {pct(v['gap_recovered'])}" for k, v in runs.items()
                                                            if k != "none")],
             ["cot", f"greedy {pct(c['greedy']['value'])}, CoT-decoding {pct(c['cot']['value'])} ({c['n']} problems, "
                     f"k {c['k']}); answer confidence {num(c['by_reasoning']['reasoning']['mean_confidence'])} "
                     f"(reasoning branches) vs {num(c['by_reasoning']['non_reasoning']['mean_confidence'])}"],
             ["feature", f"SAE {f['sae']['architecture']} {f['sae']['d_sae']} latents at `{f['sae']['site']}` on "
                         f"{ev['rows']:,} rows: explained variance {num(ev['explained_variance'])}, L0 "
                         f"{fixed(ev['l0'], 1)}, dead {pct(ev['dead_fraction'])}; steer-check: unsteered "
                         f"{pct(su['baseline_accuracy'])}, best feature {su['best_feature']} "
                         f"{pct(su['best_accuracy'])}, largest random-control move {pct(su['max_random_move'])}"],
             ["diff", f"largest relative weight change {num(max(r['relative_change'] for r in df['weights']))}"
                      + (f"; the base's T-vs-D direction, held-out AUROC per layer {min(sep):.2f}-{max(sep):.2f}"
                         if sep and None not in sep else "")]]
    return "\n".join([
        f"`{m['base']}` against `{m['thinking']}`, {m['torch_threads']} torch threads:", "",
        table(["step", "status", "wall s"], rows), "", table(["step", "what it measured"], found), "",
        "No accuracy target on this pair (a 135M model that rarely reaches an answer in 64 tokens): the run shows "
        "that every step runs on real weights through the pair's own templates and token map."])


def reproduce_rl(st: dict | None) -> list[str]:
    """The RL step of a reproduce run: each run's held-out greedy accuracy before -> after, and the targets."""
    if not isinstance(st, dict) or st.get("status") != "ok":
        return []
    rows = []
    for name, m in st["models"].items():
        for exp, r in m["runs"].items():
            if r.get("status") == "skipped":
                rows.append([name, exp, "skipped", r.get("reason", ""), "-", "-"])
                continue
            what = (f"critiques of {r.get('n_critiques')} wrong solutions, SFT" if exp == "cft" else
                    f"{r['reward']} reward")
            rows.append([name, exp, what, r["n_problems"], f"{pct(r['before'])} -> {pct(r['after'])}",
                         f"{pct(r['thinking_before'])} -> {pct(r['thinking_after'])}"])
    targets = [[t["target"], f"{t['value'] * 100:+.1f} points", "met" if t["ok"] else "**missed**"]
               for t in st.get("targets", [])]
    return ["", f"The RL step ({st['config']['steps']} GRPO steps a run, held-out greedy accuracy on "
                f"{st['n_heldout']} problems):", "",
            table(["model", "experiment", "signal", "training problems", "held-out accuracy", "thinking rate"],
                  rows), "", table(["target", "this run", ""], targets)]


def pass_at_k(d: dict) -> str:
    """`lens reproduce --steps sampling --json`: pass@k of both models with their CIs, and reflection in samples."""
    meta, r = d["meta"], d["sampling"]
    pk = r["pass_at_k"]
    rows = [[k, f"{pct(pk['base'][k]['value'])} {ci_pct(pk['base'][k]['lo'], pk['base'][k]['hi'])}",
             f"{pct(pk['thinking'][k]['value'])} {ci_pct(pk['thinking'][k]['lo'], pk['thinking'][k]['hi'])}"]
            for k in map(str, r["ks"])]
    cross = r.get("crossover_k")
    near = next((int(k) for k in map(str, r["ks"]) if pk["thinking"][k]["value"] - pk["base"][k]["value"] < 1e-3),
                None)
    refl = r["reflection"][r["reflection_detector"]]
    det = refl["detector"]
    beh = [[f"`{meta['models'][m]['spec']}`", pct(b["reflection_rate"]), pct(b["accuracy_if_reflective"]),
            pct(b["accuracy_if_not_reflective"]), pct(r["behaviour"][m]["thinking_rate"]),
            fixed(r["tokens"][m]["mean"], 1)]
           for m, b in ((m, refl["models"][m]) for m in ("base", "thinking"))]
    return "\n".join([
        f"`{meta['base']}` against `{meta['thinking']}`: {r['n']} held-out problems x {r['samples']} samples "
        f"(temperature {fixed(r['temperature'], 1)}, top-p {fixed(r['top_p'], 2)}, up to {r['max_new_tokens']} new "
        "tokens); unbiased pass@k with bootstrap 95% intervals over problems:", "",
        table(["k", "base", "thinking"], rows), "",
        f"Smallest k at which the base's pass@k reaches the thinking model's: "
        f"{cross if cross is not None else 'none up to ' + str(r['ks'][-1])} (within 0.1 point: "
        f"{near if near is not None else 'none'}).", "",
        f"Reflection in the samples ({det['name']} detector, {det['match']} match of "
        f"{', '.join(det['keywords'])}):", "",
        table(["model", "samples that reflect", "accuracy when they do", "accuracy when not", "samples that think",
               "mean new tokens"], beh)])


def first_step_organism(d: dict) -> str:
    c = d["contrast"]
    top = len(d.get("verdicts", {}).get("top5", [])) or 5
    parts = [_sae_line(d), "",
             f"Ranking: {c['pos']} ({c['n_pos']}) vs {c['neg']} ({c['n_neg']}), at `{c['select']}`; the top {top}:",
             "", _ranking(d, top), "",
             f"Steer-check on {d['n_heldout']} held-out problems (greedy); alphas "
             f"{', '.join(fixed(a, 1) for a in d['alphas'])} (mean residual norm at P-1: {fixed(d['resid_norm'], 1)}); "
             f"random controls drawn from: {d.get('random_pool', '-')}:", "",
             table(STEER_HEADER, _steer_rows(d))]
    v = d.get("verdicts")
    if v:
        parts += ["", table(["verdict", "value"], [[k, _verdict(x)] for k, x in v.items()])]
    taxes = [(k, d[k]) for k in ("taxonomy", "taxonomy_generated") if isinstance(d.get(k), dict)]
    if taxes:
        parts += ["", "Sentence taxonomy (`run_taxonomy_organism`):", "",
                  table(["traces", "model", "site", "traces / sentences", "categories", "purity", "majority baseline",
                         "labels with their own category"],
                        [[t["source"], f"`{t['model']}`", f"`{t['site']}`", f"{t['n_traces']} / {t['n_sentences']}",
                          t["n_categories"], f"{fixed(t['purity'], 3)}", f"{fixed(t['majority_baseline'], 3)}",
                          ", ".join(t.get("labels_with_own_category", []))] for _, t in taxes])]
    return "\n".join(parts)


def _verdict(x: Any) -> str:
    if isinstance(x, list):
        return ", ".join(str(i) for i in x)
    if isinstance(x, bool):
        return yes_no(x)
    return num(x)


def first_step_smollm2(d: dict) -> str:
    m = d["model"]
    return "\n".join([
        f"Model `{m['spec']}` ({m['n_layers']} layers, width {m['d_model']}, {m['dtype']}).", "",
        _sae_line(d), "", "Ranking, chain-of-thought vs direct-answer instruction, last prompt token; the top 5:",
        "", _ranking(d, 5), "",
        f"Steer-check on {d['n_eval']} eval problems (greedy); alphas {', '.join(fixed(a, 1) for a in d['alphas'])} "
        f"(mean residual norm at P-1: {fixed(d['resid_norm'], 1)}):", "",
        table(STEER_HEADER, _steer_rows(d)),
    ])


# --- the page ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    title: str
    source: str  # path of the JSON, relative to the repository root
    commands: tuple[str, ...]  # what writes that JSON, in order
    render: Callable[[Any], str]
    guide: str = ""  # the guide page that explains the measurement


SECTIONS: tuple[Section, ...] = (
    Section("Organism pair: measured properties", "lens/organism/models/eval.json",
            ("lens organism eval --json > lens/organism/models/eval.json",),
            organism_properties, "organism.md#measured-properties"),
    Section("Verifier pair: measured properties", "lens/organism/models/verifier_eval.json",
            ("lens organism eval --pair verifier --json > lens/organism/models/verifier_eval.json",),
            organism_properties, "organism.md#the-second-pair-organismverifier-base-organismverifier-thinking"),
    Section("Verifier pair with the RL-made thinking model: measured properties",
            "lens/organism/models/verifier_rl_eval.json",
            ("lens organism eval --pair verifier-rl --json > lens/organism/models/verifier_rl_eval.json",),
            organism_properties, "organism.md#an-rl-made-thinking-model-organismverifier-thinking-rl"),
    Section("Finding 1: pass@k on the organism pair", "docs/results/passk_organism.json",
            ("lens reproduce --steps sampling --samples 256 --n 32 --out REPORT --json "
             "> docs/results/passk_organism.json",), pass_at_k, "reproduce.md"),
    Section("Finding 1: pass@k on the verifier pair with the RL-made thinking model",
            "docs/results/passk_verifier_rl.json",
            ("lens reproduce --organism verifier-rl --steps sampling --samples 256 --n 32 --out REPORT --json "
             "> docs/results/passk_verifier_rl.json",), pass_at_k, "finding-1-sampling.md#the-organism"),
    Section("Finding 4: CoT-decoding on the organism pair", "docs/results/cot_organism.json",
            ("lens reproduce --steps cot --out REPORT --json > docs/results/cot_organism.json",), cot_decoding,
            "decoding.md"),
    Section("Finding 4: CoT-decoding on the verifier base", "docs/results/cot_verifier_rl.json",
            ("lens reproduce --organism verifier-rl --steps cot --out REPORT --json "
             "> docs/results/cot_verifier_rl.json",),
            cot_decoding, "finding-4-cot-decoding.md#the-organism"),
    Section("Finding 2: the hybrid, taxonomy selector", "docs/results/hybrid_organism_n150.json",
            ("lens hybrid --n 150 --json > docs/results/hybrid_organism_n150.json",), hybrid,
            "hybrid.md"),
    Section("Finding 2: the hybrid, nearest-category selector", "docs/results/hybrid_organism_n150_nearest.json",
            ("lens hybrid --n 150 --selector nearest --json > docs/results/hybrid_organism_n150_nearest.json",), hybrid,
            "hybrid.md"),
    Section("Finding 2: the hybrid on the verifier pair", "docs/results/hybrid_verifier_n150.json",
            ("lens hybrid --base organism:verifier-base --thinking organism:verifier-thinking --n 150 "
             "--max-new-tokens 220 --json > docs/results/hybrid_verifier_n150.json",), hybrid,
            "organism.md#the-second-pair-organismverifier-base-organismverifier-thinking"),
    Section("Finding 2: the hybrid on the verifier pair, calibrated scales",
            "docs/results/hybrid_verifier_n150_calibrated.json",
            ("lens hybrid --base organism:verifier-base --thinking organism:verifier-thinking --n 150 "
             "--max-new-tokens 220 --calibrate 60 --json > docs/results/hybrid_verifier_n150_calibrated.json",), hybrid,
            "organism.md#the-second-pair-organismverifier-base-organismverifier-thinking"),
    Section("Finding 2: the hybrid on the verifier pair, calibrated layers and scales",
            "docs/results/hybrid_verifier_n150_layers.json",
            ("lens hybrid --base organism:verifier-base --thinking organism:verifier-thinking --n 150 "
             "--max-new-tokens 220 --calibrate 60 --calibration-grid 0,1,2,3 --calibration-layers 1,2,3 --json "
             "> docs/results/hybrid_verifier_n150_layers.json",), hybrid,
            "hybrid.md#the-papers-rules-and-lenss-modes"),
    Section("Finding 2: the hybrid on the verifier pair with the RL-made thinking model, optimised vectors",
            "docs/results/hybrid_verifier_rl_n150_forced_optimised.json",
            ("lens hybrid --base organism:verifier-base --thinking organism:verifier-thinking-rl --n 150 "
             "--max-new-tokens 220 --vectors optimised --force-thinking --json "
             "> docs/results/hybrid_verifier_rl_n150_forced_optimised.json",), hybrid,
            "organism.md#the-hybrid-on-the-rl-made-pair"),
    Section("Finding 2: the hybrid on the verifier pair with the RL-made thinking model, ten categories",
            "docs/results/hybrid_verifier_rl_n150_forced_optimised_c10.json",
            ("lens hybrid --base organism:verifier-base --thinking organism:verifier-thinking-rl --n 150 "
             "--max-new-tokens 220 --vectors optimised --force-thinking --categories 10 --json "
             "> docs/results/hybrid_verifier_rl_n150_forced_optimised_c10.json",), hybrid,
            "organism.md#the-hybrid-on-the-rl-made-pair"),
    Section("Finding 2: the hybrid on the verifier pair with the RL-made thinking model, difference of means",
            "docs/results/hybrid_verifier_rl_n150_forced.json",
            ("lens hybrid --base organism:verifier-base --thinking organism:verifier-thinking-rl --n 150 "
             "--max-new-tokens 220 --force-thinking --json > docs/results/hybrid_verifier_rl_n150_forced.json",),
            hybrid,
            "organism.md#the-hybrid-on-the-rl-made-pair"),
    Section("Finding 2: the hybrid on the verifier pair (selection-made thinking model), optimised vectors",
            "docs/results/hybrid_verifier_n150_forced_optimised.json",
            ("lens hybrid --base organism:verifier-base --thinking organism:verifier-thinking --n 150 "
             "--max-new-tokens 220 --vectors optimised --force-thinking --json "
             "> docs/results/hybrid_verifier_n150_forced_optimised.json",), hybrid,
            "organism.md#the-hybrid-on-the-rl-made-pair"),
    Section("Finding 2: which of the thinking model's tokens the hybrid's vectors reach",
            "docs/results/hybrid_steerable_verifier_rl.json",
            ("python experiments/hybrid_steerable.py --json docs/results/hybrid_steerable_verifier_rl.json",),
            hybrid_steerable, "organism.md#the-hybrid-on-the-rl-made-pair"),
    Section("Finding 2: the hybrid on the verifier pair with the RL-made thinking model, by steer layer",
            "docs/results/hybrid_verifier_rl_layers.json",
            ("python experiments/hybrid_layers.py --json docs/results/hybrid_verifier_rl_layers.json",),
            hybrid_layers, "organism.md#ground-truth-of-the-verifier-pair"),
    Section("Finding 2: which tokens the hybrid's vectors reach, by layer",
            "docs/results/hybrid_steerable_verifier_rl_layers.json",
            ("python experiments/hybrid_steerable.py --layers 0,1,2,3 --vectors optimised "
             "--json docs/results/hybrid_steerable_verifier_rl_layers.json",),
            hybrid_steerable_layers, "organism.md#ground-truth-of-the-verifier-pair"),
    Section("Finding 3: minimal signal, supervised", "experiments/minimal_signal_results.json",
            ("python experiments/minimal_signal.py --json experiments/minimal_signal_results.json",
             "python experiments/minimal_signal.py --parts a --lr 2e-4 --steps 4,16 --append "
             "--json experiments/minimal_signal_results.json",
             "python experiments/minimal_signal.py --parts a --lr 5e-5 --steps 4,16 --append "
             "--json experiments/minimal_signal_results.json"),
            minimal_signal, "organism.md#minimal-signal-experiments"),
    Section("Finding 3: RL with verifiable rewards", "experiments/rl_minimal_signal_results.json",
            ("python experiments/rl_minimal_signal.py --json experiments/rl_minimal_signal_results.json",),
            rl_study, "rl.md#the-organism-experiments"),
    Section("Finding 3: critique fine-tuning and 1-shot RLVR on one problem",
            "experiments/cft_one_problem_results.json",
            ("python experiments/cft_one_problem.py --problems 0,1,2 --rl-seeds 0,1,2,3 "
             "--json experiments/cft_one_problem_results.json",),
            cft, "rl.md#one-problem-cft-beside-1-shot-rlvr"),
    Section("Finding 3: 1-shot RLVR with a LoRA adapter on SmolLM2-135M-Instruct", "docs/results/rl_smollm2_lora.json",
            ("lens rl train smollm2-135m-instruct --tasks experiments/data/smollm2_problems.jsonl --lora-r 8 "
             "--steps 48 --eval-every 16 --eval-n 24 --eval-samples 0 --generations 4 --prompts-per-step 2 "
             "--max-new-tokens 64 --lr 1e-4 --out OUT --json > docs/results/rl_smollm2_lora.json",),
            rl_run, "rl.md#real-weights"),
    Section("Finding 3: 1-shot GRPO with the random reward and a LoRA adapter on SmolLM2-135M-Instruct",
            "docs/results/rl_smollm2_lora_random.json",
            ("lens rl train smollm2-135m-instruct --tasks experiments/data/smollm2_problems.jsonl --lora-r 8 "
             "--reward random --steps 20 --eval-every 10 --eval-n 24 --eval-samples 0 --generations 4 "
             "--prompts-per-step 2 --max-new-tokens 64 --lr 1e-4 --out OUT --json "
             "> docs/results/rl_smollm2_lora_random.json",),
            rl_run, "rl.md#real-weights"),
    Section("Finding 3: 300 steps of 1-shot RLVR on the organism (post-saturation)",
            "docs/results/rl_postsat_organism.json",
            ("lens rl train organism:base --out OUT --regime one --steps 300 --eval-every 25 --eval-n 200 "
             "--eval-samples 0 --json > docs/results/rl_postsat_organism.json",),
            rl_saturation, "rl.md#the-organism-experiments"),
    Section("lens reproduce on the organism: every step and its time", "docs/results/reproduce_organism.json",
            ("lens reproduce --out REPORT --json > docs/results/reproduce_organism.json",),
            reproduce_run, "reproduce.md"),
    Section("lens reproduce on the verifier pair with the RL-made thinking model",
            "docs/results/reproduce_verifier_rl.json",
            ("lens reproduce --organism verifier-rl --out REPORT --json > docs/results/reproduce_verifier_rl.json",),
            reproduce_verifier, "organism.md#the-second-pair-organismverifier-base-organismverifier-thinking"),
    Section("lens reproduce on SmolLM2-135M-Instruct and its R1-style twin",
            "docs/results/reproduce_smollm2_r1style.json",
            ("lens reproduce --base smollm2-135m-instruct --thinking smollm2-135m-instruct-r1style "
             "--tasks experiments/data/smollm2_problems.jsonl --n 8 --samples 4 --hybrid-n 8 --cot-n 4 --k 3 "
             "--feature-n 4 --feature-pages 2 --max-new-tokens 64 --sae-texts 64 --out REPORT --json "
             "> docs/results/reproduce_smollm2_r1style.json",),
            reproduce_pair, "reproduce.md#a-real-weights-pair-offline-smollm2-and-its-r1-style-twin"),
    Section("Finding 5: first-step trigger on the organism", "docs/results/first_step_trigger_organism.json",
            ("python experiments/first_step_trigger.py --json docs/results/first_step_trigger_organism.json",),
            first_step_organism, "finding-5-first-step-feature.md#on-the-organism"),
    Section("Finding 5: first-step trigger on the verifier pair with the RL-made thinking model",
            "docs/results/first_step_trigger_verifier_rl.json",
            ("lens reproduce --organism verifier-rl --steps feature --out REPORT --json "
             "> docs/results/first_step_trigger_verifier_rl.json",),
            lambda d: first_step_organism(d["feature"]), "finding-5-first-step-feature.md#on-the-verifier-pair"),
    Section("Finding 5: first-step trigger on SmolLM2-135M-Instruct", "docs/results/first_step_trigger_smollm2.json",
            ("python experiments/first_step_trigger_smollm2.py --json docs/results/first_step_trigger_smollm2.json",),
            first_step_smollm2, "finding-5-first-step-feature.md#on-smollm2-135m-instruct"),
)

INTRO = """\
# Results

<!-- Generated by `make results` (python experiments/results_page.py) from the JSON files named below.
     Do not edit: change or re-run the experiment, then regenerate. -->

Every table on this page is computed by `python experiments/results_page.py` (`make results`) from a JSON
result file committed in the repository; each section names its file and, above its tables, the command
that writes that file. Re-run the command, then `make results`, and the page follows;
`tests/test_results_page.py` fails when the page and the files disagree. The guide pages explain what each
experiment measures and how; the numbers live here.

Everything below runs on the bundled organism (a controlled testbed, not evidence about real LLMs: see
[The bundled organism](organism.md)) unless a section names other weights. `lens reproduce` measures every
finding into its own report folder ([Reproducing the findings](reproduce.md)); the sections below keep the
runs whose numbers the guides cite.
Speed measurements are on [Benchmarks](benchmarks.md).
"""


def render(root: Path = ROOT) -> str:
    lines = [INTRO, "| section | result file |", "|---|---|"]
    for s in SECTIONS:
        lines.append(f"| [{s.title}](#{slug(s.title)}) | `{s.source}` |")
    for s in SECTIONS:
        data = json.loads((root / s.source).read_text())
        lines += ["", f"## {s.title}", "", f"Result file: `{s.source}`"
                  + (f" (recorded: {provenance(data)})" if provenance(data) else "") + "."
                  + (f" What it measures: [{s.guide.split('#')[0]}]({s.guide})." if s.guide else ""), ""]
        lines += ["```bash", *s.commands, "```", "", s.render(data).rstrip()]
    return "\n".join(lines).rstrip() + "\n"


def sources(root: Path = ROOT) -> list[Path]:
    return [root / s.source for s in SECTIONS]


def main(argv: list[str] | None = None) -> int:
    from lens.artifacts import generated_page_main  # atomic: a reader sees the old page or the new one

    return generated_page_main(argv, description=__doc__.split("\n")[0], default=PAGE, sources=sources(),
                               render=render, root=ROOT, what="result", remedy="run `make results`")


if __name__ == "__main__":
    sys.exit(main())
