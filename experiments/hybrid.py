"""Finding 2 on the bundled organism: the base model steered only where the thinking model would act differently.

Usage: python experiments/hybrid.py [--n 150] [--layer 1] [--out results.json]
Prints base / thinking / hybrid accuracy, gap recovered, fraction of tokens steered, and each ablation.
"""

from __future__ import annotations

import argparse
import json

from lens import load_pair
from lens.studies import hybrid_organism


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--layer", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    base, thinking = load_pair("organism:base", "organism:thinking")
    res = hybrid_organism.run(base, thinking, n=args.n, layer=args.layer, progress=print)
    print(f"base {res['base']['value']:.3f}  thinking {res['thinking']['value']:.3f}  ({res['site']}, n={res['n']})")
    for name, run in res["runs"].items():
        print(f"{name:16s} accuracy {run['accuracy']['value']:.3f}  gap recovered {run['gap_recovered']:.3f} "
              f"[{run['gap_ci'][0]:.3f}, {run['gap_ci'][1]:.3f}]  steered {run['fraction_steered']:.4f}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
