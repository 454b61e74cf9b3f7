"""Minimal-signal experiments on the organism (the seed's third finding, in miniature).

(a) one-example activation: fine-tune the base on thinking traces of ONE training problem (the
    base's own right forced-thinking samples of it, plus the corpus trace), then measure held-out
    greedy accuracy and thinking rate;
(b) format-only selection ("spurious reward"): fine-tune the base on its own thinking-format
    samples whether right or wrong, same recipe as the thinking model otherwise;
(c) both on the control model (which never saw a thinking trace; its own samples never think,
    so for (b) it is also given the base's format-selected samples).

Prints a table; runs in a few minutes on 2 CPU cores.

    python experiments/minimal_signal.py [--models-dir DIR] [--n 200] [--json out.json]
    python experiments/minimal_signal.py --parts a --lr 2e-4 --steps 4,16 --append --json out.json   # more rows
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from pathlib import Path

import torch

from lens.organism import corpus as C
from lens.organism import load_heldout
from lens.organism.evaluate import load_pair
from lens.organism.sampling import generate
from lens.organism.train import SelectionConfig, finetune, rejection_sample

ONE_EXAMPLE_STEPS = (2, 4, 16)


def measure(model, tok, rows: list[dict]) -> dict:
    """Held-out greedy accuracy, greedy thinking rate and forced-thinking accuracy."""
    prompts = [r["prompt"] for r in rows]
    answers = [r["answer"] for r in rows]
    greedy = generate(model, tok, prompts)
    forced = generate(model, tok, prompts, prefill=C.THINK_OPEN)

    def acc(outs: list[str]) -> float:
        return sum(C.parse_answer(o) == a for o, a in zip(outs, answers, strict=True)) / len(rows)

    return {
        "greedy_acc": acc(greedy),
        "think_rate": sum(C.is_thinking(o) for o in greedy) / len(rows),
        "forced_acc": acc(forced),
    }


def one_problem_examples(model, tok, seed: int = 5, n_samples: int = 64) -> tuple[C.Problem, list[tuple[str, str]]]:
    """One 5-operand training problem and its distinct right thinking traces.

    The traces are the model's own forced-thinking samples at T=1 that end right, plus the
    corpus-format trace (so a model that never thinks still gets one example).
    """
    held = {r["expression"] for r in load_heldout()}
    rng = random.Random(seed)
    problem = C.random_problem(rng, 5)
    while problem.expression in held:
        problem = C.random_problem(rng, 5)
    prompt = problem.prompt()
    outs = generate(model, tok, [prompt] * n_samples, temperature=1.0, seed=seed, prefill=C.THINK_OPEN)
    traces = {o for o in outs if C.parse_answer(o) == problem.answer}
    traces.add(C.thinking_trace(problem) + f"A:{problem.answer}")
    return problem, [(prompt, t) for t in sorted(traces)]


def one_example_activation(model, tok, rows, steps: int = 16, lr: float = 5e-4, seed: int = 5) -> tuple[dict, object]:
    """Fine-tune a copy for ``steps`` steps (batch 16, cosine from ``lr``) on ONE problem's thinking traces."""
    problem, examples = one_problem_examples(model, tok, seed)
    data = [examples[i % len(examples)] for i in range(16 * steps)]
    tuned = copy.deepcopy(model)
    tokens = finetune(tuned, tok, data, epochs=1, lr=lr, batch_size=16, seed=seed, desc="one-example")
    row = {
        "train_problems": 1,
        "train_traces": len(examples),
        "steps": steps,
        "lr": lr,
        "train_tokens": tokens,
        "problem": problem.expression,
    }
    row.update(measure(tuned, tok, rows))
    return row, tuned


def format_only(model, tok, rows, examples: list[tuple[str, str]], stats: dict, seed: int = 3) -> dict:
    row = {
        "train_problems": stats.get("n_unique_problems_kept", 0),
        "train_traces": len(examples),
        "right_share": round(stats["n_thinking_right"] / max(1, stats["n_thinking"]), 3),
    }
    if not examples:
        row.update(measure(model, tok, rows))
        row["note"] = "no thinking samples: nothing to train on"
        return row
    tuned = copy.deepcopy(model)
    row["train_tokens"] = finetune(
        tuned, tok, examples, epochs=2, lr=5e-4, batch_size=32, seed=seed, desc="format-only"
    )
    row.update(measure(tuned, tok, rows))
    return row


