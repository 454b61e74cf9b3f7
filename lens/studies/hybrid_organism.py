"""The hybrid study with organism defaults (finding 2 in miniature)."""

from __future__ import annotations

from collections.abc import Callable

from ..hybrid.common import ABLATIONS
from ..hybrid.study import category_vectors, run_study
from ..models import Model
from . import organism_inputs as O


def run(
    base: Model,
    thinking: Model,
    *,
    n: int = 100,
    layer: int | None = None,
    norm_frac: float = 0.5,
    coefficients: tuple[float, ...] = (0.25, 0.5, 1.0),
    ablations=ABLATIONS,
    max_new_tokens: int = 100,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Category vectors from the thinking model's labelled traces, then base/thinking/hybrid on n held-out problems."""
    layer = 1 if layer is None else layer  # where the organism's T-minus-D direction is causal (lens organism eval)
    site = f"blocks.{layer}.hook_resid_post"
    say = progress or (lambda _m: None)
    say("labelled thinking traces")
    traces = O.labelled_traces(thinking)
    think_prompts, direct_prompts = O.marker_contrast()
    bias, cats, info = category_vectors(base, traces, site, think_prompts, direct_prompts, norm_frac=norm_frac)
    prompts, answers = O.heldout(n)
    out = run_study(base, thinking, prompts, O.checker(answers), site, bias, cats, coefficients=coefficients,
                    ablations=ablations, max_new_tokens=max_new_tokens, progress=say)
    out["vectors"] = {**info, "norm_frac": norm_frac, "categories": list(cats)}
    return out
