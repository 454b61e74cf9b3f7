"""Benchmark: report build time per 100 features (vectorised feature data + pages + HTML), vs a per-token loop.

    python benchmarks/dashboards.py [--features 100,300] [--seqs 256] [--seq-len 128] [--json]

Synthetic SAE activations (sparse ReLU of Gaussians) over random token sequences, a random decoder
and unembedding (d_model 512, vocab 32k). Timed in the same run:
- lens: ``feature_data`` (histograms, contexts by band, top logits for all features at once),
  ``feature_page`` for each feature, ``Report.render`` (one HTML, plotly.js once);
- naive: the per-feature, per-token Python loop that dashboard builders are criticised for
  (histogram, sort, and an HTML span built per context token), for the same outputs.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def synthetic(n_features: int, n_seq: int, seq_len: int, d_model: int = 512, vocab: int = 32000, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    acts = torch.relu(torch.randn(n_seq, seq_len, n_features, generator=g) * 2 - 3)
    ids = torch.randint(0, vocab, (n_seq, seq_len), generator=g)
    mask = torch.ones(n_seq, seq_len, dtype=torch.bool)
    dec = torch.randn(n_features, d_model, generator=g)
    wu = torch.randn(d_model, vocab, generator=g)
    words = [f"tok{i}" for i in range(vocab)]
    return acts, ids, mask, words, dec, wu


def build_lens(acts, ids, mask, words, dec, wu) -> tuple[dict, int]:
    from lens.dashboards import Report, feature_data, feature_page

    t0 = time.perf_counter()
    data = feature_data(acts, ids, mask, words, decoder=dec, unembed=wu)
    t1 = time.perf_counter()
    rep = Report("bench")
    for d in data:
        feature_page(rep, d)
    t2 = time.perf_counter()
    page = rep.render()
    t3 = time.perf_counter()
    return {"data_s": t1 - t0, "pages_s": t2 - t1, "render_s": t3 - t2, "total_s": t3 - t0}, len(page)


def build_naive(acts, ids, mask, words, dec, wu, per_band: int = 4, window: tuple[int, int] = (16, 4)) -> float:
    """One feature at a time, one token at a time (the slow pattern)."""
    t0 = time.perf_counter()
    n_seq, seq_len, n_feat = acts.shape
    a_np, id_np = acts.numpy(), ids.numpy()
    out = []
    for f in range(n_feat):
        col = a_np[:, :, f]
        vals = []
        for s in range(n_seq):
            for p in range(seq_len):
                if col[s, p] > 0:
                    vals.append((col[s, p], s, p))
        vals.sort(reverse=True)
        hist = np.histogram([v[0] for v in vals], bins=40)[0] if vals else []
        spans = []
        for _v, s, p in vals[:per_band * 5]:
            row = []
            for q in range(max(0, p - window[0]), min(seq_len, p + window[1] + 1)):
                alpha = col[s, q] / vals[0][0]
                tok = html.escape(words[id_np[s, q]])
                row.append(f'<span style="background:rgba(230,85,13,{alpha:.3f})">{tok}</span>')
            spans.append("".join(row))
        eff = dec[f] @ wu
        top = [words[i] for i in eff.topk(10).indices.tolist()]
        out.append((hist, spans, top))
    return time.perf_counter() - t0


def report_build_rows(features=(100, 300), seqs: int = 256, seq_len: int = 128, naive: int = 100) -> dict:
    """Rows {features, tokens, data_s, pages_s, render_s, total_s, per_100_features_s, html_mb} plus the naive loop."""
    rows = []
    for nf in features:
        times, size = build_lens(*synthetic(int(nf), seqs, seq_len))
        rows.append({"features": int(nf), "tokens": seqs * seq_len, **{k: round(v, 3) for k, v in times.items()},
                     "per_100_features_s": round(times["total_s"] / int(nf) * 100, 3),
                     "html_mb": round(size / 1e6, 2)})
    naive_s = build_naive(*synthetic(naive, seqs, seq_len)) / naive * 100
    return {"threads": torch.get_num_threads(), "rows": rows, "naive_per_100_features_s": round(naive_s, 3),
            "speedup_vs_naive": round(naive_s / max(rows[0]["per_100_features_s"], 1e-9), 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", default="100,300")
    ap.add_argument("--seqs", type=int, default=256)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--naive", type=int, default=100, help="features for the naive loop (timed, scaled per 100)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("LENS_BENCH_THREADS", "2")))
    result = report_build_rows([int(x) for x in args.features.split(",")], args.seqs, args.seq_len, args.naive)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    rows = result["rows"]
    keys = list(rows[0])
    print(f"\n## report build, {args.seqs} x {args.seq_len} tokens, {result['threads']} threads\n")
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    print(f"\nnaive per-feature/per-token loop: {result['naive_per_100_features_s']:.2f} s per 100 features "
          f"(lens {rows[0]['per_100_features_s']:.2f} s: {result['speedup_vs_naive']}x)")


if __name__ == "__main__":
    main()
