"""Training of the organism: pretraining from scratch, rejection sampling, fine-tuning.

``train_all(out_dir)`` regenerates ``base``, ``thinking`` and ``control`` with a fixed seed:

1. ``base``: a 4-layer, width-128 ``LlamaForCausalLM`` pretrained on the mixed corpus
   (:func:`lens.organism.corpus.generate_corpus`), batch 32 x 256 tokens, AdamW, lr 3e-3 with
   warm-up and cosine decay.
2. ``thinking``: the base samples training problems at temperature 1 (no marker, no prefill);
   its OWN thinking-format samples that reach the right answer are kept (rejection sampling)
   and the base is fine-tuned on them (loss on the completion only), with a small fraction of
   the pretraining compute.
3. ``control``: the same pretraining recipe on the control corpus (no thinking traces).

Pretraining checkpoints every ``ckpt_every`` steps under ``out_dir/.ckpt`` (``<name>-step-N.safetensors``
with the weights and the AdamW state, then the pointer ``<name>.json``; no pickle) and resumes from there,
so an interrupted run picks up where it stopped with the same data order and ends with the same weights.
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from lens.organism import corpus as C
from lens.organism.sampling import generate
from lens.organism.tokenizer import build_tokenizer


@dataclass(frozen=True)
class PretrainConfig:
    """Recipe of the pretraining runs (base and control share it)."""

    n_docs: int = 400_000
    seq_len: int = 256
    batch_size: int = 32
    steps: int = 1800
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    # optional phase 2, a warm restart; measured: 800 such steps lift forced thinking to ~89% but
    # also direct answering to ~77%, so the shipped recipe does not use it (docs/organism.md)
    extra_steps: int = 0
    extra_lr: float = 1e-3
    weight_decay: float = 0.1
    seed: int = 0
    ckpt_every: int = 100
    corpus: str = "sums"  # "sums" (the first pair) or "verifier" (slips at carries, careful writers check)
    hidden_size: int = 128
    n_layers: int = 4
    n_heads: int = 4
    intermediate_size: int = 512
    bf16_autocast: bool = True  # CPU bf16 autocast (fp32 master weights): ~2x faster on CPU


@dataclass(frozen=True)
class SelectionConfig:
    """Recipe of rejection sampling and of the fine-tuning on the kept traces."""

    n_problems: int = 1500
    samples_per_problem: int = 8
    min_operands: int = 4
    max_operands: int = 6
    temperature: float = 1.0
    epochs: int = 2
    lr: float = 5e-4
    batch_size: int = 32
    seed: int = 1
    rounds: int = 2  # expert iteration: round r samples the round r-1 model on fresh problems
    later_problems: int = 600
    later_samples: int = 4
    max_new_tokens: int = 120  # the verifier pair's traces (checks, corrected rewrites) need 220


def model_config(vocab_size: int, cfg: PretrainConfig, tok) -> object:
    """The HF ``LlamaConfig`` of the organism."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def heldout_expressions() -> set[str]:
    return {p.expression for p in C.heldout_problems()}


def corpus_generator(name: str):
    """``generate_corpus`` of the corpus called ``name`` (``"sums"`` or ``"verifier"``)."""
    from lens.errors import LensError
    from lens.organism import verifier_corpus as V

    generators = {"sums": C.generate_corpus, "verifier": V.generate_corpus}
    if name not in generators:
        raise LensError(f"unknown organism corpus {name!r}; use one of {', '.join(generators)}")
    return generators[name]


def pack(texts: list[str], tok, seq_len: int) -> torch.Tensor:
    """Tokenize ``<bos> text <eos>`` for every text, concatenate and cut into ``seq_len`` rows."""
    ids: list[int] = []
    eos = tok.eos_token_id
    for row in tok(texts)["input_ids"]:
        ids.extend(row)
        ids.append(eos)
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.int16).view(n, seq_len)


