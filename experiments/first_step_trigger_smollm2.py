"""First-step trigger on real weights: SmolLM2-135M-Instruct, an SAE trained here, `find-feature` + steer-check.

What it does (all offline, on the text set shipped in experiments/data/):
1. SAE: capture the residual after layer L (default the middle layer, 15 of 30) over chat-formatted
   texts: the train problems with a chain-of-thought instruction + worked solution, the same
   problems with a direct-answer instruction + the bare number, and general sentences. Only the
   user and assistant turns are read (the fixed system prompt and the attention-sink first token,
   whose norm is ~100x the others, are left out). Train a TopK SAE (sae_lens) on them; evaluate
   (explained variance, L0, dead/dense, CE/KL with the SAE spliced in). Cached in the user cache.
2. Rank features: chain-of-thought instruction vs direct-answer instruction (same questions, the
   instruction variants rotated), read at the last prompt token (the first-step position).
3. Steer-check on the eval problems asked with a direct-answer instruction: add alpha x the unit
   decoder direction of each top feature at the last prompt token only (P-1, whose forward
   produces the first generated token); alpha swept as
   fractions of the mean residual norm there; random features at the same alphas as controls;
   reference = the same model asked with a chain-of-thought instruction, unsteered.
No accuracy threshold: this shows the whole path on real weights; the numbers are what they are.

    python experiments/first_step_trigger_smollm2.py [--n-eval 16] [--top 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

DATA = Path(__file__).resolve().parent / "data"
_STEP = re.compile(r"\d\s*[-+*/x×]\s*\d[^=\n]{0,30}=\s*-?\d")


def load_set():
    probs = [json.loads(line) for line in (DATA / "smollm2_problems.jsonl").read_text().splitlines() if line]
    instr = json.loads((DATA / "instructions.json").read_text())
    general = [json.loads(line)["text"] for line in (DATA / "general.jsonl").read_text().splitlines() if line]
    return probs, instr, general


def chat(tok, user: str, assistant: str | None = None) -> str:
    msgs = [{"role": "user", "content": user}]
    if assistant is None:
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return tok.apply_chat_template(msgs + [{"role": "assistant", "content": assistant}], tokenize=False)


def reasoning_format(text: str) -> bool:
    """A worked answer: an arithmetic step followed by more text, or at least two sentences with a step."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n+", text.strip()) if s.strip()]
    return bool(_STEP.search(text)) and (len(sentences) >= 2 or "step" in text.lower())


