"""Finding 3 with real RL on the organism: 1-shot RLVR, full-set RLVR and spurious rewards (format,
random, incorrect label) on the base and on the control (pretrained without thinking traces), through
TRL's GRPO (`lens.rl`); pass@k to 256 before and after 1-shot RLVR; `lens diff` of each run's final
checkpoint against its start (per-layer weight change, activation shift and its cosine with the start
model's reasoning direction: T-marker vs D-marker prompts); the targets checked.

    python experiments/rl_minimal_signal.py [--out runs/rl-study] [--steps 60] [--json results.json]

About 15 minutes on 2 CPU cores at the defaults (runs resume: rerun the same command after a stop).
"""

from __future__ import annotations

import argparse
import json
import time

from lens.evaluation.tasks import load_organism
from lens.rl import RLConfig
from lens.rl.data import from_tasks
from lens.studies.organism_inputs import marker_contrast
from lens.studies.rl_study import CFT, EXPERIMENTS, run_rl_study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/rl-study", help="folder of the runs (one lens rl folder each)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--eval-n", type=int, default=200)
    ap.add_argument("--pass-k", type=int, default=256)
    ap.add_argument("--experiments", default=",".join(EXPERIMENTS),
                    help=f"comma separated, of {', '.join([*EXPERIMENTS, CFT])}")
    ap.add_argument("--json", default=None, help="also write the study's numbers here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    t = time.time()
    res = run_rl_study({"base": "organism:base", "control": "organism:control"}, args.out,
                       heldout=from_tasks(load_organism()), experiments=args.experiments.split(","),
                       cfg=RLConfig(steps=args.steps, eval_every=10, eval_n=args.eval_n, eval_samples=8),
                       pass_k=args.pass_k, pass_k_n=50, contrast=marker_contrast(),
                       say=lambda m: print(m, flush=True))
    res["seconds"] = round(time.time() - t, 1)
    print(f"{'model':8s} {'experiment':10s} {'problems':>8s} {'before':>7s} {'after':>7s} {'thinking':>8s}")
    for name, row in res["models"].items():
        for exp, r in row["runs"].items():
            if r.get("status") == "skipped":
                print(f"{name:8s} {exp:10s} skipped: {r['reason']}")
                continue
            print(f"{name:8s} {exp:10s} {r['n_problems']:8d} {r['before']:7.1%} {r['after']:7.1%} "
                  f"{r['thinking_after']:8.1%}")
        pk = row.get("pass_at_k")
        if pk:
            print(f"{name:8s} pass@k before/after 1-shot: " +
                  ", ".join(f"k={k}: {pk['before'][k]:.1%}/{pk['after'][k]:.1%}" for k in pk["before"]))
        for exp, d in row.get("diffs", {}).items():
            top = max(d["weights"], key=lambda w: w["relative_change"])
            cos = " ".join(f"{a.get('cosine_with_direction', float('nan')):+.2f}" for a in d["activations"])
            print(f"{name:8s} {exp:10s} largest weight change: {top['group']} ({top['relative_change']:.2%}); "
                  f"activation shift's cosine with the start model's reasoning direction by layer: {cos}")
    for t_ in res["targets"]:
        print(("ok   " if t_["ok"] else "MISS ") + f"{t_['target']}: {t_['value']:+.1%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
