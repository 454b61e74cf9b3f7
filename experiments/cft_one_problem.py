"""Finding 3 on one problem: critique fine-tuning (CFT) beside 1-shot RLVR on the same problem. Does training on
critiques of one problem's wrong solutions, or GRPO with the correct reward on that one problem, bring out a
reasoning skill the base already has, and do nothing for a model that lacks it?

On the verifier pair: the base (`organism:verifier-base`) saw careful checking and critiques at low rates in
pretraining; the control (`organism:control`) saw neither. For each problem of `--problems` (organism training
problems, outside the held-out set), each model is trained twice from its start:

* CFT (TRL SFTTrainer, `lens.rl.cft`): the generator's critiques of the base's distinct wrong solutions of the
  problem, the same critiques for both models;
* 1-shot RLVR (TRL GRPOTrainer, `lens.rl.train_rl`): the problem repeated in every batch, reward 1 when the
  answer is right, seeded.

Measured on held-out problems before and after each: greedy accuracy and thinking-format rate, accuracy forced
into the thinking format, the share of verification / backtrack steps in the forced traces and in the greedy
traces (`lens.organism.behaviours.trace_stats`); on the training problem itself, greedy correctness and the
accuracy of `--train-samples` samples at T=1. `--reference` (the verifier thinking model, made by selection) is
measured once, untrained, as the level the behaviour reaches when it is selected for.

    python experiments/cft_one_problem.py [--problems 0,1,2] [--arms cft,rlvr] [--rl-steps 100] [--rl-seeds 0,1,2,3]
                                          [--out RUNS] [--json out.json]

With several `--rl-seeds`, each model is trained once per seed on each problem (`rlvr_seeds`: every seed's
scores); the first seed's run is the one reported in full (`rlvr`, with its held-out curve). Runs kept in
`--out` are reused when the command runs again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import lens
from lens.organism import load_heldout
from lens.rl import RLConfig, evaluate_policy, organism_train_problems, train_rl
from lens.rl.cft import CFTConfig, organism_critiques, organism_scores, train_cft

ARMS = ("cft", "rlvr")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="organism:verifier-base")
    ap.add_argument("--control", default="organism:control")
    ap.add_argument("--reference", default="organism:verifier-thinking",
                    help="measured once, untrained, beside the runs ('' for none)")
    ap.add_argument("--problems", default="0,1,2", help="indices of organism training problems, one run each")
    ap.add_argument("--arms", default=",".join(ARMS), help="cft, rlvr or both")
    ap.add_argument("--eval-n", type=int, default=200)
    ap.add_argument("--train-samples", type=int, default=64, help="samples (T=1) of the training problem measured")
    ap.add_argument("--samples", type=int, default=256, help="CFT: samples of the base searched for wrong solutions")
    ap.add_argument("--epochs", type=int, default=4, help="CFT epochs")
    ap.add_argument("--lr", type=float, default=5e-4, help="CFT learning rate")
    ap.add_argument("--rl-steps", type=int, default=100, help="1-shot RLVR: GRPO steps")
    ap.add_argument("--rl-lr", type=float, default=3e-5, help="1-shot RLVR: learning rate")
    ap.add_argument("--rl-generations", type=int, default=8, help="1-shot RLVR: completions per prompt")
    ap.add_argument("--rl-eval-every", type=int, default=20, help="1-shot RLVR: held-out greedy accuracy every N steps")
    ap.add_argument("--max-new-tokens", type=int, default=220,
                    help="completion budget everywhere (the verifier pair's checked traces run to about 175 tokens)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rl-seeds", default=None,
                    help="1-shot RLVR: seeds, one run each (default --seed); the first is the run reported in full")
    ap.add_argument("--out", default=None,
                    help="keep the RL runs here (resumed when rerun); default a temporary folder")
    ap.add_argument("--json", default=None, help="write the results here (atomically)")
    args = ap.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not arms or set(arms) - set(ARMS):
        ap.error(f"--arms takes {', '.join(ARMS)}")
    t0 = time.time()
    held = load_heldout()[: args.eval_n]
    base, control = lens.load_model(args.base), lens.load_model(args.control)
    models = {"base": base, "control": control}
    rl_cfg = RLConfig(steps=args.rl_steps, learning_rate=args.rl_lr, num_generations=args.rl_generations,
                      max_completion_length=args.max_new_tokens, eval_every=args.rl_eval_every, eval_n=len(held),
                      eval_samples=0, save_every=args.rl_steps, keep_checkpoints=1, seed=args.seed)
    result: dict = {"base": args.base, "control": args.control, "eval_n": len(held), "arms": arms,
                    "recipe": {**vars(args), "rl": {k: v for k, v in vars(rl_cfg).items()}}, "before": {}, "runs": []}
    for name, m in models.items():
        result["before"][name] = organism_scores(m, held, args.max_new_tokens)
        print(f"{name} before: {_line(result['before'][name])}", file=sys.stderr)
    if args.reference:
        result["reference"] = {"model": args.reference, "scores": organism_scores(lens.load_model(args.reference), held,
                                                                          args.max_new_tokens)}
        print(f"reference {args.reference}: {_line(result['reference']['scores'])}", file=sys.stderr)
    rl_seeds = [int(x) for x in (args.rl_seeds or str(args.seed)).split(",") if x.strip()]
    problems = [int(x) for x in args.problems.split(",")]
    train = organism_train_problems(max(problems) + 1)
    seconds = {arm: 0.0 for arm in arms}
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = Path(args.out) if args.out else Path(tmp)
        for i in problems:
            one = train[i]
            run: dict = {"problem": one, "before_train_problem": {name: problem_scores(m, one, args)
                                                                  for name, m in models.items()}}
            if "cft" in arms:
                t = time.time()
                examples = organism_critiques(base, one, n_samples=args.samples, max_new_tokens=args.max_new_tokens)
                run.update(n_critiques=len(examples), example=examples[0], after={})
                for name, m in models.items():
                    out = train_cft(m, examples, Path(tmp) / f"cft-{name}-{i}",
                                    CFTConfig(epochs=args.epochs, lr=args.lr, seed=args.seed))
                    run["after"][name] = scores(lens.load_model(str(out)), held, one, args)
                    print(f"problem {i} CFT ({len(examples)} critiques) {name} after: {_line(run['after'][name])}",
                          file=sys.stderr)
                seconds["cft"] += time.time() - t
            if "rlvr" in arms:
                t = time.time()
                run["rlvr"], run["rlvr_seeds"] = {}, {}
                for name, m in models.items():
                    for seed in rl_seeds:
                        cfg = dataclasses.replace(rl_cfg, seed=seed)
                        log = train_rl(m, [one], held, "correct", cfg, runs_dir / f"rlvr-{name}-{i}-seed{seed}",
                                       say=lambda msg, n=name, k=i: print(f"  {n} rlvr {k}: {msg}", file=sys.stderr))
                        got = scores(lens.load_model(log["final"]), held, one, args)
                        got["rl"] = rl_summary(log, cfg)
                        run["rlvr_seeds"].setdefault(name, []).append({"seed": seed, **_short(got)})
                        if seed == rl_seeds[0]:
                            run["rlvr"][name] = got
                        print(f"problem {i} 1-shot RLVR ({cfg.steps} steps, seed {seed}) {name} after: {_line(got)}",
                              file=sys.stderr)
                seconds["rlvr"] += time.time() - t
            result["runs"].append(run)
    result["arm_seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    result["seconds"] = round(time.time() - t0, 1)
    if args.json:
        write_json(args.json, result)
    print(json.dumps(summary(result), indent=2))
    return result


def problem_scores(model, problem: dict, args) -> dict:
    """The training problem itself: greedy correctness, accuracy of ``--train-samples`` samples at T=1 (seeded) and
    the thinking-format rate of those samples."""
    got = evaluate_policy(model, [problem], samples=args.train_samples, max_new_tokens=args.max_new_tokens,
                          seed=args.seed)
    return {"greedy_correct": got["heldout_accuracy"] == 1.0,
            "sampled_accuracy": (got.get("pass_at_k") or {}).get("1"),
            "sampled_thinking_rate": got.get("sample_thinking_rate"), "samples": args.train_samples}


def scores(model, held: list[dict], problem: dict, args) -> dict:
    return {**organism_scores(model, held, args.max_new_tokens), "train_problem": problem_scores(model, problem, args)}


def rl_summary(log: dict, cfg: RLConfig) -> dict:
    """The run's held-out greedy curve and its training accuracy over the last ``eval_every`` steps."""
    last = log["train"][-cfg.eval_every:]
    return {"steps": cfg.steps, "train_seconds": log.get("train_seconds"),
            "final_train_accuracy": sum(r["train_accuracy"] for r in last) / max(1, len(last)),
            "final_train_thinking_rate": sum(r["thinking_rate"] for r in last) / max(1, len(last)),
            "evals": [{k: e.get(k) for k in ("step", "heldout_accuracy", "thinking_rate", "mean_tokens",
                                              "train_accuracy")} for e in log["evals"]]}


