"""Synthetic inputs for the dashboards (tests, the build benchmark, a look at the layout without models)."""

from __future__ import annotations

import numpy as np
import torch

from .features import feature_data


def synthetic_results(seed: int = 0) -> dict:
    """A results dict shaped like ``lens reproduce``'s ``results.json``, with made-up numbers."""
    rng = np.random.default_rng(seed)
    ks = [1, 2, 4, 8, 16]

    def est(v, w=0.05):
        return {"value": v, "lo": max(0.0, v - w), "hi": min(1.0, v + w), "n": 50}

    base = {k: est(min(1, 0.3 + 0.15 * np.log2(k))) for k in ks}
    think = {k: est(min(1, 0.6 + 0.07 * np.log2(k))) for k in ks}
    runs = {ab: {"accuracy": est(a), "gap_recovered": g, "gap_ci": [max(0, g - 0.1), g + 0.1],
                 "fraction_steered": s, "fraction_gated": s * 1.5, "category_use": {"computation": 10, "backtrack": 2}}
            for ab, a, g, s in [("none", 0.55, 0.8, 0.12), ("bias_only", 0.4, 0.3, 0.2),
                                ("random_category", 0.45, 0.5, 0.15), ("random_vector", 0.32, 0.05, 0.2),
                                ("no_guardrail", 0.2, 0.0, 0.3)]}
    layers = [{"site": f"blocks.{i}.hook_resid_post", "auroc": 0.5 + 0.1 * i, "auroc_train": 0.55 + 0.1 * i,
               "norm": 1.0 + i, "n_pos": 64, "n_neg": 64} for i in range(5)]
    return {
        "meta": {"base": "organism:base", "thinking": "organism:thinking", "tasks": "organism", "seed": seed},
        "tables": [{"title": "1. sampling", "rows": [{"metric": "pass@1 base", "this run": 0.3, "paper": "61.4"}]}],
        "sampling": {"status": "ok", "n": 50, "samples": 16, "pass_at_k": {"base": base, "thinking": think},
                     "reflection_at_k": {"base": {k: 0.05 * k ** 0.5 for k in ks}},
                     "behaviour": {"base": {"thinking_rate": 0.2, "reflection_rate": 0.03, "accuracy": 0.3},
                                   "thinking": {"thinking_rate": 0.99, "reflection_rate": 0.1, "accuracy": 0.6}}},
        "hybrid": {"status": "ok", "n": 50, "site": "blocks.2.hook_resid_post", "base": est(0.3),
                   "thinking": est(0.6), "runs": runs},
        "diff": {"status": "ok", "separability": layers,
                 "activations": [{"site": r["site"], "cosine_with_direction": 0.2 * i, "relative": 0.1}
                                 for i, r in enumerate(layers)],
                 "weights": [{"group": f"layer {i:02d}", "relative_change": 0.01 * (i + 1),
                              "fraction_changed": 0.2, "parameters": 1000} for i in range(5)]},
        "cot": {"status": "ok", "k": 10, "n": 50, "greedy": est(0.3), "cot": est(0.42), "cot_sum": est(0.45),
                "confidences": {"reasoning": rng.beta(5, 2, 200).tolist(),
                                "non_reasoning": rng.beta(2, 3, 300).tolist()},
                "by_reasoning": {"reasoning": {"n": 200, "mean_confidence": 0.7, "share_of_best": 0.8},
                                 "non_reasoning": {"n": 300, "mean_confidence": 0.4, "share_of_best": 0.2},
                                 "greedy_reasoning_rate": 0.2}},
        "feature": {"status": "ok", "site": "blocks.2.hook_resid_post",
                    "sae": {"path": "saes/x", "architecture": "topk", "d_sae": 1024,
                            "evals": {"explained_variance": 0.85, "l0": 12.0, "dead_fraction": 0.03,
                                      "spliced": {"ce_recovered": 0.9, "kl_recovered": 0.88}}},
                    "ranking": [{"feature": f, "mean_diff": 1.0 / (f + 1), "auroc": 0.9 - 0.02 * f, "freq_pos": 0.5,
                                 "freq_neg": 0.1, "effect_size": 2.0 / (f + 1)} for f in range(12)],
                    "steer_check": [{"kind": "baseline", "feature": None, "alpha": 0.0, "accuracy": 0.3,
                                     "reasoning_rate": 0.1},
                                    {"kind": "reference", "feature": None, "alpha": 0.0, "accuracy": 0.8,
                                     "reasoning_rate": 0.95, "model": "organism:thinking"}]
                    + [{"kind": "random" if f >= 100 else "feature", "feature": f, "alpha": a, "accuracy": acc,
                        "reasoning_rate": acc, "tokens_mean": 30}
                       for f in (0, 101) for a in (5, 10, 20) for acc in [0.3 + (0.02 * a if f == 0 else 0.0)]]},
    }


def synthetic_features(n_features: int = 8, n_seq: int = 64, seq_len: int = 48, vocab_size: int = 60,
                       d_model: int = 32, seed: int = 0, **kwargs) -> list[dict]:
    """Feature dashboard data from random sparse activations over random character sequences."""
    g = torch.Generator().manual_seed(seed)
    vocab = [chr(ord("a") + i % 26) if i % 7 else " " for i in range(vocab_size)]
    vocab[1] = "\n"
    ids = torch.randint(0, vocab_size, (n_seq, seq_len), generator=g)
    mask = torch.ones(n_seq, seq_len, dtype=torch.bool)
    mask[: n_seq // 4, seq_len * 3 // 4 :] = False
    acts = torch.relu(torch.randn(n_seq, seq_len, n_features, generator=g) * 2 - 2.5)
    dec = torch.randn(n_features, d_model, generator=g)
    wu = torch.randn(d_model, vocab_size, generator=g)
    return feature_data(acts, ids, mask, vocab, list(range(n_features)), decoder=dec, unembed=wu, seed=seed,
                        **kwargs)