def _lr_at(step: int, cfg_lr: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up then cosine decay from ``cfg_lr`` to ``min_ratio * cfg_lr`` at ``total``."""
    if step < warmup:
        return cfg_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return cfg_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def schedule(step: int, cfg: PretrainConfig) -> float:
    """Learning rate at ``step``: phase 1 (``steps``) then a warm restart for ``extra_steps``."""
    if step < cfg.steps:
        return _lr_at(step, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr_ratio)
    return _lr_at(step - cfg.steps, cfg.extra_lr, 20, cfg.extra_steps, cfg.min_lr_ratio)


def pretrain(name: str, out_dir: Path, cfg: PretrainConfig, control: bool = False, log=print):
    """Pretrain one model (``control`` picks the control corpus); returns (model, tokenizer, info)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    tok = build_tokenizer()
    docs = corpus_generator(cfg.corpus)(cfg.n_docs, seed=cfg.seed, control=control, exclude=heldout_expressions())
    data = pack([d.text for d in docs], tok, cfg.seq_len)
    n_tokens = int(data.numel())
    log(f"[{name}] corpus: {len(docs)} docs, {n_tokens} tokens, {data.shape[0]} rows")
    order = np.random.default_rng(cfg.seed).permutation(data.shape[0])
    total = cfg.steps + cfg.extra_steps
    while len(order) < total * cfg.batch_size:
        more = np.random.default_rng(cfg.seed + len(order)).permutation(data.shape[0])
        order = np.concatenate([order, more])

    model = LlamaForCausalLM(model_config(len(tok), cfg, tok))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    start, elapsed = _load_checkpoint(out_dir / ".ckpt", name, model, opt)
    if start:
        log(f"[{name}] resuming at step {start}")
    model.train()
    t_start = time.time()
    bar = tqdm(range(start, total), desc=f"pretrain {name}", initial=start, total=total)
    loss_val = float("nan")
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = schedule(step, cfg)
        idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        batch = data[torch.as_tensor(idx)].long()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16_autocast):
            loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_val = 0.9 * loss_val + 0.1 * loss.item() if not math.isnan(loss_val) else loss.item()
        bar.set_postfix(loss=f"{loss_val:.3f}")
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == total:
            _save_checkpoint(out_dir / ".ckpt", name, model, opt, step + 1, elapsed + time.time() - t_start)
    model.eval()
    info = {
        "name": name,
        "corpus": "control" if control else ("mixed" if cfg.corpus == "sums" else cfg.corpus),
        "n_docs": len(docs),
        "n_tokens": n_tokens,
        "tokens_seen": total * cfg.batch_size * cfg.seq_len,
        "final_loss": round(loss_val, 4),
        "train_seconds": round(elapsed + time.time() - t_start, 1),
        "recipe": asdict(cfg),
        "n_parameters": sum(p.numel() for p in model.parameters()),
    }
    return model, tok, info


def _save_checkpoint(ckpt_dir: Path, name: str, model, opt, step: int, elapsed: float) -> None:
    """Write ``<name>-step-N.safetensors`` (weights and AdamW state), then the pointer ``<name>.json``, then
    remove older tensors files: a kill at any moment leaves the previous checkpoint or this one."""
    from lens.statefile import write_state

    tensors_name = f"{name}-step-{step:07d}.safetensors"
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed}
    write_state(ckpt_dir / f"{name}.json", state, tensors_name, kind="organism-pretrain-checkpoint")
    for old in ckpt_dir.glob(f"{name}-step-*.safetensors"):
        if old.name != tensors_name:
            old.unlink(missing_ok=True)