def write_json(path: str | os.PathLike, result: dict) -> None:
    """``result`` as JSON at ``path``, atomically (`lens.artifacts.write_json`: a killed run leaves the previous
    file whole)."""
    from lens.artifacts import write_json as atomic_json

    atomic_json(path, result)


def summary(result: dict) -> dict:
    out: dict = {"before": {k: _short(v) for k, v in result["before"].items()}}
    if "reference" in result:
        out["reference"] = _short(result["reference"]["scores"])
    out["runs"] = [{"problem": r["problem"]["prompt"].strip(),
                    **({"n_critiques": r["n_critiques"], "cft": {k: _short(v) for k, v in r["after"].items()}}
                       if "after" in r else {}),
                    **({"rlvr": {k: _short(v) for k, v in r["rlvr"].items()}} if "rlvr" in r else {}),
                    **({"rlvr_seeds": r["rlvr_seeds"]} if len(next(iter(r.get("rlvr_seeds", {}).values()), [])) > 1
                       else {})}
                   for r in result["runs"]]
    out["seconds"] = result["seconds"]
    return out


def _short(s: dict) -> dict:
    out = {"greedy": round(s["greedy_accuracy"], 3), "thinking": round(s["thinking_rate"], 3),
           "forced": round(s["forced_thinking_accuracy"], 3),
           "verification": round(s["forced_shares"]["verification"] or 0, 3),
           "backtrack": round(s["forced_shares"]["backtrack"] or 0, 3)}
    if s.get("train_problem"):
        out["train_problem"] = round(s["train_problem"]["sampled_accuracy"] or 0, 3)
    return out


def _line(s: dict) -> str:
    return " ".join(f"{k} {v}" for k, v in _short(s).items())


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)  # one core: the run time on the results page is a one-core figure
    main()
