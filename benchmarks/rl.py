"""GRPO through `lens rl` vs calling TRL's GRPOTrainer directly with the same settings.

    python benchmarks/rl.py [--model organism:base] [--steps 30] [--repeats 2] [--json-out PATH]

Both train the same model on the same one organism problem (1-shot RLVR, correct reward, 8 generations
x 2 prompts per step, 120 new tokens at most, lr 3e-5, seed 0), alternated in one process, one torch
thread. lens's run evaluates only at step 0 and at the end (100 held-out problems, greedy, no pass@k
samples); its training time excludes those evaluations (their seconds are in its log), and the
row with evaluations is reported beside it. Tokens/s counts generated completion tokens.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

from benchmarks.record import add_json_out, write_json  # noqa: E402


def direct(model_spec: str, problem: dict, cfg, out: Path) -> tuple[float, float]:
    """(seconds, completion tokens) of TRL's GRPOTrainer on its own."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOTrainer

    import lens
    from lens.rl.grpo import grpo_args
    from lens.rl.rewards import REWARDS, RewardContext

    m = lens.load_model(model_spec)

    def correct(prompts, completions, answer, **kw):
        return [REWARDS["correct"](c, {"answer": a}, RewardContext()) for c, a in zip(completions, answer, strict=True)]

    rows = [{"prompt": problem["prompt"], "answer": problem["answer"]}] * (cfg.steps * cfg.prompts_per_step)
    args = grpo_args(cfg, out)
    args.save_strategy = "no"
    tr = GRPOTrainer(model=m.hf, reward_funcs=correct, args=args, train_dataset=Dataset.from_list(rows),
                     processing_class=m.tokenizer)
    for cb in (PrinterCallback, ProgressCallback):
        tr.remove_callback(cb)
    t = time.perf_counter()
    tr.train()
    secs = time.perf_counter() - t
    n = cfg.prompts_per_step * cfg.num_generations
    tokens = sum(h["completions/mean_length"] * n for h in tr.state.log_history if "completions/mean_length" in h)
    return secs, tokens


def via_lens(model_spec: str, problem: dict, held: list[dict], cfg, out: Path) -> tuple[float, float, float]:
    """(training seconds without evaluations, with them, completion tokens) of `lens.rl.train_rl`."""
    from lens.rl import train_rl

    log = train_rl(model_spec, [problem], held, "correct", cfg, out=out, say=lambda m: None)
    n = cfg.prompts_per_step * cfg.num_generations
    tokens = sum(r["mean_tokens"] * n for r in log["train"])
    evals = sum(e["seconds"] for e in log["evals"])
    return log["train_seconds"] - evals, log["train_seconds"], tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="organism:base")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2)
    add_json_out(ap)
    args = ap.parse_args()
    import torch

    from lens.evaluation.tasks import load_organism
    from lens.rl import RLConfig
    from lens.rl.data import from_tasks, organism_train_problems

    torch.set_num_threads(1)
    problem = organism_train_problems(1)[0]
    held = from_tasks(load_organism(limit=100))
    cfg = RLConfig(steps=args.steps, eval_every=args.steps, eval_n=100, eval_samples=0, save_every=args.steps)
    rows = {"direct": [], "lens": [], "lens_with_evals": []}
    tokens = {"direct": [], "lens": []}
    tmp = Path(tempfile.mkdtemp(prefix="lens-bench-rl-"))
    try:
        for r in range(args.repeats):
            s, tok = direct(args.model, problem, cfg, tmp / f"direct-{r}")
            rows["direct"].append(s)
            tokens["direct"].append(tok)
            s, s_all, tok = via_lens(args.model, problem, held, cfg, tmp / f"lens-{r}")
            rows["lens"].append(s)
            rows["lens_with_evals"].append(s_all)
            tokens["lens"].append(tok)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    out = {"model": args.model, "steps": args.steps, "repeats": args.repeats,
           "steps_per_s": {k: args.steps / v for k, v in med.items()},
           "completion_tokens_per_s": {"direct": statistics.median(tokens["direct"]) / med["direct"],
                                       "lens": statistics.median(tokens["lens"]) / med["lens"]},
           "ratio_lens_vs_direct_steps": med["direct"] / med["lens"],
           "ratio_lens_with_evals_vs_direct_steps": med["direct"] / med["lens_with_evals"],
           "seconds": rows, "completion_tokens": tokens}
    print(json.dumps(out, indent=1))
    if args.json_out:
        write_json(args.json_out, out)


if __name__ == "__main__":
    main()