def _load_checkpoint(ckpt_dir: Path, name: str, model, opt) -> tuple[int, float]:
    """Restore model and optimizer from ``ckpt_dir/<name>.json`` if present; returns (step, elapsed seconds).

    A ``<name>.pt`` (pickle) is never read: it is ignored with a warning. A damaged checkpoint, or one of
    another model shape, raises a LensError.
    """
    from lens.errors import LensError
    from lens.statefile import read_state

    for stale in [*ckpt_dir.glob(f".{name}-step-*.tmp"), *ckpt_dir.glob(f".{name}.json.*.tmp")]:
        stale.unlink(missing_ok=True)  # half-written files of a killed run of this model
    pickled = ckpt_dir / f"{name}.pt"
    if pickled.exists():
        warnings.warn(f"ignoring {pickled}: a pickle, which lens never loads; delete it", stacklevel=3)
    pointer = ckpt_dir / f"{name}.json"
    if not pointer.exists():
        return 0, 0.0
    state = read_state(pointer, f"{name} pretraining checkpoint")
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        return int(state["step"]), float(state["elapsed"])
    except Exception as e:  # torch raises several types for a state of another shape or structure
        why = (str(e).splitlines() or [""])[0][:160]
        raise LensError(f"{name} pretraining checkpoint {pointer} does not fit this run "
                        f"({type(e).__name__}: {why}); delete {ckpt_dir} to start over") from None


def selection_problems(cfg: SelectionConfig) -> list[C.Problem]:
    """Training problems for rejection sampling (seeded apart; held-out questions excluded)."""
    rng = random.Random(cfg.seed)
    held = heldout_expressions()
    out: list[C.Problem] = []
    while len(out) < cfg.n_problems:
        p = C.random_problem(rng, rng.randint(cfg.min_operands, cfg.max_operands))
        if p.expression not in held:
            out.append(p)
    return out


def rejection_sample(model, tok, cfg: SelectionConfig, keep_wrong: bool = False, log=print):
    """Sample the model on training problems; keep its thinking samples that are right.

    With ``keep_wrong`` every thinking sample is kept whatever its answer (format-only
    selection, the "spurious reward" experiment).  Returns (examples, stats), examples being
    ``(prompt, completion)`` pairs.
    """
    problems = selection_problems(cfg)
    prompts = [p.prompt() for p in problems for _ in range(cfg.samples_per_problem)]
    answers = [p.answer for p in problems for _ in range(cfg.samples_per_problem)]
    t0 = time.time()
    outs = generate(model, tok, prompts, temperature=cfg.temperature, seed=cfg.seed, batch_size=512,
                    max_new_tokens=cfg.max_new_tokens)
    kept: list[tuple[str, str]] = []
    n_think = n_right = 0
    for prompt, ans, out in zip(prompts, answers, outs, strict=True):
        if not C.is_thinking(out):
            continue
        n_think += 1
        right = C.parse_answer(out) == ans
        n_right += right
        if right or keep_wrong:
            kept.append((prompt, out))
    stats = {
        "n_problems": len(problems),
        "n_samples": len(prompts),
        "n_thinking": n_think,
        "n_thinking_right": n_right,
        "n_kept": len(kept),
        "n_unique_problems_kept": len({p for p, _ in kept}),
        "sampling_seconds": round(time.time() - t0, 1),
    }
    log(f"rejection sampling: {stats}")
    return kept, stats


def finetune(
    model,
    tok,
    examples: list[tuple[str, str]],
    epochs: int,
    lr: float,
    batch_size: int = 32,
    seed: int = 0,
    desc: str = "finetune",
):
    """Fine-tune in place on ``(prompt, completion)`` pairs, loss on completion + ``<eos>`` only.

    Returns the number of tokens processed (for the compute comparison with pretraining).
    """
    rng = random.Random(seed)
    seqs: list[tuple[list[int], int]] = []
    for prompt, completion in examples:
        p_ids = tok(prompt)["input_ids"]
        full = tok(prompt + completion)["input_ids"] + [tok.eos_token_id]
        seqs.append((full, len(p_ids)))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    n_batches = epochs * math.ceil(len(seqs) / batch_size)
    model.train()
    tokens = 0
    bar = tqdm(total=n_batches, desc=desc)
    step = 0
    for _ in range(epochs):
        order = list(range(len(seqs)))
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            chunk = [seqs[j] for j in order[i : i + batch_size]]
            width = max(len(s) for s, _ in chunk)
            ids = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, (s, n_prompt) in enumerate(chunk):
                ids[r, : len(s)] = torch.tensor(s)
                labels[r, n_prompt : len(s)] = torch.tensor(s[n_prompt:])
                mask[r, : len(s)] = 1
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / max(1, n_batches)))
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            tokens += ids.numel()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    return tokens


