"""Finding 3 with real RL on a model pair's base and a control: 1-shot RLVR, full-set RLVR and the
spurious rewards (format, random, incorrect label), each through ``lens.rl.train_rl`` (TRL's GRPO), and
one-problem critique fine-tuning on the 1-shot problem (``cft``, TRL's SFT; `cft_run`).

For each model: the untrained held-out numbers; for each experiment the run's curves (held-out greedy
accuracy, training accuracy and thinking-format rate vs step) and its lift; pass@k at k = 1..``pass_k``
before and after 1-shot RLVR; given a contrast, where each run's final checkpoint differs from its start
(`lens diff`'s per-layer weight change and activation shift, with the shift's cosine to the start model's
reasoning direction); and the targets checked on the numbers. Runs live in
``out/<model>/<experiment>/`` (``lens rl`` folders), so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ..errors import LensError
from ..rl import RLConfig, accuracy_history, evaluate_policy, majority_wrong_labels, one_shot_by_variance, train_rl
from ..rl.data import organism_train_problems

#: name -> (reward, data regime); ``one_shot`` takes the problem whose accuracy varied most in ``full``
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "full": ("correct", "full"),
    "one_shot": ("correct", "one"),
    "format": ("format", "full"),
    "random": ("random", "full"),
    "incorrect": ("incorrect", "full"),
}
#: one-problem critique fine-tuning (TRL's SFTTrainer, `lens.rl.cft`) on the 1-shot problem, with critiques of the
#: first model's own wrong solutions (the same critiques for every model)
CFT = "cft"
PAPERS = {
    "one_shot": "1-shot RLVR: Qwen2.5-Math-1.5B MATH500 36.0 -> 73.6 (arXiv 2504.20571)",
    "spurious": "random / format / incorrect rewards: +16 to +25 points on Qwen2.5-Math, ~0 on Llama and OLMo "
                "(arXiv 2506.10947)",
    "pass_k": "RLVR narrows what the base reaches at large k (Yue et al., arXiv 2504.13837)",
    "cft": "critique fine-tuning on one problem matches 1-shot RLVR: Qwen2.5-Math-7B +15 points on six math "
           "benchmarks (arXiv 2506.03295)",
}


def incorrect_labelled(model: Any, problems: Sequence[dict], samples: int = 8, seed: int = 0,
                       max_new_tokens: int = 120) -> list[dict]:
    """``problems`` with the model's own majority-vote answer as ``incorrect_answer``, kept where it is wrong."""
    from ..decoding import generate
    from ..evaluation.answers import extract_answer

    gen = generate(model, [p["prompt"] for p in problems], max_new_tokens, greedy=False, n=samples, seed=seed)
    answers = [[extract_answer(t) for t in row] for row in gen.texts()]
    return majority_wrong_labels(answers, problems)


