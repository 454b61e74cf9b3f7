"""lens: capture, directions, SAE features and exact steering for base vs thinking models.

This module is the public facade: `import lens` gives the researcher's verbs and types.

Models
    load_model(spec), load_pair(base, thinking), Model (callable on texts: logits), Site
Activations
    capture(model, inputs, sites, select)            rows in memory -> Activations
    capture_to_disk(model, inputs, sites, select, out=DIR)   shards on disk, resumable -> CaptureFolder
    open_capture(path) -> CaptureFolder
    run(model, inputs, sites, select)                logits and Activations from one forward
    Activations, hooks(model, {site: fn}), add_hook
Directions
    diff_of_means(site, pos, neg), Direction (+, -, * a number; d.apply(model, scale, where) steers inside
    a with block), Directions (several sites at once), load_direction
Interventions and decoding
    Intervention(site, vector, scale, where, op=...), Where, steer(model, interventions) (a context manager)
    generate(model, prompts, max_new_tokens), cot_decode(model, prompts)
    hybrid_generate(base, thinking, prompts, config), HybridConfig; the package lens.hybrid (the paper's
    reference loop, ablations, modes)
SAEs (the sibling package `saes`, imported on first use)
    train_sae(source, out, cfg), TrainConfig (the architecture and sizes), load_sae(source, model, site),
    rank_features(sae, pos, neg)

One argument order: the model and its inputs first (as run_with_cache), then the site, then what (a vector,
a direction, a selection), then how much (scale), then where (positions, steps).

Everything but the models is imported on first use, so `import lens` stays as fast as importing transformers.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from .errors import LensError
from .models import Model, load_model, load_pair
from .site_hooks import add_hook, hooks
from .sites import Site

__version__ = "0.1.0"

_LAZY: dict[str, tuple[str, str]] = {
    "capture": ("lens.capture_memory", "capture"),
    "Activations": ("lens.capture_memory", "Activations"),
    "capture_to_disk": ("lens.capture_folder", "capture_to_disk"),
    "open_capture": ("lens.capture_folder", "open_capture"),
    "CaptureFolder": ("lens.capture_folder", "CaptureFolder"),
    "run": ("lens.forward", "run"),
    "diff_of_means": ("lens.directions", "diff_of_means"),
    "Direction": ("lens.directions", "Direction"),
    "Directions": ("lens.directions", "Directions"),
    "load_direction": ("lens.directions", "load_direction"),
    "Intervention": ("lens.interventions", "Intervention"),
    "Where": ("lens.interventions", "Where"),
    "steer": ("lens.interventions", "steer"),
    "generate": ("lens.decoding", "generate"),
    "cot_decode": ("lens.decoding", "cot_decode"),
    "hybrid_generate": ("lens.hybrid", "hybrid_generate"),
    "HybridConfig": ("lens.hybrid", "HybridConfig"),
    "train_sae": ("saes.train", "train_sae"),
    "TrainConfig": ("saes.config", "TrainConfig"),
    "load_sae": ("saes.io", "load_sae"),
    "rank_features": ("saes.search", "rank_features"),
}

#: subpackages reachable as attributes after `import lens` (imported on first use)
_PACKAGES = ("hybrid",)

__all__ = ["LensError", "Model", "Site", "add_hook", "hooks", "load_model", "load_pair", "__version__", *_LAZY,
           *_PACKAGES]


def __getattr__(name: str) -> Any:
    """The facade's verbs and types, imported on first use (module-level `__getattr__`, PEP 562)."""
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # cached: the next lookup finds it directly
        return value
    if name in _PACKAGES or (not name.startswith("_") and importlib.util.find_spec(f"lens.{name}") is not None):
        return importlib.import_module(f"lens.{name}")  # any module of lens (lens.directions, ...): binds lens.<name>
    raise AttributeError(f"module 'lens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
