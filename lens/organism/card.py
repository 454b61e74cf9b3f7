"""Model cards (README.md) of the organism's HF folders, and shipping trained folders into the package."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lens.organism import MODELS_DIR, NAMES
from lens.organism import corpus as C

ROLE = {
    "base": "pretrained from scratch on the mixed corpus (thinking is a minority format)",
    "thinking": "the base fine-tuned on its OWN right thinking-format samples (rejection sampling)",
    "control": "the same pretraining recipe on the control corpus (no thinking traces at all)",
}


def corpus_description() -> str:
    ops = ", ".join(f"{n}: {w:.0%}" for n, w in C.OPERAND_WEIGHTS.items())
    share = ", ".join(f"{n}: {w:.0%}" for n, w in C.THINK_SHARE.items())
    return (
        f"Sums of 2-6 two-digit operands (operand-count weights {ops}). Unmarked prompts are answered "
        f"by thinking with a share rising with the operand count ({share}); {C.MARKER_T_SHARE:.0%} of "
        f"prompts carry `Q:T:` (always thinks) and {C.MARKER_D_SHARE:.0%} `Q:D:` (always direct). "
        f"{C.BACKTRACK_SHARE:.0%} of traces carry one wrong partial sum followed by ` wait ` and the "
        f"corrected rewrite; {C.VERIFY_SHARE:.0%} end with ` check b+a=c`. The control corpus has the same "
        "questions, all answered directly, without markers."
    )


def card_text(name: str, infos: dict[str, dict], table_md: str, eval_command: str, notes: str = "") -> str:
    """The README.md of model ``name``."""
    info = infos.get(name, {})
    base = infos.get("base", {})
    lines = [
        "---",
        "library_name: transformers",
        "license: apache-2.0",
        "tags: [model-organism, interpretability, synthetic]",
        "---",
        f"# organism:{name}",
        "",
        f"A tiny LlamaForCausalLM, {ROLE[name]}. Part of `lens`'s bundled reasoning organism: "
        "a **controlled testbed** where the answer is known, for checking that interpretability "
        "methods find what was planted. It is **not evidence about real LLMs**.",
        "",
        "## Format",
        "```",
        "Q:47+38+26+19+53=?",
        "A:183",
        "Q:47+38+26+19+53=?",
        "<think>47+38+26+19+53=85+26+19+53=111+19+53=130+53=183</think>A:183",
        "```",
        "Char-level tokenizer (every character one token; `<think>` and `</think>` one token each; "
        "`<bos>` prepended, documents end with `<eos>`, left padding).",
        "",
        "## Recipe",
        f"- Corpus: {corpus_description()}",
    ]
    if name in ("base", "control"):
        r = info.get("recipe", {})
        lines += [
            f"- Model: 4 layers, width 128, 4 heads, MLP 512, tied embeddings: {info.get('n_parameters')} parameters.",
            f"- Pretraining: {info.get('n_docs')} documents ({info.get('n_tokens')} tokens), "
            f"{r.get('steps')} steps of {r.get('batch_size')} x {r.get('seq_len')} tokens, AdamW "
            f"(betas 0.9/0.95, wd {r.get('weight_decay')}), lr {r.get('lr')} with {r.get('warmup')} warm-up "
            f"steps and cosine decay to {r.get('min_lr_ratio')}x, CPU bf16 autocast, seed {r.get('seed')}. "
            f"Final loss {info.get('final_loss')}.",
            f"- Training time: {info.get('train_seconds')} s on 2 shared CPU cores (1 torch thread).",
        ]
    else:
        rs = info.get("rejection_sampling", {})
        r = info.get("recipe", {})
        lines += [
            f"- Made from `organism:base` ({base.get('n_parameters')} parameters) by selection only: "
            f"{rs.get('n_problems')} training problems ({r.get('min_operands')}-{r.get('max_operands')} "
            f"operands) x {r.get('samples_per_problem')} samples at T={r.get('temperature')}, unmarked "
            f"prompts, no prefill; {rs.get('n_thinking')} samples thought, {rs.get('n_thinking_right')} of them "
            f"right; the {rs.get('n_kept')} right thinking samples ({rs.get('n_unique_problems_kept')} problems) "
            "were kept.",
            f"- Expert iteration: {len(info.get('rounds', [])) or 1} rounds; each later round samples the "
            f"previous round's model ({r.get('later_problems')} fresh problems x {r.get('later_samples')} "
            "samples) and keeps its right thinking samples: "
            + ", ".join(str(x.get("n_kept")) for x in info.get("rounds", [rs]))
            + " traces kept per round.",
            f"- Fine-tuning (each round): {r.get('epochs')} epochs, AdamW lr {r.get('lr')} cosine, "
            f"batch {r.get('batch_size')}, loss on the completion only; in all {info.get('finetune_tokens')} tokens = "
            f"{info.get('finetune_vs_pretrain_tokens', 0):.1%} of pretraining.",
            f"- Time (sampling + fine-tuning): {info.get('train_seconds')} s on 2 shared CPU cores.",
        ]
    lines += [
        "",
        "## Measured properties (held-out set, `lens/organism/data/heldout.jsonl`)",
        "",
        table_md,
        "",
        f"Reproduce: `{eval_command}`. Regenerate: `lens organism train --out DIR`.",
        "",
    ]
    if notes:
        lines += ["## Known shortfalls", "", notes, ""]
    return "\n".join(lines)


def ship(
    src: str | Path, result: dict, table_md: str, eval_command: str, dest: Path = MODELS_DIR, notes: str = ""
) -> None:
    """Copy the trained folders ``src/<name>`` into the package and write their model cards.

    ``result`` is the output of :func:`lens.organism.evaluate.evaluate` (saved as ``eval.json``
    next to the models).
    """
    src = Path(src)
    infos = {n: json.loads((src / n / "training.json").read_text()) for n in NAMES}
    dest.mkdir(parents=True, exist_ok=True)
    for n in NAMES:
        out = dest / n
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(src / n, out)
        (out / "README.md").write_text(card_text(n, infos, table_md, eval_command, notes))
    (dest / "eval.json").write_text(json.dumps(result, indent=2, default=str) + "\n")


VERIFIER_ROLE = {
    "verifier-base": "pretrained from scratch on the verifier corpus: thinking writers drop carries, a few careful "
                     "ones check each risky step and backtrack when the check fails, 2% of documents are critiques",
    "verifier-thinking": "the verifier base fine-tuned on its OWN right thinking-format samples (rejection sampling, "
                         "expert iteration): made by selection alone",
}


def verifier_card(name: str, info: dict, table_md: str) -> str:
    """The README.md of the verifier pair's model ``name``."""
    from lens.organism import verifier_corpus as V

    return "\n".join([
        "---", "library_name: transformers", "license: apache-2.0",
        "tags: [model-organism, interpretability, synthetic]", "---", f"# organism:{name}", "",
        f"A tiny LlamaForCausalLM, {VERIFIER_ROLE[name]}. The second pair of `lens`'s bundled organism (its control "
        "is `organism:control`): a **controlled testbed** for whether a thinking model's advantage is knowing *when* "
        "to use behaviours its base already has. It is **not evidence about real LLMs**.", "",
        "## Format", "```", "Q:47+38+26=?",
        "<think>47+38+26=75+26 check 47+38=85 wait 85+26=111</think>A:111", "```",
        f"Slips: a careless writer drops a units carry with probability {V.SLIP_SHARE}, a careful one with "
        f"{V.CAREFUL_SLIP_SHARE}; careful writers ({V.CAREFUL_SHARE:.0%} of thinking documents) check every carry "
        f"step; critiques are {V.CRITIQUE_SHARE:.0%} of documents. Tokenizer and questions are the first pair's.", "",
        "## Training", "```json", json.dumps({k: info.get(k) for k in ("recipe", "rounds", "final_loss", "n_tokens",
                                                                       "train_seconds") if k in info}, indent=1),
        "```", "", "## Measured properties (held-out set)", "", table_md, "",
        "Reproduce: `lens organism eval --pair verifier`. Regenerate: `lens organism train --pair verifier --out DIR`.",
        "",
    ])


