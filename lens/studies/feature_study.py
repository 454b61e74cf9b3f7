"""Finding 5 (He et al. 2601.08058): one SAE feature, added at the last prompt token (the forward that makes
the first generated token), triggers reasoning.

On the organism this calls the SAE helper's ``run_find_feature_organism`` (SAE trained or reused
from the cache, T-vs-D ranking, first-step steer-check with random controls). With an SAE of
another model (``sae=``), the same ranking and steer-check run on chain-of-thought vs
direct-answer instructions. Either way the top features also get dashboard data
(:func:`feature_dashboards`). When ``saes`` cannot be imported the step is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..capture_memory import capture
from ..dashboards.features import dense_from_rows, feature_data
from ..models import Model

TIMING_KEYS = ("ranking_throughput",)


def _find_fn():
    """The organism experiment (``saes.search`` or ``lens.studies.find_feature_organism``), or (None, reason)."""
    errors = []
    for mod in ("saes.search", "lens.studies.find_feature_organism"):
        try:
            module = __import__(mod, fromlist=["run_find_feature_organism"])
        except ImportError as e:
            errors.append(f"{mod}: {e}")
            continue
        fn = getattr(module, "run_find_feature_organism", None)
        if fn is not None:
            return fn, ""
        errors.append(f"{mod} has no run_find_feature_organism")
    return None, "; ".join(errors)


def run_organism(base: Model, *, layer: int | None, n: int, n_contrast: int, top: int, n_random: int,
                 alphas: Sequence[float] | None, max_new_tokens: int,
                 reference: Model | None, say: Callable[[str], None]) -> dict:
    fn, why = _find_fn()
    if fn is None:
        return {"status": "skipped", "reason": f"the SAE step needs saes.run_find_feature_organism ({why})"}
    res = fn(base, layer=layer, steer_check=True, n=n, n_contrast=n_contrast, alphas=alphas, top=top,
             n_random=n_random, max_new_tokens=max_new_tokens,
             reference=reference if reference is not None else False, progress=say)
    return {"status": "ok", **res}


def run_generic(base: Model, sae: str, prompts: Sequence[str], is_correct: Callable[[int, str], bool],
                think_prompts: Sequence[str], direct_prompts: Sequence[str], *, top: int, n_random: int,
                alphas: Sequence[float] | None, max_new_tokens: int, reference: Model | None,
                say: Callable[[str], None]) -> dict:
    """Ranking (CoT vs direct instruction, last prompt token) and first-step steer-check with any SAE."""
    try:
        from saes import steer_check as S
        from saes.io import load_sae
        from saes.search import prompt_rows, rank_features
    except ImportError as e:
        return {"status": "skipped", "reason": f"the SAE step needs the saes package ({e})"}
    d = load_sae(sae, base)
    site = d.site
    say(f"ranking {d.d_sae} features at {site}")
    ranking = rank_features(d, prompt_rows(base, think_prompts, site), prompt_rows(base, direct_prompts, site))
    last = torch.cat(list(prompt_rows(base, prompts, site)))
    norm = float(last.norm(dim=-1).mean())
    alphas = list(alphas) if alphas is not None else [round(f * norm, 3) for f in (0.5, 1.0, 2.0, 4.0)]
    neutral = set(ranking.neutral())  # random controls never drawn from features that separate the prompts
    alive = torch.nonzero((d.encode(last) != 0).any(0)).flatten().tolist()
    pool, pool_kind = S.control_pool(alive, sorted(neutral), ranking.features[:top], n_random)
    rows = S.steer_check(base, d, ranking.features[:top], prompts, is_correct, alphas=alphas, n_random=n_random,
                         random_pool=pool, max_new_tokens=max_new_tokens, reference=reference, progress=say)
    return {"status": "ok", "site": site, "ranking": ranking.as_dicts(top=max(20, top)), "steer_check": rows,
            "summary": S.summarize(rows), "alphas": alphas, "resid_norm": norm, "random_pool": pool_kind,
            "sae": {**d.describe(), "evals": d.meta.get("evals")},
            "contrast": {"pos": "chain-of-thought instruction", "neg": "direct-answer instruction",
                         "select": "last_prompt"}}


#: the tokens the dashboards and evaluations read: every one but each text's first, whose residual (an attention
#: sink, tens of times the others' norm) lens's own SAEs are not trained on and whose activations would top every page
ROWS = "from:1"


def vocab_strings(model: Model) -> list[str]:
    """The text of every token id (special tokens kept)."""
    ids = [[i] for i in range(model.vocab_size)]
    return model.tokenizer.batch_decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def feature_dashboards(base: Model, sae_path: str, features: Sequence[int], texts: Sequence[str], *,
                       batch_size: int = 32, seed: int = 0) -> list[dict]:
    """Dashboard data of ``features``: SAE activations over every token but the first of ``texts`` at the SAE's
    site.

    The output-token effect is ``W_dec[f] @ W_U`` (the final norm is ignored, as in SAEDashboard).
    """
    from saes.io import load_sae

    d = load_sae(sae_path, base)
    feats = [int(f) for f in features]
    acts = capture(base, list(texts), [d.site], ROWS, batch_size=batch_size, progress=False)
    z = d.encode(acts[d.site].float())[:, feats]
    n_seq = int(acts.example.max()) + 1
    seq_len = int(acts.start.max()) + 1
    dense = dense_from_rows(z, acts.example, acts.start, n_seq, seq_len)
    ids = torch.zeros(n_seq, seq_len, dtype=torch.long)
    ids[acts.example, acts.start] = acts.token_id
    mask = torch.zeros(n_seq, seq_len, dtype=torch.bool)
    mask[acts.example, acts.start] = True
    dec = d.sae.W_dec[feats].detach().float().cpu()
    wu = base.hf.get_output_embeddings().weight.detach().float().cpu().T  # the pages are built on the host
    return feature_data(dense, ids, mask, vocab_strings(base), feats, decoder=dec, unembed=wu, seed=seed)


def sae_evals(base: Model, sae_path: str, texts: Sequence[str], n_spliced: int = 64) -> dict:
    """Explained variance, L0, dead/dense fractions over every token but the first of ``texts``, and CE/KL recovered
    with the SAE spliced in on the first ``n_spliced`` texts (for SAEs saved without evaluations)."""
    from saes.evals import evaluate
    from saes.io import load_sae

    d = load_sae(sae_path, base)
    rows = capture(base, list(texts), [d.site], ROWS, batch_size=32, progress=False)[d.site].float()
    out = evaluate(d, rows, model=base, texts=list(texts)[:n_spliced], save=False)
    out["source"] = f"computed by lens reproduce on {len(texts)} texts ({rows.shape[0]} tokens)"
    return out


def write_feature_pages(base: Model, sae_path: str, ranking: Sequence[dict], texts: Sequence[str], out: str,
                        *, steer_check: Sequence[dict] = (), title: str = "lens find-feature",
                        seed: int = 0) -> dict[int, str]:
    """One dashboard page per ranked feature in ``out/index.html``; returns feature -> ``index.html#feature-N``.

    ranking: rows of :meth:`saes.search.Ranking.as_dicts` (shown in each page's header); steer_check:
    rows of the steer-check, drawn as each feature's steering sweep next to the random controls.
    """
    from pathlib import Path

    from ..dashboards.experiments import steer_rows
    from ..dashboards.features import feature_page
    from ..dashboards.report import Report

    feats = [int(r["feature"]) for r in ranking]
    data = feature_dashboards(base, sae_path, feats, texts, seed=seed)
    report = Report(title=title, meta={"model": base.spec, "sae": str(sae_path), "n_texts": len(texts)})
    sweeps = steer_rows(steer_check) if steer_check else []
    rows = {int(r["feature"]): r for r in ranking}
    for d in data:
        f = int(d["feature"])
        mine = [r for r in sweeps if r.get("feature") == f or r.get("random") or r.get("feature") is None]
        feature_page(report, d, steer_rows=mine if any(r.get("feature") == f for r in mine) else None,
                     extra=rows.get(f))
    path = report.write(Path(out))
    return {f: f"{path}#feature-{f}" for f in feats}
