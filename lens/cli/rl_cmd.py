"""`lens rl`: reinforcement learning with verifiable rewards (GRPO through TRL) on a model spec."""

from __future__ import annotations

import typer

from .common import TEMPLATE_HELP, console, emit_json, table, templated
from .validate import choice, non_negative, positive, positive_float

app = typer.Typer(help="RL with verifiable rewards: GRPO (TRL) with correct, format, random or incorrect rewards",
                  no_args_is_help=True)


HELD_SPLITS = ("test", "eval", "validation")


def problem_sets(model, tasks: str, heldout: str | None, template: str | None, n_train: int,
                 limit: int | None) -> tuple[list[dict], list[dict], str]:
    """(training problems, held-out problems, answer extractor) for ``--tasks`` / ``--heldout``."""
    from ..errors import LensError
    from ..evaluation.tasks import load_organism, load_tasks
    from ..evaluation.templates import model_prompts
    from ..rl.data import from_tasks, organism_train_problems

    if tasks == "organism":
        train = organism_train_problems(n_train)
        held_tasks = load_organism(limit=limit) if heldout in (None, "organism") else load_tasks(heldout, limit)
        return train, from_tasks(held_tasks), "auto"
    every = load_tasks(tasks)
    splits = {str(t.meta.get("split", "")) for t in every}
    if heldout is None:
        held_split = next((x for x in HELD_SPLITS if x in splits), None)
        if "train" not in splits or held_split is None:
            raise LensError(f"{tasks} has no split column with train and test (or eval) rows: pass --heldout with the "
                            "problems to measure on")
        train_t = [t for t in every if t.meta.get("split") == "train"]
        held_t = [t for t in every if t.meta.get("split") == held_split][:limit]
    else:
        train_t = [t for t in every if t.meta.get("split", "train") == "train"]
        held_t = load_tasks(heldout, limit)
    train_t = train_t[:n_train]
    train = from_tasks(train_t, model_prompts(model, [t.question for t in train_t], template))
    held = from_tasks(held_t, model_prompts(model, [t.question for t in held_t], template))
    return train, held, "auto"


