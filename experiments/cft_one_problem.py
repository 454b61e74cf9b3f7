"""Finding 3, critique fine-tuning on one problem: does training on critiques of one problem's wrong solutions
bring out a reasoning skill the base already has, and do nothing for a model that lacks it?

On the verifier pair: the base (`organism:verifier-base`) saw careful checking and critiques at low rates in
pretraining; the control (`organism:control`) saw neither. Both are fine-tuned (TRL SFTTrainer, `lens.rl.cft`)
on the same critiques: the generator's reviews of the base's distinct wrong solutions of ONE training problem.
Measured on held-out problems before and after: greedy accuracy, accuracy forced into the thinking format,
and the share of verification / backtrack steps in those forced traces. Each problem of `--problems` is one run.

    python experiments/cft_one_problem.py [--problems 0,1,2] [--eval-n 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import lens
from lens.organism import load_heldout
from lens.rl import organism_train_problems
from lens.rl.cft import CFTConfig, organism_critiques, organism_scores, train_cft


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="organism:verifier-base")
    ap.add_argument("--control", default="organism:control")
    ap.add_argument("--problems", default="0,1,2", help="indices of organism training problems, one run each")
    ap.add_argument("--eval-n", type=int, default=200)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    t0 = time.time()
    held = load_heldout()[: args.eval_n]
    base, control = lens.load_model(args.base), lens.load_model(args.control)
    result: dict = {"base": args.base, "control": args.control, "eval_n": len(held),
                    "recipe": vars(args), "before": {}, "runs": []}
    for name, m in (("base", base), ("control", control)):
        result["before"][name] = organism_scores(m, held)
        print(f"{name} before: {_line(result['before'][name])}", file=sys.stderr)
    train = organism_train_problems(max(int(i) for i in args.problems.split(",")) + 1)
    cfg = CFTConfig(epochs=args.epochs, lr=args.lr)
    with tempfile.TemporaryDirectory() as tmp:
        for i in (int(x) for x in args.problems.split(",")):
            one = train[i]
            examples = organism_critiques(base, one, n_samples=args.samples)
            run = {"problem": one, "n_critiques": len(examples), "example": examples[0], "after": {}}
            for name, m in (("base", base), ("control", control)):
                out = train_cft(m, examples, Path(tmp) / f"{name}-{i}", cfg)
                run["after"][name] = organism_scores(lens.load_model(str(out)), held)
                print(f"problem {i} ({len(examples)} critiques) {name} after: {_line(run['after'][name])}",
                      file=sys.stderr)
            result["runs"].append(run)
    result["seconds"] = round(time.time() - t0, 1)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"before": {k: _short(v) for k, v in result["before"].items()},
                      "runs": [{"problem": r["problem"]["prompt"].strip(), "n_critiques": r["n_critiques"],
                                **{k: _short(v) for k, v in r["after"].items()}} for r in result["runs"]],
                      "seconds": result["seconds"]}, indent=2))
    return result


def _short(s: dict) -> dict:
    return {"greedy": round(s["greedy_accuracy"], 3), "forced": round(s["forced_thinking_accuracy"], 3),
            "verification": round(s["forced_shares"]["verification"] or 0, 3),
            "backtrack": round(s["forced_shares"]["backtrack"] or 0, 3)}


def _line(s: dict) -> str:
    return " ".join(f"{k} {v}" for k, v in _short(s).items())


if __name__ == "__main__":
    main()