def run_rl_study(models: Mapping[str, Any], out: str | Path, *, heldout: Sequence[dict],
                 train: Sequence[dict] | None = None, experiments: Sequence[str] = (*EXPERIMENTS, CFT),
                 cfg: RLConfig | None = None, pass_k: int = 256, pass_k_n: int = 40,
                 contrast: tuple[Sequence[str], Sequence[str]] | None = None,
                 say: Callable[[str], None] = print) -> dict:
    """Every experiment on every model (name -> spec or ``lens.Model``); returns the study's numbers.

    contrast: (reasoning prompts, direct prompts) for the start model's own reasoning direction; when given,
    every finished run's final checkpoint is compared with its start (`checkpoint_diffs`: per-layer weight
    change, and the activation shift on held-out prompts with its cosine to that direction), stored as
    ``models[name]["diffs"][experiment]`` (with the start model's direction AUROC per layer as
    ``models[name]["direction"]``; the prompt counts as ``diff_prompts``).
    """
    from ..models import Model, load_model

    bad = [e for e in experiments if e not in EXPERIMENTS and e != CFT]
    if bad:
        raise LensError(f"unknown RL experiment(s) {bad}: choose from {', '.join([*EXPERIMENTS, CFT])}")
    cfg = cfg or RLConfig()
    train = list(train) if train is not None else organism_train_problems(64)
    out = Path(out)
    res: dict = {"config": asdict(cfg), "experiments": list(experiments), "n_train": len(train),
                 "n_heldout": min(len(heldout), cfg.eval_n), "pass_k": pass_k, "pass_k_n": pass_k_n,
                 "models": {}, "papers": PAPERS}
    neutral = [p["prompt"] for p in heldout[:64]]
    if contrast is not None:
        res["diff_prompts"] = {"reasoning": len(contrast[0]), "direct": len(contrast[1]), "neutral": len(neutral)}
    critiques: dict = {}  # the first model's 1-shot problem and critique examples, reused for every model
    for name, spec in models.items():
        m = spec if isinstance(spec, Model) else load_model(spec)
        row: dict = {"spec": m.spec, "runs": {}}
        runs: dict[str, dict] = {}
        for exp in experiments:
            reward, regime = EXPERIMENTS.get(exp, ("critique", "one"))
            problems = list(train)
            if regime == "one":
                hist = accuracy_history(runs["full"]) if "full" in runs else {}
                pid = one_shot_by_variance(hist, problems)[0] if hist else problems[0]["id"]
                problems = [next(p for p in problems if p["id"] == pid)]
            if exp == CFT:
                problem = critiques.get("problem", problems[0])  # the first model's 1-shot problem, for every model
                say(f"== rl {name}: one-problem critique fine-tuning ({problem['id']})")
                start = next((r["evals"][0] for r in runs.values() if r.get("evals") and r["evals"][0]["step"] == 0),
                             None)  # every run starts from m: a GRPO run's step-0 evaluation is CFT's "before"
                log = cft_run(m, problem, heldout, cfg, out / name / exp, critiques, before=start, say=say)
                if log.get("status") == "skipped":
                    row["runs"][exp] = log
                    continue
                runs[exp] = log
                row["runs"][exp] = summary(log)
                continue
            if reward == "incorrect":
                problems = incorrect_labelled(m, problems, seed=cfg.seed)
                if not problems:
                    row["runs"][exp] = {"status": "skipped", "reason": "the model's majority vote is right everywhere"}
                    continue
            say(f"== rl {name}: {exp} ({reward} reward, {len(problems)} problem(s), {cfg.steps} steps)")
            log = train_rl(m, problems, heldout, reward, cfg, out / name / exp, say=say)
            runs[exp] = log
            row["runs"][exp] = summary(log)
        if contrast is not None:
            row.update(checkpoint_diffs(m, runs, contrast, neutral, seed=cfg.seed,
                                        say=lambda msg, name=name: say(f"== rl {name}: {msg}")))
        if "one_shot" in runs and pass_k > 0:
            say(f"== rl {name}: pass@k to {pass_k}, before and after 1-shot RLVR")
            trained = load_model(runs["one_shot"]["final"])
            kw = {"samples": pass_k, "seed": cfg.seed, "max_new_tokens": cfg.max_completion_length}
            row["pass_at_k"] = {"before": evaluate_policy(m, heldout[:pass_k_n], **kw)["pass_at_k"],
                                "after": evaluate_policy(trained, heldout[:pass_k_n], **kw)["pass_at_k"]}
        res["models"][name] = row
    res["targets"] = targets(res)
    return res


