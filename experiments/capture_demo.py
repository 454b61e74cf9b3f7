"""Capture demo: read the residual stream of a model at chosen sites and tokens, in memory and on disk.

Runs on the bundled organism when it is present, else on a tiny random-weight Llama.
Usage: python experiments/capture_demo.py [--model SPEC] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile

from lens import LensError, load_model
from lens.capture_folder import capture_to_disk
from lens.capture_memory import capture
from lens.tiny import tiny_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="organism:base")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    try:
        model = load_model(args.model)
    except LensError as e:
        print(f"({e}); using a tiny random Llama instead")
        model = tiny_model("llama")
    print(model)
    texts = [
        {"prompt": "Q:47+38+26=?\n", "completion": "<think>47+38+26=85+26=111</think>A:111"},
        {"prompt": "Q:12+30=?\n", "completion": "A:42"},
    ]
    sites = [f"blocks.{i}.hook_resid_post" for i in range(model.n_layers)]
    for select in ["last_prompt", "sentences"]:
        acts = capture(model, texts, sites, select, progress=False)
        norms = [round(float(acts[s].norm(dim=-1).mean()), 3) for s in sites]
        print(f"select={select:12s} rows={len(acts):3d} start={acts.start.tolist()} mean norm per layer={norms}")
    out = args.out or tempfile.mkdtemp(prefix="lens-capture-")
    folder = capture_to_disk(model, texts * 50, sites, "all", out=out, shard_rows=500, progress=True)
    print("on disk:", folder.summary())


if __name__ == "__main__":
    main()