def save_model(model, tok, folder: Path, info: dict) -> None:
    """Save an HF folder (config, safetensors, tokenizer) plus ``training.json`` as one atomic step
    (a kill leaves the previous folder or the new one, never a half-written model)."""
    from lens.outputs import atomic_folder

    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    with atomic_folder(folder, "model") as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        (tmp / "training.json").write_text(json.dumps(info, indent=2) + "\n")


def make_thinking(base, tok, base_info: dict, cfg: SelectionConfig, log=print, name: str = "thinking",
                  made_from: str = "base"):
    """Rejection sampling / expert iteration from the base on its own right thinking traces.

    Round 1 samples the base; each later round samples the previous round's model on fresh
    problems (seed + round) and fine-tunes it further on its right thinking samples.
    """
    import copy
    from dataclasses import replace

    t0 = time.time()
    model = copy.deepcopy(base)
    rounds: list[dict] = []
    tokens = 0
    for r in range(cfg.rounds):
        rcfg = (
            cfg
            if r == 0
            else replace(
                cfg, seed=cfg.seed + 100 * r, n_problems=cfg.later_problems, samples_per_problem=cfg.later_samples
            )
        )
        kept, stats = rejection_sample(model, tok, rcfg, log=log)
        tokens += finetune(
            model, tok, kept, cfg.epochs, cfg.lr, cfg.batch_size, seed=rcfg.seed, desc=f"finetune round {r + 1}"
        )
        rounds.append(stats)
    info = {
        "name": name,
        "made_from": made_from,
        "rejection_sampling": rounds[0],
        "rounds": rounds,
        "finetune_tokens": tokens,
        "finetune_vs_pretrain_tokens": round(tokens / base_info["tokens_seen"], 4),
        "train_seconds": round(time.time() - t0, 1),
        "recipe": asdict(cfg),
    }
    log(f"thinking: {info['finetune_vs_pretrain_tokens']:.2%} of pretraining tokens")
    return model, info


