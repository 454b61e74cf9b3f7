"""RL with verifiable rewards through TRL's ``GRPOTrainer``, driven by lens.

``train_rl(model, problems, heldout, reward, cfg, out)`` trains with GRPO (TRL's loop: lens adds no
policy-gradient code), logs held-out greedy accuracy, pass@k, thinking-format rate and response length
every ``cfg.eval_every`` steps to ``out/rl_log.json``, keeps Trainer checkpoints (``out/checkpoint-N``:
ordinary HF model folders with the tokenizer, plus optimizer and RNG state; with LoRA the adapter and its
base's spec, which ``lens.load_model`` merges) and writes the trained model to ``out/final``. Run again with
the same arguments it resumes from the last checkpoint (the log is cut back to that step and rewritten from
there); a finished run is returned as it is.
"""

from __future__ import annotations

import copy
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..artifacts import write_json
from ..errors import LensError, check_number
from ..evaluation.behaviours import ThinkingFormat
from ..models import ADAPTER_BASE_FILE
from .evaluate import evaluate_policy
from .log import cut_to, differences, ids_hash, new_log, read_log, write_log
from .rewards import RewardContext, correct, get_reward


@dataclass
class RLConfig:
    """GRPO settings (names follow TRL's ``GRPOConfig`` where one exists) and lens's bookkeeping."""

    steps: int = 60
    learning_rate: float = 3e-5
    num_generations: int = 8  # completions per prompt: GRPO's group
    prompts_per_step: int = 2  # batch = prompts_per_step * num_generations completions
    max_completion_length: int = 120
    temperature: float = 1.0
    beta: float = 0.0  # KL coefficient against the reference model (TRL's default)
    epsilon: float = 0.2  # clipping range of the importance ratio
    num_iterations: int = 1  # optimisation passes over each batch of generations (>1: clipping acts)
    entropy_coef: float = 0.0
    loss_type: str = "dapo"  # TRL's default
    scale_rewards: str = "group"
    lr_scheduler_type: str = "constant"
    seed: int = 0
    eval_every: int = 10
    eval_n: int = 100  # held-out problems measured
    eval_samples: int = 8  # samples per problem for pass@k
    save_every: int = 0  # 0: every eval_every steps
    keep_checkpoints: int = 2
    lora_r: int = 0  # > 0: train a LoRA adapter (PEFT) of this rank; out/final is the merged model
    lora_alpha: int = 16

    def check(self) -> None:
        for name in ("steps", "num_generations", "prompts_per_step", "max_completion_length", "eval_every",
                     "num_iterations"):
            check_number(name.replace("_", "-"), getattr(self, name), 1, integer=True)
        check_number("learning-rate", self.learning_rate, 0, lo_open=True)
        if self.num_generations < 2:
            raise LensError("num-generations must be >= 2: GRPO's advantage compares completions of one prompt")


def _problem_columns(problems: Sequence[dict]) -> list[str]:
    return sorted({k for p in problems for k in p if k != "prompt"})


