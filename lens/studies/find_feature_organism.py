"""`lens find-feature` on the bundled organism: train (or reuse) an SAE, rank, steer-check.

`run_find_feature_organism()` is the whole first-step feature experiment (finding 5) on the organism:
1. the SAE: given, or loaded from / trained into the user cache
   (`$LENS_CACHE` or the platform cache dir, `reasoning-lens/saes/organism-<fingerprint>-L<layer>-...`):
   a TopK SAE on the base model's residual (output of the middle layer) over every token of a
   fresh sample of the organism's mixed corpus (direct and thinking documents);
2. the contrast "continuation reasons vs answers directly": the same problems with the think
   marker T vs the direct marker D, read at the last prompt token (the first-step position);
3. the ranking (mean difference, AUROC, frequencies, effect size);
4. the steer-check on unmarked held-out prompts: each top feature added at the last prompt token
   only (position P-1, the forward that produces the first generated token), alpha swept, vs random
   features and vs the thinking model unsteered.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from lens.artifacts import cache_dir
from lens.errors import LensError
from saes.config import TrainConfig
from saes.io import Dictionary, load_sae
from saes.search import prompt_rows, rank_features

ORGANISM_SAE = TrainConfig(architecture="topk", expansion=8, k=8, total_rows=200_000, batch_size=1024,
                           buffer_rows=65_536, lr=1e-3, checkpoint_every=100, seed=0)


def corpus_texts(n_docs: int = 4000, seed: int = 2024) -> list[str]:
    """A fresh sample of the organism's training distribution (held-out questions excluded)."""
    from lens.organism import corpus as C
    from lens.organism import load_heldout

    held = {r.get("expression", "") for r in load_heldout()}
    return [doc.text for doc in C.generate_corpus(n_docs, seed=seed, exclude=held)]


def train_on_texts(model, texts: Sequence[str], site: str, out: Path, cfg: TrainConfig = ORGANISM_SAE, *,
                   select: str = "all", progress: bool = True, eval_texts: Sequence | None = None) -> Dictionary:
    """Capture `site` over `texts` into `out/capture`, train into `out/sae`, evaluate; return the SAE.

    The spliced CE/KL evals run on `eval_texts` (default: the first 256 texts).
    """
    from lens.capture_folder import capture_to_disk
    from saes.evals import evaluate
    from saes.train import train_sae

    folder = capture_to_disk(model, list(texts), [site], select, batch_size=64, out=out / "capture", progress=progress)
    res = train_sae(folder, out / "sae", cfg, site=site, model=model.facts(), progress=progress)
    d = load_sae(res.path, model, site)
    if not d.meta.get("evals"):
        evaluate(d, folder, model=model, texts=list(texts)[:256] if eval_texts is None else list(eval_texts))
    return d


def organism_sae(model, layer: int, cfg: TrainConfig = ORGANISM_SAE, progress: bool = True) -> Dictionary:
    """The cached organism SAE for `model` at `layer`, training it the first time."""
    site = f"blocks.{layer}.hook_resid_post"
    tag = hashlib.sha256(json.dumps(cfg.to_json(), sort_keys=True).encode()).hexdigest()[:8]
    out = cache_dir() / "saes" / f"organism-{model.fingerprint}-L{layer}-{cfg.architecture}-{tag}"
    if (out / "sae" / "cfg.json").exists() and not (out / "sae" / "checkpoints").exists():
        return load_sae(out / "sae", model, site)
    return train_on_texts(model, corpus_texts(), site, out, cfg, progress=progress)


def _alive(d: Dictionary, rows: torch.Tensor) -> list[int]:
    return torch.nonzero((d.encode(rows) != 0).any(0)).flatten().tolist()


