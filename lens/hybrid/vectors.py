"""The hybrid's bias and category vectors: difference of means or optimised, saved as direction artifacts.

Two methods, as in the hybrid paper (Venhoff et al., arXiv 2510.07364):

* ``means`` (its second version): one-vs-rest means of the base's residual over each category's steps and a
  think-vs-direct difference of means for the bias (`lens.hybrid.study.category_vectors`);
* ``optimised`` (its first version): a bias vector trained on every step, then one vector per category with
  the bias held fixed, each so that the base, with the vector added from the token before the step through
  the step, predicts the thinking model's step given the trace before it (`lens.directions.optimise`).

`vectors_folder` keeps them as direction artifacts (``bias/``, ``category-<i>/``, and ``vectors.json``
naming the method, site, base model and categories), so later runs on the same base, site and categories
load them instead of deriving them again.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch

from ..artifacts import base_metadata, read_json, write_json
from ..directions.artifact import Direction, load_direction
from ..errors import LensError
from ..models import Model
from ..outputs import atomic_folder, check_output, writer_lock

METHODS = ("means", "optimised")
MANIFEST = "vectors.json"


def step_pairs(traces: Sequence[dict], labels: Sequence[str] | None = None, *, max_pairs: int = 200,
               seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """(trace before the step, the step's text) per category; at most `max_pairs` per category (seeded draw).

    traces: {"prompt", "completion", "spans": [[start, end, label], ...]} with spans indexing prompt +
    completion; labels: one per span in order, replacing the spans' own."""
    n_spans = sum(len(tr["spans"]) for tr in traces)
    if labels is not None and len(labels) != n_spans:
        raise LensError(f"{len(labels)} step labels for {n_spans} labelled steps")
    out: dict[str, list[tuple[str, str]]] = {}
    k = 0
    for tr in traces:
        full = tr.get("text") or (tr.get("prompt", "") + tr.get("completion", ""))
        for start, end, lab in tr["spans"]:
            name = lab if labels is None else labels[k]
            k += 1
            if start > 0 and end > start:
                out.setdefault(name, []).append((full[:start], full[start:end]))
    rng = random.Random(seed)
    return {c: (rng.sample(ps, max_pairs) if len(ps) > max_pairs else ps) for c, ps in sorted(out.items())}


def optimised_vectors(
    base: Model,
    traces: Sequence[dict],
    site: str,
    step_labels: Sequence[str] | None = None,
    *,
    steps: int = 60,
    lr: float = 0.05,
    batch_size: int = 16,
    max_pairs: int = 200,
    seed: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
    """(bias, {category: vector}, info) optimised on the base at `site` (the paper's first version)."""
    from ..directions.optimise import optimise_category_vectors

    pairs = step_pairs(traces, step_labels, max_pairs=max_pairs, seed=seed)
    if not pairs:
        raise LensError("no labelled steps to optimise category vectors on")
    bias, cats = optimise_category_vectors(base, pairs, site, steps=steps, lr=lr, batch_size=batch_size, seed=seed)
    info = {"method": "optimised", "steps": steps, "lr": lr, "n_pairs": {c: len(p) for c, p in pairs.items()},
            "loss": {d.name: [d.info["loss_before"], d.info["loss_after"]] for d in [bias, *cats.values()]},
            "bias_norm": bias.norm, "category_norms": {c: d.norm for c, d in cats.items()}}
    return bias.vector, {c: d.vector for c, d in cats.items()}, info


def save_vectors(folder: str | Path, base: Model, site: str, method: str, bias: torch.Tensor,
                 categories: dict[str, torch.Tensor], info: dict) -> None:
    """Write the vectors as direction artifacts under `folder` (new or empty) with a manifest."""
    folder = Path(folder)
    check_output(folder, "vectors", flag="--vectors-dir")
    facts = base.facts()
    names = list(categories)
    with writer_lock(folder, "vectors"), atomic_folder(folder, "vectors") as tmp:
        Direction(site, bias.detach().float().cpu(), facts, method, {}, "bias").save(tmp / "bias")
        for i, name in enumerate(names):
            Direction(site, categories[name].detach().float().cpu(), facts, method, {}, name).save(
                tmp / f"category-{i}")
        write_json(tmp / MANIFEST, {**base_metadata("hybrid vectors"), "method": method, "site": site,
                                    "model": facts, "categories": names, "info": info})


def load_vectors(folder: str | Path, base: Model, site: str, method: str,
                 categories: Sequence[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
    """The vectors saved under `folder`; refuses ones made by another method, at another site, on another
    model or for other categories (naming what differs)."""
    folder = Path(folder)
    meta = read_json(folder / MANIFEST, "hybrid vectors")
    want = {"method": method, "site": site, "categories": list(categories)}
    for key, value in want.items():
        if meta.get(key) != value:
            raise LensError(f"{folder}: its vectors have {key} {meta.get(key)!r}, this run needs {value!r}; give "
                            "another --vectors-dir (or remove that folder yourself)")
    fp = (meta.get("model") or {}).get("fingerprint")
    if fp and fp != base.fingerprint:
        raise LensError(f"{folder}: its vectors were made on {meta['model'].get('spec')} (fingerprint {fp}), not "
                        f"on {base.spec}; give another --vectors-dir")
    bias = load_direction(folder / "bias", base).vector
    cats = {name: load_direction(folder / f"category-{i}", base).vector for i, name in enumerate(meta["categories"])}
    return bias, cats, dict(meta.get("info") or {})


def vectors_folder(folder: str | Path | None, base: Model, site: str, method: str, categories: Sequence[str],
                   make) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
    """`make()` -> (bias, categories, info), loaded from `folder` when it holds them, else made and saved there
    (no folder: just made; under a launcher rank 0 saves). info gains ``vectors_folder``: "loaded", "saved" or
    None."""
    if method not in METHODS:
        raise LensError(f"unknown vector method {method!r}; use one of {', '.join(METHODS)}")
    if folder is not None and (Path(folder) / MANIFEST).is_file():
        bias, cats, info = load_vectors(folder, base, site, method, categories)
        return bias, cats, {**info, "vectors_folder": "loaded"}
    from ..distributed import ranks

    bias, cats, info = make()
    if folder is not None and ranks().rank == 0:  # under a launcher every rank makes them; rank 0 writes
        save_vectors(folder, base, site, method, bias, cats, info)
    return bias, cats, {**info, "vectors_folder": None if folder is None else "saved"}


def hybrid_vectors(
    base: Model,
    traces: Sequence[dict],
    site: str,
    think_prompts: Sequence,
    direct_prompts: Sequence,
    *,
    method: str = "means",
    norm_frac: float = 0.5,
    step_labels: Sequence[str] | None = None,
    order: Sequence[str] | None = None,
    folder: str | Path | None = None,
    steps: int = 60,
    seed: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
    """(bias, {category: vector} in `order`, info) by `method`, through `folder` when given (`vectors_folder`).

    means: `lens.hybrid.study.category_vectors` (norm_frac x the residual norm; think_prompts/direct_prompts
    give the bias); optimised: `optimised_vectors` (`steps` Adam steps each). step_labels: one category per
    labelled step (default the spans' labels); order: the category order (default sorted)."""
    labels = list(step_labels) if step_labels is not None else [s[2] for t in traces for s in t["spans"]]
    names = list(order) if order is not None else sorted({lab for lab in labels if lab})

    def make():
        if method == "optimised":
            bias, cats, info = optimised_vectors(base, traces, site, labels, steps=steps, seed=seed)
        else:
            from .study import category_vectors

            bias, cats, info = category_vectors(base, traces, site, think_prompts, direct_prompts,
                                                norm_frac=norm_frac, step_labels=labels)
            info = {"method": "means", **info}
        missing = [n for n in names if n not in cats]
        if missing:
            raise LensError(f"no labelled step for categor{'y' if len(missing) == 1 else 'ies'} {missing}")
        return bias, {n: cats[n] for n in names}, info

    return vectors_folder(folder, base, site, method, names, make)
