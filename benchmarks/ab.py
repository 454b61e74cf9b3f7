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

capture and steering: tiny random Llama (4 layers, width 128); hybrid: the bundled organism. One torch
thread; prints the median of each and their ratio (and the ratio of the fastest rounds), by wall clock and
by this process's CPU time (one thread: the CPU time leaves out the moments other jobs on a shared machine
held the core).
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


def _pair(what: str):
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

        return bare, lambda: capture(m, ids, sites, "all", batch_size=8, progress=False), None
    if what == "hybrid":
        return _hybrid_pair()
    if what == "hybrid-reference":
        return _hybrid_vs_reference()
    from benchmarks.steering import steering_pair

    plain, steered, _, _, _ = steering_pair(m, batch=4, new_tokens=64)
    return plain, steered, 64


def _hybrid_vs_reference():
    """The paper-style full-recompute hybrid loop (baseline) vs lens's KV-cached hybrid, same decisions."""
    from benchmarks.steering import organism_configs
    from lens import load_model
    from lens.hybrid import hybrid_generate
    from lens.hybrid.reference import hybrid_generate_reference
    from lens.studies.organism_inputs import heldout

    base, thinking = load_model("organism:base"), load_model("organism:thinking")
    prompts, new = heldout(4)[0], 256
    cfg = next(iter(organism_configs(base, thinking).values()))
    return (lambda: hybrid_generate_reference(base, thinking, prompts, cfg, max_new_tokens=new, eos_token_id=-1),
            lambda: hybrid_generate(base, thinking, prompts, cfg, max_new_tokens=new, eos_token_id=-1), new)


def _hybrid_pair():
    """Plain greedy generation of the organism's base vs the hybrid with the organism's own vectors."""
    from benchmarks.steering import organism_configs
    from lens import load_model
    from lens.hybrid import hybrid_generate
    from lens.studies.organism_inputs import heldout

    base, thinking = load_model("organism:base"), load_model("organism:thinking")
    prompts, new = heldout(16)[0], 64
    cfg = next(iter(organism_configs(base, thinking).values()))
    tok = base.tokenizer
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True)

    def plain():
        with torch.no_grad():
            base.hf.generate(**enc, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=None)

    return plain, lambda: hybrid_generate(base, thinking, prompts, cfg, max_new_tokens=new, eos_token_id=-1), new


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["capture", "capture-nomask", "steering", "hybrid", "hybrid-reference"])
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)
    base, lens, steps = _pair(args.what)
    base(), lens()  # warm up
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
    for clock, times in (("wall", wall), ("cpu", cpu)):
        a, b = statistics.median(times[0]), statistics.median(times[1])
        line = (f"{args.what} ({clock} clock): baseline {a * 1e3:.1f} ms, lens {b * 1e3:.1f} ms, "
                f"lens time / baseline {b / a:.3f}")
        if steps:
            line += f" (speed {a / b:.3f}x; {(b - a) / steps * 1e6:.0f} us per step)"
        print(line + f"; fastest rounds: lens / baseline {min(times[1]) / min(times[0]):.3f}")


if __name__ == "__main__":
    main()