def run_find_feature_organism(
    model=None,
    *,
    sae: str | Path | Dictionary | None = None,
    layer: int | None = None,
    steer_check: bool = True,
    n: int = 100,
    n_contrast: int = 256,
    alphas: Sequence[float] | None = None,
    top: int = 5,
    n_random: int = 3,
    max_new_tokens: int = 110,
    reference=True,
    where=None,
    behaviour=None,
    progress: Callable[[str], None] | None = None,
    exact_limit: int = 1 << 24,
) -> dict:
    """Rank SAE features for "reasons vs answers directly" on the organism and steer-check the top ones.

    model: a loaded `Model` or spec (default `organism:base`). sae: a folder / Dictionary (default:
    trained or found in the cache at `layer`, default the middle layer). alphas: absolute
    strengths (the decoder rows are unit norm); default (0.25, 0.5, 1, 2) x the mean residual norm at
    the site on the held-out prompts' last token. reference: True loads `organism:thinking` as the
    unsteered reference (skipped if missing), a Model uses it, False skips it.
    where: the steered position (`Where.first_step()` = the last prompt token, P-1, by default; or
    `Where.first_generated_token()`, P). behaviour: a detector (completion text -> bool) counted as the
    rows' `reasoning_rate` instead of the organism's thinking-format detector. exact_limit: as in
    `saes.search.rank_features`.
    Returns a JSON-ready dict: ranking, steer_check, summary, sae, site, contrast, alphas.
    """
    from lens.models import Model, load_model
    from lens.organism import corpus as C
    from saes import steer_check as S

    from . import organism_inputs as O

    say = progress or (lambda _m: None)
    base = model if isinstance(model, Model) else load_model(model or "organism:base")
    if isinstance(sae, (str, Path)):
        d = load_sae(sae, base)
    elif isinstance(sae, Dictionary):
        d = sae
        d.check(base, d.site)
    else:
        layer = base.n_layers // 2 if layer is None else layer
        say(f"SAE at layer {layer} (cached or trained)")
        d = organism_sae(base, layer, progress=progress is not None)
    if d.site is None:
        raise LensError("the SAE does not record its site; save it with lens metadata or pass one that does")
    site = d.site
    say("ranking features: think marker T vs direct marker D, last prompt token")
    pos, neg = O.marker_contrast(n_contrast)
    ranking = rank_features(d, prompt_rows(base, pos, site), prompt_rows(base, neg, site), exact_limit=exact_limit)
    out: dict = {
        "site": site,
        "contrast": {"pos": "prompts marked T (think)", "neg": "same problems marked D (direct)",
                     "select": "last_prompt", "n_pos": ranking.n_pos, "n_neg": ranking.n_neg},
        "ranking": ranking.as_dicts(top=max(20, top)),
        "ranking_throughput": {"rows_x_features_per_s": ranking.throughput, "seconds": ranking.seconds},
        "sae": {**d.describe(), "evals": d.meta.get("evals")},
    }
    if not steer_check:
        return out
    prompts, answers = O.heldout(n)
    last = torch.cat(list(prompt_rows(base, prompts, site)))
    norm = float(last.norm(dim=-1).mean())
    alphas = list(alphas) if alphas is not None else [round(f * norm, 3) for f in (0.25, 0.5, 1.0, 2.0)]
    ref = None
    if reference is True:
        try:
            ref = load_model("organism:thinking")
        except LensError:
            ref = None
    elif isinstance(reference, Model):
        ref = reference
    neutral = set(ranking.neutral())  # controls must not be features that separate T from D themselves
    alive = _alive(d, torch.cat([last, torch.cat(list(prompt_rows(base, pos, site)))]))
    pool, pool_kind = S.control_pool(alive, sorted(neutral), ranking.features[:top], n_random)
    rows = S.steer_check(base, d, ranking.features[:top], prompts, O.checker(answers), alphas=alphas,
                         n_random=n_random, random_pool=pool, is_reasoning=behaviour or C.is_thinking,
                         max_new_tokens=max_new_tokens, batch_size=64, reference=ref, progress=say, where=where)
    out.update({"steer_check": rows, "summary": S.summarize(rows), "alphas": alphas, "resid_norm": norm,
                "n_heldout": len(prompts), "random_pool": pool_kind})
    return out
