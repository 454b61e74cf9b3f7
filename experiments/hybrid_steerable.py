"""Which of the thinking model's tokens can the hybrid's vectors make the base write? A teacher-forced check.

The thinking model writes greedy traces on held-out problems (its prompt, no prefill). The base reads each
trace (one forward, teacher-forced); at every position where its own next token differs from the thinking
model's (a "disagreement": where the hybrid's gate fires when the two run on the same text), the base is run
again with a vector added at that position only (the newest position, as the hybrid steers), for every
coefficient of the hybrid's sweep (0.1..1.0) times each scale of `--scales`, and it counts whether any of
them makes the base write the thinking model's token. Vectors tried: the category the taxonomy selector picks
from the thinking model's residual there, plus the bias (what the hybrid steers with); any category plus the
bias; the bias alone. Positions are grouped by the token the thinking model writes: `<think>` (opening the
reasoning), a space (the start of a ` check` / ` wait` after a step), a digit (arithmetic), other.

    python experiments/hybrid_steerable.py [--thinking organism:verifier-thinking-rl] [--layer 1 | --layers 0,1,2,3]
                                           [--n 40] [--vectors means,optimised] [--json out.json]

Vectors and selector are built as `lens hybrid` builds them on the organism pairs (`lens.studies.hybrid_organism`:
labelled traces of the thinking model, taxonomy SAE at the layer, `lens.hybrid.vectors.hybrid_vectors`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter

import torch

import lens
from lens.decoding import generate
from lens.hybrid.config import PAPER_COEFFICIENTS
from lens.hybrid.selectors import taxonomy_selector
from lens.hybrid.vectors import hybrid_vectors
from lens.organism import load_heldout
from lens.organism.behaviours import BEHAVIOUR_OF
from lens.sites import resolve
from lens.studies import organism_inputs as O


def kind_of(token: str) -> str:
    if token == "<think>":
        return "<think>"
    if token == " ":
        return "space"
    return "digit" if token.strip().isdigit() else "other"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="organism:verifier-base")
    ap.add_argument("--thinking", default="organism:verifier-thinking-rl")
    ap.add_argument("--layer", type=int, default=1, help="steer and read layer (the hybrid's default: 1)")
    ap.add_argument("--layers", default=None,
                    help="several layers, comma-separated: the check at each (the result lists one per layer)")
    ap.add_argument("--n", type=int, default=40, help="held-out problems whose thinking traces are read")
    ap.add_argument("--vectors", default="means,optimised", help="vector methods, comma-separated")
    ap.add_argument("--scales", default="1,2,3", help="multiples of the hybrid's coefficient sweep")
    ap.add_argument("--max-new-tokens", type=int, default=220)
    ap.add_argument("--json", default=None, help="write the results here (atomically)")
    args = ap.parse_args(argv)
    t0 = time.time()
    base, think = lens.load_model(args.base), lens.load_model(args.thinking)
    traces = O.labelled_traces(think, max_new_tokens=max(110, args.max_new_tokens))  # the same at every layer
    prompts = [r["prompt"] for r in load_heldout()[: args.n]]
    texts = [row[0] for row in generate(think, prompts, args.max_new_tokens).texts()]
    if args.layers is None:
        result = at_layer(base, think, args.layer, args, traces, prompts, texts)
    else:
        layers = [int(x) for x in args.layers.split(",") if x.strip()]
        result = {"base": args.base, "thinking": args.thinking, "n": args.n,
                  "layers": [at_layer(base, think, layer, args, traces, prompts, texts) for layer in layers]}
    result["seconds"] = round(time.time() - t0, 1)
    if args.json:
        from lens.artifacts import write_json

        write_json(args.json, result)
    print(json.dumps(result, indent=1))
    return result


def at_layer(base, think, layer: int, args, traces: list[dict], prompts: list[str], texts: list[str]) -> dict:
    """The check with vectors, selector and steering at `layer`: `traces` (the thinking model's labelled traces)
    give the taxonomy and the vectors, `texts` are its greedy completions of the held-out `prompts`."""
    site = f"blocks.{layer}.hook_resid_post"
    scales = [float(x) for x in args.scales.split(",")]
    names, pick, tinfo = taxonomy_selector(think, traces, site, same=BEHAVIOUR_OF)
    order = list(tinfo["taxonomy"]["categories"])
    tok = think.tokenizer
    block, _ = resolve(base, site)  # the module whose output is the site (a LensError names a bad layer)
    result: dict = {"base": args.base, "thinking": args.thinking, "site": site, "n": len(prompts), "scales": scales,
                    "coefficients": list(PAPER_COEFFICIENTS), "categories": order, "methods": {}}
    for method in [m.strip() for m in args.vectors.split(",") if m.strip()]:
        tp, dp = O.marker_contrast()
        bias, cats, _ = hybrid_vectors(base, traces, site, tp, dp, method=method, step_labels=names, order=order)
        mat = torch.stack([cats[c] for c in order])
        # every (category or -1 for the bias alone, scale, coefficient) candidate: the same at every position
        tags = [(c, s) for c in range(-1, len(order)) for s in scales for _ in PAPER_COEFFICIENTS]
        vecs = torch.stack([a * s * (bias + (mat[c] if c >= 0 else 0))
                            for c in range(-1, len(order)) for s in scales for a in PAPER_COEFFICIENTS])
        kinds: dict[str, Counter] = {}
        for p, t in zip(prompts, texts, strict=True):
            n_prompt = len(tok(p).input_ids)
            full = torch.tensor(tok(p + t).input_ids)
            with torch.no_grad():
                base_next = base.hf(full[None]).logits[0].argmax(-1)
                resid = think.hf(full[None], output_hidden_states=True).hidden_states[layer + 1][0]
            for q in range(n_prompt - 1, len(full) - 1):
                want = int(full[q + 1])
                if int(base_next[q]) == want:
                    continue
                sel = int(torch.as_tensor(pick(resid[q:q + 1].float()))[0])

                def add(_m, _i, out, vecs=vecs, q=q):
                    h = (out[0] if isinstance(out, tuple) else out).clone()
                    h[:, q] += vecs.to(h.dtype)
                    return (h, *out[1:]) if isinstance(out, tuple) else h

                handle = block.register_forward_hook(add)
                try:
                    with torch.no_grad():
                        hit = (base.hf(full[: q + 1][None].repeat(len(vecs), 1)).logits[:, q].argmax(-1) == want)
                finally:
                    handle.remove()
                k = kinds.setdefault(kind_of(tok.decode([want])), Counter())
                k["positions"] += 1
                k[f"selected:{order[sel] if sel >= 0 else 'none'}"] += 1
                for s in scales:
                    k[f"selected x{s:g}"] += bool(any(hit[i] for i, tg in enumerate(tags) if tg == (sel, s)))
                    k[f"any x{s:g}"] += bool(any(hit[i] for i, (c, s2) in enumerate(tags) if c >= 0 and s2 == s))
                    k[f"bias x{s:g}"] += bool(any(hit[i] for i, tg in enumerate(tags) if tg == (-1, s)))
        result["methods"][method] = {k: dict(v) for k, v in kinds.items()}
        print(f"{site} {method}: " + "; ".join(f"{k} {dict(v)}" for k, v in kinds.items()), file=sys.stderr)
    return result


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
