"""The hybrid at each steer layer: which layer of the base carries the directions the thinking model's moves need.

Runs `lens hybrid` (`lens.studies.hybrid_organism.run`, the paper mode with its ablations) once per layer, the
category vectors, the bias, the taxonomy and the steering all at that layer, and writes one JSON with a result per
layer. The default is the verifier pair with the RL-made thinking model, optimised vectors, both prompts ending
with the think tag, as docs/organism.md runs it at layer 1:

    python experiments/hybrid_layers.py [--layers 0,1,2,3] [--n 150] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import lens
from lens.studies import hybrid_organism


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="organism:verifier-base")
    ap.add_argument("--thinking", default="organism:verifier-thinking-rl")
    ap.add_argument("--layers", default="0,1,2,3", help="steer (and read) layers, comma-separated")
    ap.add_argument("--n", type=int, default=150, help="held-out problems")
    ap.add_argument("--max-new-tokens", type=int, default=220)
    ap.add_argument("--vectors", default="optimised", choices=["means", "optimised"])
    ap.add_argument("--no-force-thinking", action="store_true", help="prompts as the pair's own (no think tag)")
    ap.add_argument("--json", default=None, help="write the results here (atomically)")
    args = ap.parse_args(argv)
    t0 = time.time()
    base, think = lens.load_model(args.base), lens.load_model(args.thinking)
    out: dict = {"base": args.base, "thinking": args.thinking, "n": args.n, "vectors": args.vectors,
                 "force_thinking": not args.no_force_thinking, "layers": {}}
    for layer in [int(x) for x in args.layers.split(",") if x.strip()]:
        res = hybrid_organism.run(base, think, n=args.n, layer=layer, max_new_tokens=args.max_new_tokens,
                                  vectors=args.vectors, force_thinking=not args.no_force_thinking)
        out["layers"][str(layer)] = res
        h = res["runs"]["none"]
        print(f"layer {layer}: hybrid {h['accuracy']['value']:.3f}, gap recovered {h['gap_recovered']}, "
              f"steered {h['fraction_steered']:.3f}", flush=True)
    out["seconds"] = round(time.time() - t0, 1)
    if args.json:
        from lens.artifacts import write_json

        write_json(args.json, out)
    else:
        print(json.dumps(out, indent=1, default=str))
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