def cft_run(m: Any, problem: dict, heldout: Sequence[dict], cfg: RLConfig, out: Path, critiques: dict, *,
            samples: int = 256, max_critiques: int = 64, before: dict | None = None,
            say: Callable[[str], None] = print) -> dict:
    """One-problem CFT of ``m`` as a run log `summary` reads: held-out evaluations before (step 0) and after
    (step = SFT steps), the trained folder ``out/model`` (`lens.rl.cft.train_cft`; reused when complete).

    critiques: filled by the first call (``problem`` and its ``examples``: ``m``'s distinct wrong thinking
    solutions of it, ``samples`` at T=1, at most ``max_critiques``, each with the organism's critique, or why there
    are none); later calls (other models) must give the same problem and train on the same examples. Skipped
    (with the reason) when no wrong solution is found. before: ``m``'s held-out evaluation at these settings when
    one was made already (a GRPO run's step 0), else it is made here.
    """
    from ..models import load_model
    from ..rl.cft import CFTConfig, organism_critiques, train_cft

    if "examples" not in critiques:
        critiques["problem"] = problem
        try:
            critiques["examples"] = organism_critiques(m, problem, n_samples=samples, max_solutions=max_critiques,
                                                       seed=cfg.seed,
                                                       max_new_tokens=max(cfg.max_completion_length, 220))
        except LensError as e:
            critiques["examples"] = str(e)
    if critiques["problem"]["id"] != problem["id"]:
        raise LensError(f"the critiques are of {critiques['problem']['id']}, not of {problem['id']}")
    examples = critiques["examples"]
    if isinstance(examples, str):
        return {"status": "skipped", "reason": examples}
    ccfg = CFTConfig(seed=cfg.seed)
    folder = out / "model"
    kw = {"samples": cfg.eval_samples, "max_new_tokens": cfg.max_completion_length, "seed": cfg.seed}
    t0 = time.time()
    before = before or evaluate_policy(m, heldout[: cfg.eval_n], **kw)
    if (folder / "training.json").is_file():  # in the atomic folder: a finished run, reused if it is this one
        info = json.loads((folder / "training.json").read_text())
        mine = {"fingerprint": m.fingerprint, "n_examples": len(examples), "example": examples[0],
                "recipe": asdict(ccfg)}
        if any(info.get(k) != v for k, v in mine.items()):
            raise LensError(f"{folder} holds a CFT model trained from another model or on other critiques; delete it "
                            "or choose another output folder")
    else:
        out.mkdir(parents=True, exist_ok=True)
        train_cft(m, examples, folder, ccfg, log=say)
        info = json.loads((folder / "training.json").read_text())
    steps = ccfg.epochs * math.ceil(len(examples) / ccfg.batch_size)
    trained = load_model(str(folder), device=m.device, dtype=m.dtype)  # measured where and as the start model was
    after = evaluate_policy(trained, heldout[: cfg.eval_n], **kw)
    return {"status": "done", "final": str(folder), "train_seconds": info.get("seconds"),
            "meta": {"reward": "critique (SFT)", "n_problems": 1, "problems": [problem["id"]]},
            "evals": [{**before, "step": 0, "train_accuracy": None}, {**after, "step": steps, "train_accuracy": None}],
            "n_critiques": len(examples), "loss": [info.get("first_loss"), info.get("last_loss")],
            "seconds": round(time.time() - t0, 1)}


def checkpoint_diffs(start: Any, runs: Mapping[str, dict], contrast: tuple[Sequence[str], Sequence[str]],
                     neutral: Sequence[str], *, seed: int = 0, say: Callable[[str], None] = print) -> dict:
    """`lens diff` of every finished run's final checkpoint against ``start``, the model it trained from.

    Returns ``{"diffs": {experiment: {"weights", "activations"}}, "direction": separability}``: per layer
    group the relative weight change and the fraction of parameters changed; per layer the mean activation
    shift on ``neutral`` prompts, its size relative to the residual and its cosine with the start model's
    reasoning direction (mean over ``contrast[0]`` minus mean over ``contrast[1]``), whose held-out AUROC
    per layer is ``direction``. Runs that did not finish have no entry. Empty when no run finished.
    """
    from ..models import load_model
    from . import diff_study

    diffs: dict[str, dict] = {}
    direction = None
    for exp, log in runs.items():
        if log.get("status") != "done" or not log.get("final"):
            continue
        say(f"where {exp} changed the model (weights, activations along the start model's reasoning direction)")
        d = diff_study.run(start, load_model(log["final"]), contrast[0], contrast[1], neutral, seed=seed)
        diffs[exp] = {"weights": d["weights"], "activations": d["activations"]}
        direction = d["separability"]
    return {"diffs": diffs, "direction": direction} if diffs else {}


