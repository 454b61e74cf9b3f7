"""Run every benchmark and print tables (markdown) with ratios against the peers, measured in this run.

Usage: python benchmarks/run.py [--sizes tiny,smollm2] [--texts 64] [--json] [--json-out PATH]
       python benchmarks/run.py --device cuda --sizes smollm2-arch,qwen1.5b-arch   (a GPU; bfloat16)
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
from benchmarks.models import SIZES, bench_model  # noqa: E402
from benchmarks.record import add_json_out, write_json  # noqa: E402
from benchmarks.steering import hybrid_rows, organism_configs, random_configs, steering_rows  # noqa: E402


def _table(rows: list[dict]) -> str:
    keys = [k for k in rows[0] if not isinstance(rows[0][k], list)]  # every run's times: in the JSON only
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="tiny,smollm2", help=f"comma-separated, of: {', '.join(SIZES)}")
    ap.add_argument("--device", default="cpu", help="cpu or an accelerator (cuda); sizes load there")
    ap.add_argument("--dtype", default=None, help="model dtype (default float32 on CPU, bfloat16 elsewhere)")
    ap.add_argument("--hybrid-pair", default=None,
                    help="organism (default on CPU) or a size: two random-weight models of that shape "
                         "(default on an accelerator: the first size)")
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--hybrid-tokens", type=int, default=64, help="new tokens per prompt in the hybrid rows")
    ap.add_argument("--hybrid-ref-prompts", type=int, default=None,
                    help="time the one-prompt-at-a-time reference on this many prompts only (default all 16)")
    ap.add_argument("--new-tokens", type=int, default=64, help="new tokens per steered generation")
    ap.add_argument("--json", action="store_true")
    add_json_out(ap)
    ap.add_argument("--only", default="capture,steering,hybrid", help="which tables to run")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("LENS_BENCH_THREADS", "1")))  # 1: robust to a busy machine
    dtype = getattr(torch, args.dtype) if args.dtype else None
    results = {"threads": torch.get_num_threads(), "torch": torch.__version__, "device": args.device,
               "texts": args.texts, "repeats": args.repeats, "new_tokens": args.new_tokens,
               "hybrid_tokens": args.hybrid_tokens, "sizes": {}}
    if args.device != "cpu" and torch.cuda.is_available():
        results["gpu"] = torch.cuda.get_device_name()
    only = set(args.only.split(","))

    def save() -> None:  # after every table, so a run cut short keeps what it measured
        if args.json_out:
            write_json(args.json_out, results)

    for size in args.sizes.split(","):
        model = bench_model(size, args.device, dtype)
        res = results["sizes"].setdefault(size, {"model": repr(model)})
        if "capture" in only:
            rows = capture_rows(model, n_texts=args.texts, repeats=args.repeats)
            res.update(capture=rows)
            mem = None
            if args.device == "cpu" and size in ("tiny", "smollm2"):  # peak host RSS of a CPU capture
                spec = "tiny" if size == "tiny" else "smollm2-135m-instruct"
                mem = res["disk_capture_memory"] = {f"{k}x": disk_memory(spec, args.texts * k) for k in (1, 10)}
            save()
            if not args.json:
                print(f"\n## capture, {size} on {args.device}: {model!r}, {args.texts} texts, batch 8, "
                      "every resid_post\n")
                print(_table(rows))
                if mem:
                    print(f"\ncapture to disk, peak RSS: 1x inputs {mem['1x']['peak_mib']:.0f} MiB, "
                          f"10x inputs {mem['10x']['peak_mib']:.0f} MiB")
        if "steering" in only:
            res["steering"] = steering_rows(model, new_tokens=args.new_tokens, repeats=args.repeats)
            save()
            if not args.json:
                print(f"\n## steered generation, {size} on {args.device}: batch 4, {args.new_tokens} new tokens, "
                      "add at one layer every step\n")
                print(_table(res["steering"]))
    if "hybrid" in only:
        from lens import load_model

        pair = args.hybrid_pair or ("organism" if args.device == "cpu" else args.sizes.split(",")[0])
        try:
            if pair != "organism":
                raise LookupError(pair)
            base, thinking = load_model("organism:base"), load_model("organism:thinking")
            base.hf.to(args.device)
            thinking.hf.to(args.device)
            label = "organism base + thinking"
        except Exception:  # noqa: BLE001 - a random pair of the named shape (tiny if none)
            size = pair if pair in SIZES and pair != "smollm2" else "tiny"
            base, thinking = bench_model(size, args.device, dtype), bench_model(size, args.device, dtype, seed=1)
            label = f"random pair, {size} shape, on {args.device}"
        from lens.studies.organism_inputs import heldout

        prompts = heldout(16)[0] if label.startswith("organism") else ["Q:47+38+26=?\n"] * 16
        configs = None
        if label.startswith("organism"):
            configs = {**organism_configs(base, thinking), **random_configs(base)}
        results["hybrid"] = {"pair": label, "rows": hybrid_rows(base, thinking, prompts, new_tokens=args.hybrid_tokens,
                                                                repeats=args.repeats, configs=configs,
                                                                each_prompts=args.hybrid_ref_prompts)}
        if not args.json:
            print(f"\n## hybrid, {label}: 16 prompts, {args.hybrid_tokens} new tokens each\n")
            print(_table(results["hybrid"]["rows"]))
    results["complete"] = True
    save()
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