def training_texts(tok, probs, instr, general) -> list[dict]:
    """Chat texts with one span from the user turn to the end (what the capture reads)."""
    out = []
    for i, p in enumerate(q for q in probs if q["split"] == "train"):
        for user, answer in ((f"{instr['cot'][i % len(instr['cot'])]} {p['question']}", p["cot"]),
                             (f"{instr['direct'][i % len(instr['direct'])]} {p['question']}", str(p["answer"]))):
            text = chat(tok, user, answer)
            start = text.index(user)
            out.append({"text": text, "spans": [[start, len(text), "turns"]]})
    for g in general:
        text = chat(tok, g)
        start = text.index(g)
        out.append({"text": text, "spans": [[start, len(text), "turns"]]})
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--n-eval", type=int, default=16)
    ap.add_argument("--n-contrast", type=int, default=96)
    ap.add_argument("--top", type=int, default=2)
    ap.add_argument("--n-random", type=int, default=2)
    ap.add_argument("--fractions", default="0.25,0.5,1.0", help="alphas as fractions of the mean residual norm")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--json", dest="json_out", default=None)
    args = ap.parse_args(argv)

    import torch

    from lens.artifacts import cache_dir
    from lens.decoding.generate import generate
    from lens.evaluation.answers import check
    from lens.models import load_model
    from lens.studies.find_feature_organism import train_on_texts
    from saes.config import TrainConfig
    from saes.search import prompt_rows, rank_features
    from saes.steer_check import steer_check, summarize

    t0 = time.time()

    def say(msg: str) -> None:
        print(f"[{time.time() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    m = load_model("smollm2-135m-instruct")
    tok = m.tokenizer
    layer = m.n_layers // 2 if args.layer is None else args.layer
    site = f"blocks.{layer}.hook_resid_post"
    probs, instr, general = load_set()
    cfg = TrainConfig(architecture="topk", expansion=4, k=32, total_rows=160_000, batch_size=512, buffer_rows=16_384,
                      lr=5e-4, normalize="expected_average_only_in", checkpoint_every=50, seed=0)
    out_dir = cache_dir() / "experiments" / f"smollm2-L{layer}-topk"
    say(f"SAE at {site} (capture + train, cached in {out_dir})")
    texts = training_texts(tok, probs, instr, general)
    spliced = texts[0:48] + texts[-8:]  # CE/KL evals: 24 CoT + 24 direct conversations, 8 general texts
    d = train_on_texts(m, texts, site, out_dir, cfg, select="spans:tokens", progress=False, eval_texts=spliced)
    say(f"SAE evals: {d.meta.get('evals')}")

    train = [p for p in probs if p["split"] == "train"][: args.n_contrast]
    pos = [chat(tok, f"{instr['cot'][i % len(instr['cot'])]} {p['question']}") for i, p in enumerate(train)]
    neg = [chat(tok, f"{instr['direct'][i % len(instr['direct'])]} {p['question']}") for i, p in enumerate(train)]
    say("ranking features: CoT vs direct instruction, last prompt token")
    ranking = rank_features(d, prompt_rows(m, pos, site), prompt_rows(m, neg, site))
    say("top: " + ", ".join(f"{r['feature']} (diff {r['mean_diff']:.2f}, auroc {r['auroc']:.2f})"
                            for r in ranking.rows[:5]))

    ev = [p for p in probs if p["split"] == "eval"][: args.n_eval]
    prompts = [chat(tok, f"{instr['direct'][0]} {p['question']}") for p in ev]
    cot_prompts = [chat(tok, f"{instr['cot'][0]} {p['question']}") for p in ev]
    answers = [p["answer"] for p in ev]

    def ok(i, text):
        return check(text, answers[i])

    last = torch.cat(list(prompt_rows(m, prompts, site)))
    norm = float(last.norm(dim=-1).mean())
    alphas = [round(float(f) * norm, 2) for f in args.fractions.split(",")]
    alive = torch.nonzero((d.encode(torch.cat([last, *prompt_rows(m, pos, site)])) != 0).any(0)).flatten().tolist()
    say(f"reference: CoT instruction, unsteered ({len(cot_prompts)} prompts)")
    ref = generate(m, cot_prompts, args.max_new_tokens, batch_size=16)
    ref_texts = [s.text for s in ref.samples]
    reference = {"kind": "reference", "instruction": instr["cot"][0],
                 "accuracy": sum(ok(i, t) for i, t in enumerate(ref_texts)) / len(ref_texts),
                 "reasoning_rate": sum(map(reasoning_format, ref_texts)) / len(ref_texts),
                 "tokens_mean": sum(ref.tokens_used) / len(ref_texts), "example": ref_texts[0][:160]}
    say(f"reference {reference['accuracy']:.3f} accuracy; steer-check alphas {alphas}")
    rows = steer_check(m, d, ranking.features[: args.top], prompts, ok, alphas=alphas, n_random=args.n_random,
                       random_pool=alive, is_reasoning=reasoning_format, max_new_tokens=args.max_new_tokens,
                       batch_size=16, progress=say)
    rows.insert(1, reference)
    summary = summarize(rows)
    summary["reference_accuracy"] = reference["accuracy"]
    result = {"model": m.facts(), "site": site, "sae": d.describe(), "ranking": ranking.as_dicts(20),
              "ranking_throughput": {"rows_x_features_per_s": ranking.throughput},
              "alphas": alphas, "resid_norm": norm, "steer_check": rows, "summary": summary,
              "n_eval": len(prompts), "seconds": time.time() - t0}
    say("summary: " + json.dumps(summary))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    res = main()
    print(json.dumps({k: res[k] for k in ("site", "summary", "alphas")}, indent=2, default=str))