def summary(log: dict) -> dict:
    """One run: its problems, the held-out curve, the lift, and whether accuracy kept rising after the
    training problems were always solved (post-saturation)."""
    ev = log["evals"]
    first, last = ev[0], ev[-1]
    curve = [{"step": e["step"], "heldout_accuracy": e["heldout_accuracy"], "train_accuracy": e.get("train_accuracy"),
              "thinking_rate": e["thinking_rate"], "mean_tokens": e["mean_tokens"],
              "pass_at_1": (e.get("pass_at_k") or {}).get("1")} for e in ev]
    sat = next((e["step"] for e in ev if (e.get("train_accuracy") or 0) >= 0.99), None)
    after_sat = [e["heldout_accuracy"] for e in ev if sat is not None and e["step"] >= sat]
    return {"status": log["status"], "reward": log["meta"]["reward"], "n_problems": log["meta"]["n_problems"],
            "problems": log["meta"]["problems"], "before": first["heldout_accuracy"], "after": last["heldout_accuracy"],
            "lift": last["heldout_accuracy"] - first["heldout_accuracy"],
            "thinking_before": first["thinking_rate"], "thinking_after": last["thinking_rate"],
            "saturated_at": sat, "gain_after_saturation": (after_sat[-1] - after_sat[0]) if after_sat else None,
            "train_seconds": log.get("train_seconds"), "curve": curve, "folder": log.get("final"),
            **{k: log[k] for k in ("n_critiques", "loss") if k in log}}


def targets(res: dict) -> list[dict]:
    """The targets on the organism (the papers' claims), each with the measured value and whether it holds."""
    ms = res["models"]

    def lift(model: str, exp: str) -> float | None:
        r = ms.get(model, {}).get("runs", {}).get(exp, {})
        return r.get("lift")

    rows = []
    if lift("base", "one_shot") is not None:
        rows.append({"target": "1-shot RLVR lifts the base by >= 30 points", "value": lift("base", "one_shot"),
                     "ok": lift("base", "one_shot") >= 0.30})
    if lift("control", "one_shot") is not None:
        rows.append({"target": "1-shot RLVR lifts the control by <= 5 points", "value": lift("control", "one_shot"),
                     "ok": lift("control", "one_shot") <= 0.05})
    spurious = [e for e in ("format", "random", "incorrect") if lift("base", e) is not None]
    if spurious:
        best = max(spurious, key=lambda e: lift("base", e))
        rows.append({"target": "a spurious reward lifts the base by >= 15 points", "reward": best,
                     "value": lift("base", best), "ok": lift("base", best) >= 0.15})
        if lift("control", best) is not None:
            rows.append({"target": "the same reward lifts the control by <= 5 points", "reward": best,
                         "value": lift("control", best), "ok": lift("control", best) <= 0.05})
    pk = ms.get("base", {}).get("pass_at_k")
    if pk:
        k = str(max(int(x) for x in pk["before"]))
        d = pk["after"][k] - pk["before"][k]
        rows.append({"target": f"the trained base's pass@{k} within 5 points of the untrained base's", "value": d,
                     "ok": abs(d) <= 0.05})
    return rows


def quick_config(cfg: RLConfig | None = None, **kw: Any) -> RLConfig:
    """The short settings `lens reproduce` uses (60 steps, evaluations every 20 on 100 problems)."""
    return replace(cfg or RLConfig(), **{"steps": 60, "eval_every": 20, "eval_n": 100, "eval_samples": 4, **kw})