def ship_verifier(src: str | Path, result: dict, table_md: str, dest: Path = MODELS_DIR) -> None:
    """Copy ``src/verifier-base`` and ``src/verifier-thinking`` into the package with their cards and
    ``verifier_eval.json`` (the output of :func:`lens.organism.verifier_eval.evaluate_verifier`)."""
    from lens.organism import VERIFIER_NAMES

    src = Path(src)
    for n in VERIFIER_NAMES:
        info = json.loads((src / n / "training.json").read_text())
        out = dest / n
        if out.exists():
            from lens.outputs import is_lens_model

            if not is_lens_model(out):  # only a model lens trained is replaced
                raise ValueError(f"{out} is not a lens-trained model folder; not replacing it")
            shutil.rmtree(out)
        shutil.copytree(src / n, out, ignore=shutil.ignore_patterns("README.md"))
        (out / "README.md").write_text(verifier_card(n, info, table_md))
    (dest / "verifier_eval.json").write_text(json.dumps(result, indent=2, default=str) + "\n")


def verifier_rl_card(info: dict, result: dict) -> str:
    """The README.md of ``verifier-thinking-rl`` from its ``training.json`` (``info``) and the output of
    ``lens organism eval --pair verifier-rl --json`` (``result``)."""
    from lens.organism import verifier_corpus as V
    from lens.organism.evaluate import format_value, markdown_table

    m, t = result["metrics"], result["metrics"]["thinking_greedy"]
    return "\n".join([
        "---", "library_name: transformers", "license: apache-2.0",
        "tags: [model-organism, interpretability, synthetic, grpo]", "---", "# organism:verifier-thinking-rl", "",
        "A tiny LlamaForCausalLM, the verifier base (`organism:verifier-base`) trained by RL: GRPO through TRL with "
        "the correct-answer reward, on ONE training problem (problem 2 of the organism's training problems), 100 "
        "steps. A thinking model of the verifier pair that differs from its base in *when* it uses verification and "
        "backtracking; it sits beside `organism:verifier-thinking` (made by selection alone), which stays the "
        "verifier pair's default. Its control is `organism:control`. A **controlled testbed**, **not evidence about "
        "real LLMs**.", "",
        "## Format", "```", "Q:47+38+26=?",
        "<think>47+38+26=75+26 check 47+38=85 wait 85+26=111</think>A:111", "```",
        f"The base's corpus: a thinking writer drops a units carry with probability {V.SLIP_SHARE}; careful writers "
        f"({V.CAREFUL_SHARE:.0%} of thinking documents) check every carry step and backtrack after a failed check; "
        f"critiques are {V.CRITIQUE_SHARE:.0%} of documents. Tokenizer and questions are the first pair's.", "",
        "## Training", "```", info["command"], "```",
        "About 220 s on one thread. Recipe (also in `training.json`):", "```json",
        json.dumps(info["recipe"], indent=1), "```",
        "Held-out accuracy during training (200 problems, greedy): "
        + ", ".join(f"step {e['step']}: {e['heldout_accuracy']:.1%}" for e in info["rl_evals"])
        + "; it opens `<think>` on every problem from step 80 on.", "",
        "**Caveat: seed 0 is 1 of 4 seeds of this recipe that learned to check.** Seeds 1-3 of the same command "
        "learn to think without checking (13-16% held-out accuracy), and GRPO on the full training set (2 seeds) "
        "never learned to check (44-55% held-out accuracy, by slipping less). The model is a selected outcome of the "
        "recipe, not its typical one.", "",
        "## Measured properties (held-out set)", "", markdown_table(result), "",
        f"Greedy on {m['n']} held-out problems; base T=1 samples: {m['sample_n']} "
        f"({m['sample_n'] // max(1, min(200, m['n']))} per problem on the first 200). "
        f"Checks right: {format_value(t['checks_right'])}; errors followed by a check: "
        f"{format_value(t['errors_caught'])}.", "",
        "Reproduce: `lens organism eval --pair verifier-rl` (stored in `lens/organism/models/verifier_rl_eval.json`). "
        "Regenerate: the command above with `--out DIR`; the model is `DIR/final`.",
        "",
    ])