def _pretrain_control(out_dir: str, pre: PretrainConfig, threads: int) -> None:
    """Pretrain and save the control model (run in a separate process by :func:`train_all`); it dies with
    its parent (Linux), so it never writes on after the parent that holds the folder's lock is killed."""
    import sys

    from lens.errors import LensError

    _die_with_parent()
    torch.set_num_threads(threads)
    try:
        control, ctok, info = pretrain("control", Path(out_dir), pre, control=True, log=lambda *_: None)
        save_model(control, ctok, Path(out_dir) / "control", info)
    except LensError as e:  # bad input: one line, as the CLI prints it; the parent then fails with exit 2
        print(f"lens: error: control model: {e}", file=sys.stderr)
        sys.exit(2)


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes
    import os
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def _build_pair(out: Path, base_name: str, thinking_name: str, pre: PretrainConfig, sel: SelectionConfig,
                which: tuple[str, ...], infos: dict[str, dict], log) -> None:
    """Pretrain ``out/<base_name>`` and make ``out/<thinking_name>`` from it by selection (those in ``which``);
    a thinking model built alone starts from the base already in ``out``. Fills ``infos``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tok = None
    if base_name in which:
        base, tok, infos[base_name] = pretrain(base_name, out, pre, log=log)
        save_model(base, tok, out / base_name, infos[base_name])
    if thinking_name in which:
        if base is None:
            from lens.models import require_safetensors

            require_safetensors(out / base_name)
            base = AutoModelForCausalLM.from_pretrained(str(out / base_name), use_safetensors=True)
            tok = AutoTokenizer.from_pretrained(str(out / base_name))
            infos[base_name] = json.loads((out / base_name / "training.json").read_text())
        thinking, infos[thinking_name] = make_thinking(base, tok, infos[base_name], sel, log=log, name=thinking_name,
                                                       made_from=base_name)
        save_model(thinking, tok, out / thinking_name, infos[thinking_name])


def train_all(
    out_dir: str | Path,
    pre: PretrainConfig | None = None,
    sel: SelectionConfig | None = None,
    which: tuple[str, ...] = ("base", "thinking", "control"),
    log=print,
    parallel: bool = True,
) -> dict[str, dict]:
    """Regenerate ``base``, ``thinking`` and ``control`` into ``out_dir/<name>``; returns their infos.

    With ``parallel`` (and both base and control requested) the control pretrains in a second
    process while this one pretrains the base and then makes the thinking model, one torch thread
    each: on 2 cores that is about twice as fast as one process with 2 threads, because the
    organism's small matrix products do not scale across threads. Same seeds, same results.
    """
    import multiprocessing as mp


    out = Path(out_dir)
    pre = pre or PretrainConfig()
    sel = sel or SelectionConfig()
    infos: dict[str, dict] = {}
    side = None
    threads = torch.get_num_threads()  # the caller's, given back at the end
    if parallel and "control" in which and ("base" in which or "thinking" in which):
        torch.set_num_threads(1)
        side = mp.get_context("spawn").Process(target=_pretrain_control, args=(str(out), pre, 1), daemon=False)
        side.start()
        log("[control] pretraining in a second process")
    else:
        torch.set_num_threads(min(torch.get_num_threads(), 2) or 1)
    try:
        _build_pair(out, "base", "thinking", pre, sel, which, infos, log)
        if side is not None:
            side.join()
            if side.exitcode != 0:
                from lens.errors import LensError

                raise LensError(f"the control's pretraining process failed (exit code {side.exitcode}; its "
                                f"reason is above); fix it, then rerun `lens organism train --out {out} --which "
                                "control` to resume it")
            infos["control"] = json.loads((out / "control" / "training.json").read_text())
        elif "control" in which:
            control, ctok, infos["control"] = pretrain("control", out, pre, control=True, log=log)
            save_model(control, ctok, out / "control", infos["control"])
    finally:
        torch.set_num_threads(threads)
        if side is not None and side.is_alive():
            side.terminate()  # interrupted: the control resumes from its checkpoint next time
            side.join()
    return infos


#: the verifier pair's selection: longer completions, more expert-iteration rounds
VERIFIER_SELECTION = SelectionConfig(max_new_tokens=220)


def train_verifier(
    out_dir: str | Path,
    pre: PretrainConfig | None = None,
    sel: SelectionConfig | None = None,
    which: tuple[str, ...] = ("verifier-base", "verifier-thinking"),
    log=print,
) -> dict[str, dict]:
    """Regenerate the verifier pair into ``out_dir/verifier-base`` and ``out_dir/verifier-thinking``.

    The base pretrains on :mod:`lens.organism.verifier_corpus` with the first pair's recipe; the thinking
    model is made from it by the same rejection sampling (its own right thinking samples only).  The
    pair's control is the first pair's (same control corpus), so it is not rebuilt here.
    """
    from dataclasses import replace

    out = Path(out_dir)
    pre = replace(pre or PretrainConfig(), corpus="verifier")
    infos: dict[str, dict] = {}
    _build_pair(out, "verifier-base", "verifier-thinking", pre, sel or VERIFIER_SELECTION, which, infos, log)
    return infos
