"""One-problem critique fine-tuning (CFT): supervised training on critiques of varied wrong solutions of one problem.

As in "Unleashing the Reasoning Potential of Pre-trained LLMs by Critique Fine-Tuning on One Problem": the
input is the problem with one candidate solution, the target is a critique of that solution (which step is
wrong, the correction, the right answer); solutions are the model's own varied samples, critiques come from
a teacher. Training is TRL's ``SFTTrainer`` on prompt-completion pairs, loss on the critique only.

On the verifier organism the teacher is the corpus generator (:func:`lens.organism.verifier_corpus.critique`),
whose review format the base saw in pretraining at a low rate; for a real model, critiques are supplied
as a JSONL file of ``{"prompt", "completion"}`` records (prompt = problem + solution, completion = critique).
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import LensError


@dataclass(frozen=True)
class CFTConfig:
    """Recipe of one-problem critique fine-tuning."""

    epochs: int = 4
    lr: float = 5e-4
    batch_size: int = 16
    seed: int = 0
    max_length: int = 512


def organism_critiques(model: Any, problem: dict, n_samples: int = 256, max_solutions: int = 64, seed: int = 0,
                       temperature: float = 1.0, max_new_tokens: int = 220) -> list[dict]:
    """Critique examples for ONE organism problem: the distinct wrong thinking solutions ``model`` samples for it
    (forced into its thinking format, T=``temperature``), each paired with the generator's critique.

    model: a ``lens.Model`` of the organism (its samples are the varied solutions). ``problem``: a record with
    ``prompt``, ``answer`` and ``expression``. Returns at most ``max_solutions`` ``{"prompt", "completion"}``
    records, in the order first sampled.
    """
    from ..decoding import generate
    from ..organism import corpus as C
    from ..organism import verifier_corpus as V

    parsed = C.parse_prompt(problem["prompt"])
    if parsed is None:
        raise LensError(f"{problem['prompt']!r} is not an organism prompt (Q:a+b+...=?)")
    prompt = problem["prompt"]
    gen = generate(model, [prompt + C.THINK_OPEN], max_new_tokens, greedy=False, temperature=temperature,
                   n=n_samples, seed=seed)
    seen: set[str] = set()
    out: list[dict] = []
    for text in gen.texts()[0]:
        solution = C.THINK_OPEN + text
        if C.THINK_CLOSE not in solution:
            continue
        solution = solution[: solution.index(C.THINK_CLOSE) + len(C.THINK_CLOSE)]
        value = V.trace_value(prompt + solution)
        if value is None or value == parsed.answer or solution in seen:
            continue
        seen.add(solution)
        full = f"{prompt}{solution}A:{value}"
        out.append({"prompt": full + "\n", "completion": V.critique(full, parsed)})
        if len(out) >= max_solutions:
            break
    if not out:
        raise LensError(f"the model produced no wrong solution of {parsed.expression} in {n_samples} samples; "
                        "pick a harder problem or sample more")
    return out


def read_critiques(path: str | Path) -> list[dict]:
    """``{"prompt", "completion"}`` records from a JSONL file (one critique example per line)."""
    rows = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LensError(f"cannot read critiques {path}: {e}") from None
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise LensError(f"{path}:{n} is not valid JSON ({e.msg})") from None
    bad = [i for i, r in enumerate(rows) if not (isinstance(r, dict) and isinstance(r.get("prompt"), str)
                                                 and isinstance(r.get("completion"), str))]
    if bad:
        raise LensError(f"{path}: line {bad[0] + 1} is not a {{\"prompt\": str, \"completion\": str}} record")
    return rows


def train_cft(model: Any, examples: Sequence[dict], out: str | Path, cfg: CFTConfig | None = None,
              log: Any = None) -> Path:
    """Fine-tune a copy of ``model`` (a ``lens.Model``) on critique ``examples`` with TRL's SFTTrainer; the result is
    written as an ordinary HF folder ``out`` (atomically, with ``training.json``: recipe, examples, loss) and returned.
    """
    import datasets
    import torch
    from trl import SFTConfig, SFTTrainer

    from ..outputs import atomic_folder, check_output
    from .grpo import plain_weights

    cfg = cfg or CFTConfig()
    if not examples:
        raise LensError("no critique examples to train on")
    out = Path(out)
    check_output(out, "model", overwrite=True)  # a plain file, another artifact or a user's folder is refused
    say = log or (lambda *_: None)
    hf = plain_weights(copy.deepcopy(model.hf))
    tok = model.tokenizer
    cuda = next(hf.parameters()).is_cuda
    t0 = time.time()
    with atomic_folder(out, "model") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TRL's defaults and calls use options transformers renamed
        args = SFTConfig(
            output_dir=str(tmp / ".trainer"), num_train_epochs=cfg.epochs, learning_rate=cfg.lr,
            per_device_train_batch_size=cfg.batch_size, lr_scheduler_type="cosine",
            weight_decay=0.0, logging_steps=1, save_strategy="no", report_to=[], seed=cfg.seed,
            data_seed=cfg.seed, use_cpu=not cuda, bf16=False, max_length=cfg.max_length,
            completion_only_loss=True, dataloader_num_workers=0, disable_tqdm=True,
        )
        from transformers.trainer_callback import PrinterCallback
        from transformers.utils import logging as hf_logging

        data = datasets.Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])
        bars = hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # "Writing model shards", the dataset's preparation bars
        datasets.disable_progress_bars()
        try:
            trainer = SFTTrainer(model=hf, args=args, train_dataset=data, processing_class=tok)
            trainer.remove_callback(PrinterCallback)  # its per-step dicts would go to stdout (lens prints the losses)
            with torch.enable_grad():
                trainer.train()
            trainer.model.save_pretrained(str(tmp))
        finally:
            if bars[0]:
                hf_logging.enable_progress_bar()
            if bars[1]:
                datasets.enable_progress_bars()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        tok.save_pretrained(str(tmp))
        import shutil

        shutil.rmtree(tmp / ".trainer", ignore_errors=True)
        info = {"name": "cft", "method": "one-problem critique fine-tuning (TRL SFTTrainer, loss on the critique)",
                "model": model.spec, "fingerprint": model.fingerprint, "recipe": asdict(cfg),
                "n_examples": len(examples), "first_loss": losses[0] if losses else None,
                "last_loss": losses[-1] if losses else None, "seconds": round(time.time() - t0, 1),
                "example": examples[0]}
        (tmp / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    say(f"CFT: {len(examples)} critiques, loss {info['first_loss']} -> {info['last_loss']}, {info['seconds']} s")
    return out


def organism_scores(model: Any, heldout: Sequence[dict], max_new_tokens: int = 220, batch_size: int = 64) -> dict:
    """Greedy held-out accuracy and thinking rate, accuracy forced into the thinking format, and the behaviour
    shares of the forced traces and of the greedy completions that think (``lens.organism.behaviours.trace_stats``:
    ``*_shares`` are fractions of steps, ``*_traces_with`` fractions of traces holding a step of each kind) of an
    organism ``model`` (``lens.Model``).
    """
    from ..decoding import generate
    from ..organism import corpus as C
    from ..organism.behaviours import trace_stats

    prompts = [r["prompt"] for r in heldout]
    answers = [int(r["answer"]) for r in heldout]
    plain = [row[0] for row in generate(model, prompts, max_new_tokens, batch_size=batch_size).texts()]
    forced = [C.THINK_OPEN + row[0] for row in generate(model, [p + C.THINK_OPEN for p in prompts], max_new_tokens,
                                                        batch_size=batch_size).texts()]

    def acc(texts: list[str]) -> float:
        return sum(C.parse_answer(t) == a for t, a in zip(texts, answers, strict=True)) / max(1, len(texts))

    stats, greedy = trace_stats(forced), trace_stats(plain)
    return {"n": len(prompts), "greedy_accuracy": acc(plain),
            "thinking_rate": sum(map(C.is_thinking, plain)) / max(1, len(plain)),
            "forced_thinking_accuracy": acc(forced), "forced_shares": stats["share"],
            "forced_traces_with": stats["traces_with"],
            "forced_checks_right": stats["checks_right"],
            "forced_backtracks_after_error": stats["backtracks_after_error"],
            "greedy_traces": greedy["n_traces"], "greedy_shares": greedy["share"],
            "greedy_traces_with": greedy["traces_with"]}
