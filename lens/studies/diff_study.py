"""Finding 3: the model-pair diff, and whether tuning moved along a direction the base already had.

Per layer: relative weight change; the base's think-vs-direct direction (difference of means at the
last prompt token of contrast prompts) and its held-out AUROC; the mean activation change
(tuned - base) on neutral prompts and its cosine with that direction. Under a launcher the ranks share
the weight diff's parameters and every capture's inputs (`lens.pair_diff`); the result equals one process's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..capture_memory import capture_shared
from ..directions import diff_of_means
from ..directions.separability import separability_by_layer
from ..models import Model
from ..pair_diff import activation_diff, weight_diff


def run(
    base: Model,
    tuned: Model,
    think_prompts: Sequence[str],
    direct_prompts: Sequence[str],
    neutral_prompts: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    seed: int = 0,
    say: Callable[[str], None] = lambda _m: None,
    data_parallel: bool | None = None,
) -> dict:
    """Weight diff, per-layer separability of the base's T-vs-D direction, activation diff along it.

    data_parallel: True (share the work when launched with several processes), False (never), None
    (inside a `lens.distributed.data_parallel()` block)."""
    layers = list(range(base.n_layers)) if layers is None else list(layers)
    sites = [f"blocks.{i}.hook_resid_post" for i in layers]
    say("weight diff")
    weights = weight_diff(base, tuned, data_parallel=data_parallel)
    say(f"base think-vs-direct direction at {len(sites)} layers")
    as_items = lambda ps: [{"prompt": p, "completion": ""} for p in ps]  # noqa: E731
    pos = capture_shared(base, as_items(think_prompts), sites, "last_prompt", progress=False,
                         data_parallel=data_parallel)
    neg = capture_shared(base, as_items(direct_prompts), sites, "last_prompt", progress=False,
                         data_parallel=data_parallel)
    sep = separability_by_layer(sites, pos, neg, seed=seed)
    dirs = {s: diff_of_means(s, pos, neg).vector for s in sites}
    say("activation diff on neutral prompts")
    acts = activation_diff(base, tuned, as_items(neutral_prompts), sites, "last_prompt", directions=dirs,
                           data_parallel=data_parallel)
    return {"status": "ok", "layers": layers, "weights": weights, "separability": sep, "activations": acts,
            "n_contrast": [len(think_prompts), len(direct_prompts)], "n_neutral": len(neutral_prompts)}
