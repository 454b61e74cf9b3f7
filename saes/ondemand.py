"""An SAE trained on demand on a model's own captures of a text set, cached in the user cache.

`lens reproduce` off the bundled organism uses it for the feature step when no ``--sae`` is given
(the organism's own SAE is `lens.studies.find_feature_organism.organism_sae`): a small TopK SAE on the base model's
residual stream (output of one layer) over every token of the task texts, trained once and kept in
``lens.artifacts.cache_dir()/saes/<name>-<model fingerprint>-L<layer>-<architecture>-<hash>``, where
the hash covers the settings and the texts: the same model, layer, settings and texts reuse it.
What it was trained on is written into the SAE's ``lens.json`` (``trained_on``) and returned.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence

from lens.artifacts import cache_dir

from .config import TrainConfig
from .io import Dictionary, load_sae, update_meta

#: small enough for the reproduce budget on 2 CPU cores (SmolLM2-135M: d_in 576 -> 2304 latents, ~120 steps)
REPRODUCE_SAE = TrainConfig(architecture="topk", expansion=4, k=16, total_rows=60_000, batch_size=512,
                            buffer_rows=16_384, lr=1e-3, checkpoint_every=0, seed=0)


SELECT = "from:1"  # every token but each text's first


def texts_key(texts: Sequence[str], cfg: TrainConfig) -> str:
    """A short hash of the settings and the texts (the cache folder's last part)."""
    h = hashlib.sha256(json.dumps({**cfg.to_json(), "select": SELECT}, sort_keys=True).encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()[:10]


def sae_on_texts(model, texts: Sequence[str], layer: int, cfg: TrainConfig = REPRODUCE_SAE, *,
                 name: str = "reproduce", describe: dict | None = None, n_eval: int = 32,
                 say=lambda _m: None) -> tuple[Dictionary, dict]:
    """(the SAE, what it is): the cached SAE of `model` at ``blocks.<layer>.hook_resid_post`` trained on
    every token but the first of each of `texts` (``from:1``: the first token's residual, tens of
    times the others' norm, would dominate the loss), training it the first time (capture in the
    cache folder, train, evaluate on the first `n_eval` texts, then drop the capture).

    describe: what the texts are, recorded with the SAE (e.g. ``{"tasks": ..., "kinds": [...]}``).
    The record: ``kind`` "trained", ``path``, ``site``, ``layer``, ``cached`` (found, not trained now),
    ``config`` (the TrainConfig), ``texts`` (count, tokens, hash, `describe`).
    """
    from lens.capture_folder import capture_to_disk

    from .evals import evaluate
    from .train import train_sae

    texts = list(texts)
    site = f"blocks.{layer}.hook_resid_post"
    key = texts_key(texts, cfg)
    out = cache_dir() / "saes" / f"{name}-{model.fingerprint}-L{layer}-{cfg.architecture}-{key}"
    done = (out / "sae" / "cfg.json").exists() and not (out / "sae" / "checkpoints").exists()
    if done:
        d = load_sae(out / "sae", model, site)
        trained = d.meta.get("trained_on")
    else:
        d = None
    if d is None or not trained:
        say(f"training an SAE at {site} on {len(texts)} texts (cached in {out})")
        folder = capture_to_disk(model, texts, [site], SELECT, batch_size=32, out=out / "capture", progress=False)
        n_rows = folder.n_rows
        res = train_sae(folder, out / "sae", cfg, site=site, model=model.facts(), progress=False)
        d = load_sae(res.path, model, site)
        if not d.meta.get("evals"):
            evaluate(d, folder, model=model, texts=texts[:n_eval])
        trained = {"texts": len(texts), "tokens": n_rows, "select": SELECT, "sha256": key, **(describe or {})}
        update_meta(d.path, trained_on=trained)
        d.meta["trained_on"] = trained
        shutil.rmtree(out / "capture", ignore_errors=True)  # rows are cheap to capture again; keep the cache small
        done = False
    record = {"kind": "trained", "path": str(d.path), "site": site, "layer": layer, "cached": done,
              "model": getattr(model, "spec", None), "fingerprint": getattr(model, "fingerprint", None),
              "config": cfg.to_json(), "texts": trained}
    return d, record