class TrlReward:
    """A lens reward as TRL calls it (batch of completions, dataset columns as lists, ``trainer_state``);
    records the correctness of every completion per problem and step for the log."""

    def __init__(self, name: str, fn: Callable, columns: list[str], *, extractor: str = "auto",
                 fmt: ThinkingFormat | None = None, seed: int = 0) -> None:
        self.__name__ = name
        self.fn, self.columns, self.extractor, self.seed = fn, columns, extractor, seed
        self.fmt = fmt or ThinkingFormat()
        self.correct: dict[int, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        self.rewards: dict[int, list[float]] = defaultdict(list)
        self.lengths: dict[int, list[int]] = defaultdict(list)
        self.thinking: dict[int, list[bool]] = defaultdict(list)

    def __call__(self, prompts: list, completions: list, completion_ids: Any = None, trainer_state: Any = None,
                 **cols: Any) -> list[float]:
        step = int(trainer_state.global_step) if trainer_state is not None else 0
        out = []
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            row = {k: cols[k][i] for k in self.columns if k in cols}
            ctx = RewardContext(self.extractor, self.fmt, self.seed, step, i, self.fmt.opened_by(p))
            out.append(float(self.fn(c, row, ctx)))
            self.correct[step][str(row.get("id", i))].append(bool(correct(c, row, ctx)))
            self.thinking[step].append(self.fmt.in_format(c, ctx.prefilled))
            if completion_ids is not None:
                self.lengths[step].append(len(completion_ids[i]))
        self.rewards[step].extend(out)
        return out


def adapter_base(m: Any, cfg: RLConfig) -> dict | None:
    """What a LoRA checkpoint records of its base (`ADAPTER_BASE_FILE`): a spec `load_model` can load from any
    working directory, the weights fingerprint and dtype; None without LoRA or for a model built in Python."""
    if cfg.lora_r <= 0 or m.source == "object":
        return None
    spec = str(Path(m.spec).expanduser().resolve()) if m.source in ("folder", "gguf") else m.spec
    return {"base": spec, "fingerprint": m.fingerprint, "dtype": str(m.dtype).replace("torch.", "")}


def _callback(log: dict, out: Path, reward: TrlReward, model_of: Callable[[], Any], heldout: list[dict],
              cfg: RLConfig, extractor: str, say: Callable[[str], None], base_record: dict | None = None):
    from transformers import TrainerCallback

    class LogCallback(TrainerCallback):
        """Held-out evaluation every ``eval_every`` steps and the per-step training record."""

        def _eval(self, state) -> None:
            t = time.time()
            got = evaluate_policy(model_of(), heldout, samples=cfg.eval_samples,
                                  max_new_tokens=cfg.max_completion_length, seed=cfg.seed, extractor=extractor)
            done = [r for r in log["train"] if r["step"] <= state.global_step]
            recent = done[-cfg.eval_every:]
            got["train_accuracy"] = (sum(r["train_accuracy"] for r in recent) / len(recent)) if recent else None
            got["train_reward"] = (sum(r["reward"] for r in recent) / len(recent)) if recent else None
            got.update(step=state.global_step, seconds=round(time.time() - t, 2))
            log["evals"].append(got)
            if state.is_world_process_zero:
                write_log(out, log)
            p1 = got.get("pass_at_k", {}).get("1")
            say(f"step {state.global_step:>5}: held-out acc {got['heldout_accuracy']:.1%}, thinking "
                f"{got['thinking_rate']:.1%}, {got['mean_tokens']:.0f} tokens"
                + (f", pass@1 {p1:.1%}" if p1 is not None else "")
                + (f", train acc {got['train_accuracy']:.1%}" if got["train_accuracy"] is not None else ""))

        def on_train_begin(self, args, state, control, **kw):
            if not any(e["step"] == state.global_step for e in log["evals"]):
                self._eval(state)

        def on_step_end(self, args, state, control, **kw):
            step = state.global_step
            gen_step = step - 1  # rewards were computed when the step began
            by = reward.correct.pop(gen_step, {})
            rs = reward.rewards.pop(gen_step, [])
            n = sum(len(v) for v in by.values())
            lengths, thinking = reward.lengths.pop(gen_step, []), reward.thinking.pop(gen_step, [])
            log["train"].append({"step": step, "reward": sum(rs) / max(len(rs), 1),
                                 "train_accuracy": sum(sum(v) for v in by.values()) / max(n, 1),
                                 "thinking_rate": sum(thinking) / max(len(thinking), 1),
                                 "mean_tokens": sum(lengths) / max(len(lengths), 1)})
            for pid, v in by.items():
                log["train_accuracy_by_problem"].setdefault(pid, []).append([step, sum(v) / len(v)])
            if step % cfg.eval_every == 0 or step == cfg.steps:
                self._eval(state)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and log["train"] and log["train"][-1]["step"] == state.global_step:
                keep = ("loss", "grad_norm", "clip_ratio/region_mean")  # TRL's; the rest is lens's own
                log["train"][-1].update({k: float(v) for k, v in logs.items() if k in keep})

        def on_save(self, args, state, control, **kw):
            if state.is_world_process_zero:
                log["checkpoint"] = state.global_step  # the log now matches this checkpoint: a resume may start here
                write_log(out, log)
                ckpt = out / f"checkpoint-{state.global_step}"
                if base_record is not None and (ckpt / "adapter_config.json").is_file():  # load_model merges it
                    write_json(ckpt / ADAPTER_BASE_FILE, base_record)  # into this base

    return LogCallback()


def grpo_args(cfg: RLConfig, out: Path) -> Any:
    """TRL's ``GRPOConfig`` for ``cfg`` (CPU unless a GPU is visible; no reporting; checkpoints in ``out``)."""
    import warnings

    import torch
    from trl import GRPOConfig

    save = cfg.save_every or cfg.eval_every
    with warnings.catch_warnings():  # TRL's own defaults name options transformers has deprecated
        warnings.simplefilter("ignore", FutureWarning)
        return _grpo_config(GRPOConfig, cfg, out, save, torch.cuda.is_available())


def _grpo_config(GRPOConfig: Any, cfg: RLConfig, out: Path, save: int, cuda: bool) -> Any:
    return GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations,
        num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
        learning_rate=cfg.learning_rate, max_steps=cfg.steps, lr_scheduler_type=cfg.lr_scheduler_type,
        temperature=cfg.temperature, top_k=0, top_p=1.0, beta=cfg.beta, epsilon=cfg.epsilon,
        num_iterations=cfg.num_iterations, entropy_coef=cfg.entropy_coef, loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards, seed=cfg.seed, data_seed=cfg.seed, logging_steps=1, report_to=[],
        save_strategy="steps", save_steps=save, save_total_limit=cfg.keep_checkpoints, disable_tqdm=True,
        use_cpu=not cuda, bf16=False, dataloader_num_workers=0, log_completions=False,
    )


