"""Run every benchmark and print tables (markdown) with ratios against the peers, measured in this run.

Usage: python benchmarks/run.py [--sizes tiny,smollm2] [--texts 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from benchmarks.capture import capture_rows, disk_memory  # noqa: E402
from benchmarks.steering import hybrid_rows, organism_configs, random_configs, steering_rows  # noqa: E402


def _model(size: str):
    from lens import load_model
    from lens.tiny import tiny_model

    return tiny_model("llama", d_model=128) if size == "tiny" else load_model("smollm2-135m-instruct")


def _table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="tiny,smollm2")
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--hybrid-tokens", type=int, default=64, help="new tokens per prompt in the hybrid rows")
    ap.add_argument("--new-tokens", type=int, default=64, help="new tokens per steered generation")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", default="capture,steering,hybrid", help="which tables to run")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("LENS_BENCH_THREADS", "1")))  # 1: robust to a busy machine
    results = {"threads": torch.get_num_threads(), "torch": torch.__version__, "sizes": {}}
    only = set(args.only.split(","))
    for size in args.sizes.split(","):
        model = _model(size)
        res = results["sizes"].setdefault(size, {"model": repr(model)})
        if "capture" in only:
            rows = capture_rows(model, n_texts=args.texts, repeats=args.repeats)
            spec = "tiny" if size == "tiny" else "smollm2-135m-instruct"
            mem = {f"{k}x": disk_memory(spec, args.texts * k) for k in (1, 10)}
            res.update(capture=rows, disk_capture_memory=mem)
            if not args.json:
                print(f"\n## capture, {size}: {model!r}, {args.texts} texts, batch 8, every resid_post\n")
                print(_table(rows))
                print(f"\ncapture to disk, peak RSS: 1x inputs {mem['1x']['peak_mib']:.0f} MiB, "
                      f"10x inputs {mem['10x']['peak_mib']:.0f} MiB")
        if "steering" in only:
            res["steering"] = steering_rows(model, new_tokens=args.new_tokens, repeats=args.repeats)
            if not args.json:
                print(f"\n## steered generation, {size}: batch 4, {args.new_tokens} new tokens, "
                      "add at one layer every step\n")
                print(_table(res["steering"]))
    if "hybrid" in only:
        from lens import load_model

        try:
            base, thinking = load_model("organism:base"), load_model("organism:thinking")
            label = "organism base + thinking"
        except Exception:  # noqa: BLE001 - fall back to a tiny random pair
            from lens.tiny import tiny_model

            base, thinking = tiny_model("llama", d_model=128), tiny_model("llama", d_model=128, seed=1)
            label = "tiny random pair"
        from lens.studies.organism_inputs import heldout

        prompts = heldout(16)[0] if label.startswith("organism") else ["Q:47+38+26=?\n"] * 16
        configs = None
        if label.startswith("organism"):
            configs = {**organism_configs(base, thinking), **random_configs(base)}
        results["hybrid"] = {"pair": label, "rows": hybrid_rows(base, thinking, prompts, new_tokens=args.hybrid_tokens,
                                                                repeats=args.repeats, configs=configs)}
        if not args.json:
            print(f"\n## hybrid, {label}: 16 prompts, {args.hybrid_tokens} new tokens each\n")
            print(_table(results["hybrid"]["rows"]))
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