def incorrect_labels(model, problems: list[dict], seed: int, max_new_tokens: int, say) -> list[dict]:
    """The incorrect-label reward's labels as the spurious-rewards paper makes them: each training problem's
    majority-vote answer of the model's own samples, the problem kept only where that answer is wrong."""
    from ..errors import LensError
    from ..studies.rl_study import incorrect_labelled

    say(f"labelling {len(problems)} training problem(s) with the model's own majority-vote wrong answers "
        "(reward 'incorrect'; rows that have incorrect_answer keep it)")
    has = [p.get("incorrect_answer") not in (None, "") for p in problems]
    given = [p for p, h in zip(problems, has, strict=True) if h]
    made = incorrect_labelled(model, [p for p, h in zip(problems, has, strict=True) if not h], seed=seed,
                              max_new_tokens=max_new_tokens)
    if not given and not made:
        raise LensError("the model's majority answer is right on every training problem, so there is no incorrect "
                        "label to reward; give --tasks rows with incorrect_answer, or use reward 'wrong'")
    return given + made


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    model: str = typer.Argument("organism:base", help="model spec to train (organism:base, a folder, a hub id, ...)"),
    out: str = typer.Option(..., "--out", help="run folder: rl_log.json, checkpoint-N/, final/ (resumed if it holds "
                                              "this run)"),
    tasks: str = typer.Option("organism", help="training problems: organism, or a JSONL of question/answer rows "
                                               "(rows with split=train when the file has a split column)"),
    heldout: str = typer.Option(None, help="held-out problems (default: the organism's held-out set, or the "
                                           "file's split=test (or eval) rows)"),
    reward: str = typer.Option("correct", help="correct, format, boxed, random, incorrect, wrong, or "
                                               "package.module:function"),
    regime: str = typer.Option("one", help="one (1-shot RLVR), few or full", callback=choice("one", "few", "full")),
    problem: int = typer.Option(None, help="index of the one problem (default: by --one-shot-from, else 0)",
                                callback=non_negative),
    one_shot_from: str = typer.Option(None, "--one-shot-from",
                                      help="rl_log.json of a full-set run: take the problem whose training accuracy "
                                           "varied most (the 1-shot RLVR paper's choice)"),
    few: int = typer.Option(4, help="problems in the few regime", callback=positive),
    n_train: int = typer.Option(512, "--n-train", help="training problems read", callback=positive),
    steps: int = typer.Option(60, callback=positive),
    lr: float = typer.Option(3e-5, "--lr", callback=positive_float),
    generations: int = typer.Option(8, help="completions per prompt (GRPO's group)", callback=positive),
    prompts_per_step: int = typer.Option(2, "--prompts-per-step", callback=positive),
    max_new_tokens: int = typer.Option(None, "--max-new-tokens", callback=positive,
                                       help="completion budget in tokens (default 220 for the verifier pair, whose "
                                            "checked traces run long; 120 for other models)"),
    num_iterations: int = typer.Option(1, "--num-iterations",
                                       help="optimisation passes per batch of generations (>1: clipping acts)",
                                       callback=positive),
    beta: float = typer.Option(0.0, help="KL coefficient against the initial model"),
    entropy_coef: float = typer.Option(0.0, "--entropy-coef", help="entropy bonus (the 1-shot paper uses one)"),
    eval_every: int = typer.Option(10, "--eval-every", callback=positive),
    eval_n: int = typer.Option(100, "--eval-n", help="held-out problems measured", callback=positive),
    eval_samples: int = typer.Option(8, "--eval-samples", help="samples per problem for pass@k", callback=non_negative),
    lora_r: int = typer.Option(0, "--lora-r", help="> 0: train a LoRA adapter of this rank (PEFT)",
                               callback=non_negative),
    seed: int = typer.Option(0, callback=non_negative),
    template: str = typer.Option(None, help=TEMPLATE_HELP + " (task files only; default the model's own)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="start again in an --out that holds another run"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Train with GRPO (TRL) and print held-out accuracy, pass@k, thinking rate and length at each evaluation."""
    import sys

    from ..errors import LensError
    from ..rl import RLConfig, accuracy_history, get_reward, one_shot_by_variance, read_log, train_rl
    from ..rl import regime as pick
    from .common import load

    get_reward(reward)  # a bad name fails before the model loads
    if one_shot_from is not None and problem is not None:
        raise LensError("give either --problem or --one-shot-from, not both")
    if regime != "one" and (one_shot_from is not None or problem is not None):
        raise LensError(f"--problem and --one-shot-from choose the one problem of --regime one, not --regime {regime}")
    m = load(ctx, model)
    if m.tokenizer is None:
        raise LensError(f"{model} has no tokenizer: RL generates text and needs one saved with the model")
    train, held, extractor = problem_sets(m, tasks, heldout, template, n_train, eval_n)
    index = problem
    if regime == "one" and one_shot_from is not None:
        from pathlib import Path

        src = Path(one_shot_from)
        prev = read_log(src.parent if src.name == "rl_log.json" else src)
        if prev is None:
            raise LensError(f"{one_shot_from} holds no lens RL log (rl_log.json)")
        pid = one_shot_by_variance(accuracy_history(prev), train)[0]
        index = next(i for i, p in enumerate(train) if p["id"] == pid)
    problems = pick(train, regime, k=few, index=index)
    if max_new_tokens is None:
        from ..rl.data import completion_length

        max_new_tokens = completion_length(model)
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if as_json else (lambda msg: console.print(msg))
    if reward == "incorrect" and any(p.get("incorrect_answer") in (None, "") for p in problems):
        problems = incorrect_labels(m, problems, seed, max_new_tokens, say)
    cfg = RLConfig(steps=steps, learning_rate=lr, num_generations=generations, prompts_per_step=prompts_per_step,
                   max_completion_length=max_new_tokens, num_iterations=num_iterations, beta=beta,
                   entropy_coef=entropy_coef, eval_every=eval_every, eval_n=eval_n, eval_samples=eval_samples,
                   lora_r=lora_r, seed=seed)
    log = train_rl(m, problems, held, reward, cfg, out, extractor=extractor, overwrite=overwrite, say=say)
    summary = summarise(log)
    if as_json:
        emit_json(summary)
        return
    console.print(table(f"lens rl: {m.spec}, reward {log['meta']['reward']}, {len(problems)} problem(s)",
                        [eval_row(e) for e in summary["evals"]]))
    console.print(f"trained model: {log.get('final')}")


def eval_row(e: dict) -> dict:
    """One evaluation as a table row."""
    pk = e.get("pass_at_k") or {}
    k = max(pk, key=int) if pk else None

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    return {"step": e["step"], "held-out acc": pct(e["heldout_accuracy"]), "thinking": pct(e["thinking_rate"]),
            "tokens": f"{e['mean_tokens']:.0f}", "pass@1": pct(pk.get("1")),
            (f"pass@{k}" if k else "pass@k"): pct(pk.get(k)) if k else "-",
            "train acc": pct(e.get("train_accuracy")), "train reward": pct(e.get("train_reward"))}


def summarise(log: dict) -> dict:
    """What `lens rl train --json` prints: the run's settings, every evaluation, and where the model is."""
    evals = log["evals"]
    first, last = (evals[0], evals[-1]) if evals else ({}, {})
    return {"status": log["status"], "model": log["meta"]["model"], "reward": log["meta"]["reward"],
            "n_problems": log["meta"]["n_problems"], "problems": log["meta"]["problems"],
            "steps": log["meta"]["config"]["steps"], "train_seconds": log.get("train_seconds"),
            "heldout_accuracy_before": first.get("heldout_accuracy"),
            "heldout_accuracy_after": last.get("heldout_accuracy"),
            "thinking_rate_before": first.get("thinking_rate"), "thinking_rate_after": last.get("thinking_rate"),
            "evals": evals, "final": log.get("final")}


@app.command("cft")
def cft_cmd(
    ctx: typer.Context,
    model: str = typer.Argument("organism:verifier-base", help="model spec to fine-tune (organism:verifier-base, a "
                                                                "folder, a hub id, ...)"),
    out: str = typer.Option(..., "--out", help="folder for the fine-tuned model (an HF folder with training.json)"),
    problem: int = typer.Option(0, help="index of the one organism training problem whose wrong solutions are "
                                        "critiqued", callback=non_negative),
    critiques: str = typer.Option(None, help="JSONL of {prompt, completion} critique examples (prompt = problem and "
                                             "solution, completion = critique) instead of the organism's generator"),
    samples: int = typer.Option(256, help="solutions sampled from the model for the one problem", callback=positive),
    max_solutions: int = typer.Option(64, "--max-solutions", help="distinct wrong solutions kept",
                                      callback=positive),
    epochs: int = typer.Option(4, callback=positive),
    lr: float = typer.Option(5e-4, "--lr", callback=positive_float),
    batch_size: int = typer.Option(16, "--batch-size", callback=positive),
    eval_n: int = typer.Option(200, "--eval-n", help="organism held-out problems measured before and after "
                                                    "(0: no evaluation)", callback=non_negative),
    max_new_tokens: int = typer.Option(220, "--max-new-tokens", callback=positive),
    seed: int = typer.Option(0, callback=non_negative),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a model folder lens wrote at --out"),
    template: str = typer.Option(None, "--template", help=TEMPLATE_HELP + " (each --critiques prompt)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """One-problem critique fine-tuning (TRL SFT on critiques of varied wrong solutions of one problem)."""
    import sys

    from ..errors import LensError
    from ..outputs import check_output, writer_lock
    from ..rl import organism_train_problems
    from ..rl.cft import CFTConfig, organism_critiques, organism_scores, read_critiques, train_cft
    from .common import load

    check_output(out, "model", overwrite=overwrite)
    examples = read_critiques(critiques) if critiques else None
    if template is not None and examples is None:
        raise LensError("--template applies to the prompts of --critiques; the organism's critiques are built in its "
                        "own format")
    m = load(ctx, model)
    if m.tokenizer is None:
        raise LensError(f"{model} has no tokenizer: critique fine-tuning needs one saved with the model")
    if template is not None:
        examples = list(templated(examples, template, m))
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if as_json else (lambda msg: console.print(msg))
    one = None
    if examples is None:
        one = organism_train_problems(problem + 1)[problem]
        examples = organism_critiques(m, one, n_samples=samples, max_solutions=max_solutions, seed=seed,
                                      max_new_tokens=max_new_tokens)
        say(f"{len(examples)} distinct wrong solutions of {one['prompt'].strip()} critiqued")
    held = []
    if eval_n and model.startswith("organism:"):
        from ..organism import load_heldout

        held = load_heldout()[:eval_n]
    before = organism_scores(m, held, max_new_tokens) if held else None
    with writer_lock(out, "model"):
        folder = train_cft(m, examples, out, CFTConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed),
                           log=say)
    after = None
    if held:
        from ..models import load_model

        after = organism_scores(load_model(str(folder)), held, max_new_tokens)
    result = {"model": model, "out": str(folder), "problem": one, "n_examples": len(examples),
              "before": before, "after": after}
    if as_json:
        emit_json(result)
        return
    if before and after:
        rows = [{"": k, "before": f"{before[k]:.1%}", "after": f"{after[k]:.1%}"}
                for k in ("greedy_accuracy", "thinking_rate", "forced_thinking_accuracy")]
        rows += [{"": f"forced {k} share", "before": f"{before['forced_shares'][k] or 0:.1%}",
                  "after": f"{after['forced_shares'][k] or 0:.1%}"} for k in ("verification", "backtrack")]
        console.print(table(f"lens rl cft: {model}, {len(examples)} critiques", rows))
    console.print(f"fine-tuned model: {folder}")