def _checkpoints(out: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the Trainer checkpoints a run wrote in ``out`` (``checkpoint-N`` with its trainer state)."""
    return sorted((int(p.name[len("checkpoint-"):]), p) for p in out.glob("checkpoint-*")
                  if p.name[len("checkpoint-"):].isdigit() and (p / "trainer_state.json").is_file())


def _last_checkpoint(out: Path, upto: int) -> Path | None:
    """The newest checkpoint at or before step ``upto`` (the last one whose log was written: a later folder may be
    half-written, or hold a step whose records never reached the log)."""
    found = [(step, p) for step, p in _checkpoints(out) if step <= upto]
    return found[-1][1] if found else None


def train_rl(model: Any, problems: Sequence[dict], heldout: Sequence[dict], reward: str | Callable = "correct",
             cfg: RLConfig | None = None, out: str | Path = "rl-run", *, extractor: str = "auto",
             overwrite: bool = False, callbacks: Sequence[Any] = (), say: Callable[[str], None] = print) -> dict:
    """Train ``model`` (a spec or a ``lens.Model``; never changed in place) with GRPO on ``problems``.

    problems / heldout: dicts with ``prompt`` and ``answer`` (and ``id``; ``incorrect_answer`` for the
    incorrect-label reward). Returns the log (also in ``out/rl_log.json``); the trained model is
    ``out/final``, loadable with ``lens.load_model``.
    """
    from ..models import Model, load_model
    from ..outputs import check_output

    cfg = cfg or RLConfig()
    cfg.check()
    if not problems:
        raise LensError("no training problems")
    if not heldout:
        raise LensError("no held-out problems to measure on")
    for i, p in enumerate([*problems, *heldout]):
        if "prompt" not in p or p.get("answer") in (None, ""):
            raise LensError(f"problem {p.get('id', i)} needs a prompt and an answer: RL with a verifiable reward "
                            "checks every completion against a reference")
    name, fn = get_reward(reward)
    out = Path(out)
    exists = check_output(out, "rl", overwrite=overwrite, resumable=True)
    m = model if isinstance(model, Model) else load_model(model)
    if m.tokenizer is None:
        raise LensError(f"{m.spec} has no tokenizer: RL generates text and needs one saved with the model")
    heldout = [dict(h, id=h.get("id", f"heldout-{i}")) for i, h in enumerate(heldout)][: cfg.eval_n]
    problems = [dict(p, id=p.get("id", f"train-{i}")) for i, p in enumerate(problems)]
    meta = {"model": m.spec, "fingerprint": m.fingerprint, "reward": name, "extractor": extractor,
            "problems": [p["id"] for p in problems][:16], "n_problems": len(problems),
            "problems_hash": ids_hash(problems), "heldout_hash": ids_hash(heldout), "config": asdict(cfg)}
    log = read_log(out) if exists else None
    resume = None
    if log is not None and not overwrite:
        diff = differences(log["meta"], meta)
        if diff:
            raise LensError(f"{out} holds an RL run with other settings ({'; '.join(diff[:3])}); pass --overwrite "
                            "to start again there or choose another --out")
        if log["status"] == "done":
            say(f"{out}: this run is complete ({cfg.steps} steps); nothing to do")
            return log
        resume = _last_checkpoint(out, int(log.get("checkpoint") or 0))
        log = cut_to(log, int(resume.name.split("-")[1])) if resume else new_log(meta)
        if resume:
            say(f"resuming {out} from {resume.name}")
    else:
        if overwrite and log is not None:  # a lens RL run (check_output): its own checkpoints go, nothing else
            for _, p in _checkpoints(out):
                shutil.rmtree(p)
        log = new_log(meta)
    out.mkdir(parents=True, exist_ok=True)
    write_log(out, log)
    return _run(m, problems, heldout, name, fn, cfg, out, log, resume, extractor, callbacks, say)


def _run(m, problems, heldout, name, fn, cfg, out, log, resume, extractor, callbacks, say) -> dict:
    from datasets import Dataset
    from trl import GRPOTrainer

    from ..models import Model
    from .data import repeat

    hf = plain_weights(copy.deepcopy(m.hf))
    tok = m.tokenizer
    cols = _problem_columns(problems)
    rows = repeat(problems, cfg.steps * cfg.prompts_per_step)
    data = Dataset.from_list([{"prompt": r["prompt"], **{k: str(r.get(k, "")) for k in cols}} for r in rows])
    rew = TrlReward(name, fn, cols, extractor=extractor, seed=cfg.seed)
    peft = None
    if cfg.lora_r > 0:
        from peft import LoraConfig

        peft = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM")
    holder: dict = {}

    def model_of() -> Model:
        return Model.from_hf(holder["trainer"].model, tok, spec=f"{m.spec} (training)")

    cb = _callback(log, out, rew, model_of, list(heldout), cfg, extractor, say, adapter_base(m, cfg))
    import warnings

    with warnings.catch_warnings():  # TRL calls methods transformers has renamed (FutureWarning)
        warnings.simplefilter("ignore", FutureWarning)
        trainer = GRPOTrainer(model=hf, reward_funcs=rew, args=grpo_args(cfg, out), train_dataset=data,
                              processing_class=tok, peft_config=peft, callbacks=[cb, *callbacks])
    holder["trainer"] = trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for noisy in (PrinterCallback, ProgressCallback):  # lens's callback says what matters, once per eval
        trainer.remove_callback(noisy)
    t = time.time()
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards" at every checkpoint
    try:
        with warnings.catch_warnings():  # TRL toggles gradient checkpointing through renamed methods each step
            warnings.simplefilter("ignore", FutureWarning)
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        log["train_seconds"] = round(log.get("train_seconds", 0.0) + time.time() - t, 2)
        if trainer.is_world_process_zero():
            _save_final(trainer, tok, out / "final", merged=cfg.lora_r > 0)
            log["status"] = "done"
            log["final"] = str(out / "final")
            write_log(out, log)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return log


def plain_weights(hf: Any) -> Any:
    """``hf`` with the marks of a GGUF load removed when its weights are already dequantized floats
    (transformers dequantizes GGUF on load but still calls the model quantized, which Trainer refuses
    to train and ``save_pretrained`` to save). A model with truly quantized weights is refused."""
    q = getattr(hf, "hf_quantizer", None)
    if q is None and not getattr(hf, "is_quantized", False):
        return hf
    method = str(getattr(getattr(hf.config, "quantization_config", None), "quant_method", "")).lower()
    if "gguf" not in method or not all(p.is_floating_point() for p in hf.parameters()):
        raise LensError(f"the model is quantized ({method or 'unknown method'}); RL here trains float weights: load "
                        "it unquantized (or pass --lora-r with a PEFT-supported quantization)")
    hf.hf_quantizer = None
    hf.is_quantized = False
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    return hf


def _save_final(trainer: Any, tok: Any, final: Path, merged: bool) -> None:
    """The trained weights as an ordinary HF folder (a LoRA adapter merged into a copy of the model), put in
    place in one step (`lens.outputs.atomic_folder`: a previous ``final`` is swapped out, never half-written)."""
    from ..outputs import atomic_folder

    model = trainer.model
    if merged:
        model = copy.deepcopy(model).merge_and_unload()
    with atomic_folder(final, "model") as tmp:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
