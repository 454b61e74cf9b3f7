"""First-step trigger on the bundled organism (finding 5; He et al., arXiv 2601.08058 in miniature).

1. A TopK SAE on the base model's residual after the middle layer, trained on a fresh sample of
   the organism corpus (cached in the user cache after the first run).
2. `find-feature` for "continuation reasons vs answers directly": prompts marked T (think) vs
   the same problems marked D (direct), at the last prompt token.
3. Steer-check on unmarked held-out prompts: each top-5 feature added at the last prompt
   token only (position P-1, whose forward produces the first generated token; alpha swept),
   vs random features at the same alphas and vs the thinking model.
4. The sentence taxonomy with purity against the step labels, on two sets of traces: the corpus's
   thinking documents (all five planted step kinds: restate, computation, error, backtrack,
   verification; the verdict uses these) and the thinking model's own greedy traces (the hybrid
   paper's setting; the shipped thinking model makes almost no errors, so its traces hold only
   restate and computation steps and purity there is close to the majority baseline whatever
   the method does).

Targets, reported with the numbers whatever they are:
- a reasoning-mode feature ranks in the top 5: here, a top-5 feature whose first-step steering
  makes most answers use the thinking format (reasoning_rate >= 0.5);
- steering that one feature raises base greedy accuracy to within 10 points of the thinking model's;
- random features move accuracy by <= 5 points;
- taxonomy purity >= 0.8.

    python experiments/first_step_trigger.py [--n 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


def verdicts(res: dict) -> dict:
    """The targets, checked against a run_find_feature_organism result."""
    rows = res.get("steer_check", [])
    s = res.get("summary", {})
    top5 = [r["feature"] for r in res["ranking"][:5]]
    reasoning = sorted({r["feature"] for r in rows if r["kind"] == "feature" and r["feature"] in top5
                        and r["reasoning_rate"] >= 0.5})
    out = {"top5": top5, "reasoning_features_in_top5": reasoning,
           "target_reasoning_feature_in_top5": bool(reasoning)}
    if s.get("reference_accuracy") is not None and s.get("best_accuracy") is not None:
        out["gap_points"] = 100 * (s["reference_accuracy"] - s["best_accuracy"])
        out["target_within_10_points"] = out["gap_points"] <= 10
    if s.get("max_random_move") is not None:
        out["max_random_move_points"] = 100 * s["max_random_move"]
        out["max_random_gain_points"] = 100 * s["max_random_gain"]
        out["max_random_move_at_best_alpha_points"] = 100 * (s.get("max_random_move_at_best_alpha") or 0)
        out["target_random_le_5_points"] = out["max_random_move_points"] <= 5
        out["target_random_le_5_points_at_best_alpha"] = out["max_random_move_at_best_alpha_points"] <= 5
    out["first_step_only_everywhere"] = s.get("all_first_step_only")
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="held-out problems for the steer-check")
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--alphas", default=None, help="comma-separated absolute alphas (default from the residual norm)")
    ap.add_argument("--n-random", type=int, default=3)
    ap.add_argument("--no-taxonomy", action="store_true")
    ap.add_argument("--json", dest="json_out", default=None)
    args = ap.parse_args(argv)

    from lens.studies.find_feature_organism import run_find_feature_organism
    from lens.studies.taxonomy_organism import run_taxonomy_organism

    t0 = time.time()

    def say(msg: str) -> None:
        print(f"[{time.time() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    alphas = [float(a) for a in args.alphas.split(",")] if args.alphas else None
    res = run_find_feature_organism(layer=args.layer, n=args.n, alphas=alphas, n_random=args.n_random, progress=say)
    res["verdicts"] = verdicts(res)
    say("verdicts: " + json.dumps(res["verdicts"]))
    if not args.no_taxonomy:
        say("taxonomy on the corpus's labelled traces and on the thinking model's own traces")
        tax = run_taxonomy_organism(layer=args.layer, source="corpus")
        own = run_taxonomy_organism(layer=args.layer, source="generated")
        res["taxonomy"], res["taxonomy_generated"] = tax, own
        res["verdicts"]["taxonomy_purity"] = tax["purity"]
        res["verdicts"]["taxonomy_majority_baseline"] = tax["majority_baseline"]
        res["verdicts"]["target_purity_ge_0_8"] = tax["purity"] >= 0.8
        say(f"taxonomy purity {tax['purity']:.3f} (majority baseline {tax['majority_baseline']:.3f}); on the "
            f"thinking model's own traces {own['purity']:.3f} (baseline {own['majority_baseline']:.3f})")
    res["seconds"] = time.time() - t0
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=2, default=str))
    return res


if __name__ == "__main__":
    r = main()
    print(json.dumps({"summary": r.get("summary"), "verdicts": r["verdicts"]}, indent=2, default=str))
