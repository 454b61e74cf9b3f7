"""Benchmark: CoT-decoding with k batched branches on a shared prompt cache vs a sequential loop of k generations.

    python benchmarks/cot_decoding.py [--k 10] [--max-new-tokens 32] [--prompts 4] [--json-out PATH]

Prints one row per model: the tiny random Llama always, and ``organism:base`` when it is built.
Both paths are timed in the same run, after one warm-up call each; the table also says whether
they agree (same branch tokens for every prompt).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from benchmarks.record import add_json_out, write_json  # noqa: E402
from lens.decoding.cot import cot_decode, cot_decode_reference  # noqa: E402


def bench_cot(
    model: Any,
    prompts: Sequence[str],
    k: int = 10,
    max_new_tokens: int = 48,
    *,
    extractor: str = "auto",
    batch_size: int = 80,
    repeats: int = 1,
    answer_prompt: Any = "default",
) -> dict:
    """Time batched CoT-decoding against the sequential reference on the same prompts.

    answer_prompt: passed to both when given (None for a tokenizer that cannot spell cot_decode's default).
    Returns seconds for each (best of ``repeats``, after a warm-up), the ratio, branches/s and
    whether both produced the same branch tokens for every prompt.
    """
    kw: dict[str, Any] = {} if answer_prompt == "default" else {"answer_prompt": answer_prompt}
    warm = list(prompts[:1])
    cot_decode(model, warm, k=k, max_new_tokens=4, extractor=extractor, **kw)
    cot_decode_reference(model, warm, k=min(k, 2), max_new_tokens=4, extractor=extractor, **kw)
    t_batched, t_seq = float("inf"), float("inf")
    fast = slow = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        fast = cot_decode(model, prompts, k=k, max_new_tokens=max_new_tokens, extractor=extractor,
                          batch_size=batch_size, **kw)
        t_batched = min(t_batched, time.perf_counter() - t0)
        t0 = time.perf_counter()
        slow = cot_decode_reference(model, prompts, k=k, max_new_tokens=max_new_tokens, extractor=extractor, **kw)
        t_seq = min(t_seq, time.perf_counter() - t0)
    assert fast is not None and slow is not None
    same = all(
        [b.token_ids for b in f.branches] == [b.token_ids for b in s.branches]
        for f, s in zip(fast, slow, strict=True)
    )
    n_branches = len(prompts) * k
    new_tokens = sum(b.n_new_tokens for r in fast for b in r.branches)
    return {
        "model": getattr(model, "spec", "?"),
        "prompts": len(prompts),
        "k": k,
        "max_new_tokens": max_new_tokens,
        "batched_s": t_batched,
        "sequential_s": t_seq,
        "speedup": t_seq / t_batched,
        "batched_branches_per_s": n_branches / t_batched,
        "new_tokens": new_tokens,
        "same_branches": same,
        "threads": torch.get_num_threads(),
    }


def _organism_prompts(n: int) -> list[str]:
    import random

    rng = random.Random(0)
    return [f"Q:{'+'.join(str(rng.randint(10, 99)) for _ in range(rng.randint(3, 5)))}=?\n" for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: two threads on two shared cores oversubscribe them and the "
                         "timings then measure the contention)")
    add_json_out(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from lens.tiny import tiny_model

    rows = []
    tiny = tiny_model("llama", n_layers=4, d_model=128)
    plain = [f"Q: {a}+{b}=?\nA:" for a, b in zip(range(11, 99, 7), range(23, 99, 5), strict=False)][: args.prompts]
    rows.append(bench_cot(tiny, plain, args.k, args.max_new_tokens, extractor="last_number"))
    try:
        from lens.models import load_model

        org = load_model("organism:base")
    except Exception as e:  # noqa: BLE001 - the organism may not be built yet
        print(f"organism:base not available ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    else:
        rows.append(bench_cot(org, _organism_prompts(args.prompts), args.k, args.max_new_tokens, extractor="organism",
                              answer_prompt=None))  # its character vocabulary has no "\n" + prose prompt
    cols = ["model", "prompts", "k", "max_new_tokens", "batched_s", "sequential_s", "speedup", "same_branches",
            "threads"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = [f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        print("| " + " | ".join(cells) + " |")
    if args.json_out:
        write_json(args.json_out, {"rows": rows})


if __name__ == "__main__":
    main()