def run(
    models_dir: str | None = None,
    n: int = 200,
    n_problems: int = 600,
    parts: str = "abc",
    steps: tuple[int, ...] = ONE_EXAMPLE_STEPS,
    lr: float = 5e-4,
) -> list[dict]:
    """The experiments named in ``parts`` (any of a, b, c); returns one dict per table row."""
    torch.set_num_threads(1)  # 1 thread: far faster than 2 when the 2 cores are shared
    rows = load_heldout()[:n]
    base, tok = load_pair(models_dir, "base")
    control, ctok = load_pair(models_dir, "control")
    thinking, ttok = load_pair(models_dir, "thinking")
    table: list[dict] = []

    def add(name: str, model_name: str, r: dict) -> None:
        table.append({"experiment": name, "model": model_name, **r})
        print(f"{name:40s} {model_name:8s} {r}", flush=True)

    add("none (reference)", "base", measure(base, tok, rows))
    add("rejection sampling, right only (shipped)", "thinking", measure(thinking, ttok, rows))
    add("none (reference)", "control", measure(control, ctok, rows))

    if "a" in parts:
        for k in steps:
            r, _ = one_example_activation(base, tok, rows, k, lr)
            add(f"(a) one-example activation, {k} steps, lr {lr:g}", "base", r)
    sel = SelectionConfig(n_problems=n_problems, seed=11)
    examples: list[tuple[str, str]] = []
    stats: dict = {}
    if "b" in parts or "c" in parts:
        examples, stats = rejection_sample(base, tok, sel, keep_wrong=True, log=lambda *_: None)
    if "b" in parts:
        add("(b) format-only selection (right or wrong)", "base", format_only(base, tok, rows, examples, stats))
    if "c" in parts:
        for k in steps:
            r, _ = one_example_activation(control, ctok, rows, k, lr)
            add(f"(c) one-example activation, {k} steps, lr {lr:g}", "control", r)
        c_examples, c_stats = rejection_sample(control, ctok, sel, keep_wrong=True, log=lambda *_: None)
        add("(c) format-only selection, own samples", "control", format_only(control, ctok, rows, c_examples, c_stats))
        add("(c) format-only, the base's samples", "control", format_only(control, ctok, rows, examples, stats))
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models-dir", default=None, help="folder with base/, thinking/, control/ (default bundled)")
    ap.add_argument("--n", type=int, default=200, help="held-out problems to measure on")
    ap.add_argument("--n-problems", type=int, default=600, help="training problems sampled for (b), 8 samples each")
    ap.add_argument("--parts", default="abc", help="which experiments to run (any of a, b, c)")
    ap.add_argument("--steps", default="2,4,16", help="fine-tuning steps for one-example activation")
    ap.add_argument("--lr", type=float, default=5e-4, help="learning rate for one-example activation")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--append", action="store_true",
                    help="keep the rows already in the --json file (a row of the same experiment and model is "
                         "replaced by this run's)")
    args = ap.parse_args()
    t0 = time.time()
    steps = tuple(int(x) for x in args.steps.split(",") if x.strip())
    table = run(args.models_dir, args.n, args.n_problems, args.parts, steps, args.lr)
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"minimal-signal experiments (held-out n={args.n}, greedy)")
    for col in ("experiment", "model", "train traces", "held-out acc", "thinking rate", "forced acc"):
        t.add_column(col)
    for r in table:
        t.add_row(
            r["experiment"],
            r["model"],
            str(r.get("train_traces", "-")),
            f"{r['greedy_acc']:.1%}",
            f"{r['think_rate']:.1%}",
            f"{r['forced_acc']:.1%}",
        )
    Console().print(t)
    print(f"took {time.time() - t0:.0f} s")
    if args.json:
        rows = table
        if args.append and Path(args.json).is_file():
            rows = merge_rows(json.loads(Path(args.json).read_text()), table)
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """`old` with each row of the same (experiment, model) as a row of `new` replaced in place; the other new rows
    go after the last row of their part ("(a)", "(b)", "(c)"), or at the end."""
    merged = list(old)
    for row in new:
        same = [i for i, r in enumerate(merged) if (r["experiment"], r["model"]) == (row["experiment"], row["model"])]
        if same:
            merged[same[0]] = row
            continue
        part = row["experiment"].split(")")[0] + ")" if row["experiment"].startswith("(") else None
        after = [i for i, r in enumerate(merged) if part and r["experiment"].startswith(part)]
        merged.insert(after[-1] + 1 if after else len(merged), row)
    return merged


if __name__ == "__main__":
    main()
