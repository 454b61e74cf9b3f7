"""The hybrid study with organism defaults (finding 2 in miniature).

Two selectors pick the category vector at a gated step (``taxonomy`` by default, as the paper does):

* ``nearest``: the category direction with the highest cosine to the thinking model's residual;
* ``taxonomy``: the hybrid paper's choice (Venhoff et al., arXiv 2510.07364): a TopK SAE with one
  latent per category is fitted on the THINKING model's step vectors at the READ layer
  (``saes.taxonomy``), each category vector is the BASE model's one-vs-rest mean over the steps of that
  category at the STEER layer, and at a gated step the argmax of the SAE's raw encoder output on the
  thinking model's residual (read layer) over ALL latents picks the category, as the paper's code does (a
  latent no step fell into has no vector: that step steers with nothing). The argmax over the latents
  with a category only is run beside it as ``runs.live_only``.

The hybrid runs in mode paper with the organism's own markers: the thinking model closes its reasoning
with ``</think>`` and the base is then given ``</think>A:`` (the organism's "Final answer:").
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import LensError
from ..hybrid.calibrate import DEFAULT_GRID, calibrate_vectors
from ..hybrid.config import ALL_ABLATIONS, NO_GUARDRAIL_COEFFICIENT, PAPER_COEFFICIENTS, HybridConfig
from ..hybrid.selectors import TaxonomySelector as TaxonomySelector
from ..hybrid.selectors import raw_latents as raw_latents
from ..hybrid.selectors import taxonomy_selector
from ..hybrid.study import run_study
from ..hybrid.vectors import hybrid_vectors
from ..models import Model
from ..organism import corpus as C
from ..organism.behaviours import BEHAVIOUR_OF
from . import organism_inputs as O

SELECTORS = ("nearest", "taxonomy")
ANSWER_PROMPT = "</think>A:"  # the organism's answer marker after its trace (lens/organism/corpus.py)


def run(
    base: Model,
    thinking: Model,
    *,
    n: int = 100,
    layer: int | None = None,
    read_layer: int | None = None,
    norm_frac: float = 0.5,
    coefficients: tuple[float, ...] = PAPER_COEFFICIENTS,
    no_guardrail_coefficient: float = NO_GUARDRAIL_COEFFICIENT,
    ablations=ALL_ABLATIONS,
    max_new_tokens: int = 100,
    selector: str = "taxonomy",
    progress: Callable[[str], None] | None = None,
    calibrate: int = 0,
    calibration_grid: tuple[float, ...] = DEFAULT_GRID,
    calibration_layers: tuple[int, ...] | None = None,
    vectors: str = "means",
    vectors_dir: str | None = None,
    vector_steps: int = 60,
    steer_positions: str = "newest",
    candidate_batch: int = 32,
    batch_size: int = 64,
    data_parallel: bool | None = None,
    force_thinking: bool = False,
    n_categories: int | None = None,
) -> dict:
    """Category vectors from the thinking model's labelled traces, then base/thinking/hybrid on n held-out problems.

    layer: the steer layer (default 1); read_layer: where the thinking model is read for the category
    (the taxonomy's layer; default `layer`). calibrate: when > 0, the bias and each category vector are
    rescaled by the factor of `calibration_grid` under which the hybrid is most accurate on that many
    training problems (disjoint from the held-out set; `lens.hybrid.calibrate`), before every run; the
    chosen scales and every score tried are in ``vectors.calibration``. calibration_layers: other steer layers
    the calibration may move each category to (its vectors and the bias are made there as at `layer`), so each
    category gets its own (layer, scale), as the paper's best layer per category. vectors: "means" (difference of
    means, the paper's second version) or "optimised" (its first; `lens.hybrid.vectors`); vectors_dir: a
    folder that keeps them as direction artifacts and gives them back to later runs; vector_steps: Adam
    steps per optimised vector. steer_positions: "newest" (hybrid_eval.py) or "all" (hybrid_token.py; a full
    forward per candidate), `HybridConfig`. candidate_batch: sweep candidates per base forward. batch_size:
    prompts per hybrid batch. data_parallel: under a launcher the ranks share the thinking model's traces and
    every run's batches (`run_study`); the taxonomy, vectors and calibration run whole on every rank.
    force_thinking: every prompt of the runs and of the calibration ends with the think-open tag, for both
    models (the base in its thinking format, as the paper's thinking template opens the reasoning): the gap is
    then the thinking model's over the base's own reasoning, and the hybrid steers inside the reasoning only.
    n_categories: latents of the taxonomy SAE (selector "taxonomy"), the categories it can find (default 5)."""
    if selector not in SELECTORS:
        raise LensError(f"unknown selector {selector!r}; use one of {', '.join(SELECTORS)}")
    if n_categories is not None and selector != "taxonomy":
        raise LensError(f"n_categories sets the taxonomy's latents; the {selector} selector has none (drop it)")
    layer = 1 if layer is None else layer  # where the organism's T-minus-D direction is causal (lens organism eval)
    site = f"blocks.{layer}.hook_resid_post"
    read_site = site if read_layer is None else f"blocks.{read_layer}.hook_resid_post"
    say = progress or (lambda _m: None)
    say("labelled thinking traces")
    traces = O.labelled_traces(thinking, max_new_tokens=max(110, max_new_tokens), data_parallel=data_parallel)
    think_prompts, direct_prompts = O.marker_contrast()
    step_names, pick, tinfo, variants = None, "nearest", {}, None
    if selector == "taxonomy":
        say("taxonomy SAE on the thinking model's steps")
        step_names, pick, tinfo = taxonomy_selector(thinking, traces, read_site, n_categories=n_categories or 5,
                                                    same=BEHAVIOUR_OF)
        variants = {"live_only": pick.variant(live_only=True)}
    say(f"category vectors ({vectors})")
    order = list(tinfo["taxonomy"]["categories"]) if step_names is not None else None  # the selector's order
    bias, cats, info = hybrid_vectors(base, traces, site, think_prompts, direct_prompts, method=vectors,
                                      norm_frac=norm_frac, step_labels=step_names, order=order, folder=vectors_dir,
                                      steps=vector_steps)
    info.update(tinfo)
    prefill = C.THINK_OPEN if force_thinking else ""
    prompts, answers = O.heldout(n)
    prompts = [p + prefill for p in prompts]
    calibration, category_sites, site_biases = None, None, None
    if calibration_layers and not calibrate:
        raise LensError("calibration layers are tried by the calibration; give --calibrate N as well")
    if calibrate:
        say(f"calibrating vector scales on {calibrate} training problems")
        dev_prompts, dev_answers = O.dev_problems(calibrate)
        cfg = HybridConfig(site, cats, bias=bias, coefficients=coefficients, selector=pick, read_site=read_site,
                           answer_prompt=ANSWER_PROMPT, steer_positions=steer_positions,
                           candidate_batch=candidate_batch)

        def vectors_at(other: str):
            return hybrid_vectors(base, traces, other, think_prompts, direct_prompts, method=vectors,
                                  norm_frac=norm_frac, step_labels=step_names, order=order, steps=vector_steps)[:2]

        done = calibrate_vectors(base, thinking, [p + prefill for p in dev_prompts], O.checker(dev_answers), cfg,
                                 vectors_at, layers=calibration_layers or (), grid=calibration_grid,
                                 max_new_tokens=max_new_tokens, progress=say)
        calibration, bias, cats = done.calibration, done.bias, done.categories
        category_sites, site_biases = done.category_sites, done.site_biases
    out = run_study(base, thinking, prompts, O.checker(answers), site, bias, cats, coefficients=coefficients,
                    ablations=ablations, max_new_tokens=max_new_tokens, selector=pick, progress=say,
                    read_site=read_site, answer_prompt=ANSWER_PROMPT,
                    no_guardrail_coefficient=no_guardrail_coefficient, steer_positions=steer_positions,
                    candidate_batch=candidate_batch, selector_variants=variants, category_sites=category_sites,
                    site_biases=site_biases,
                    batch_size=batch_size, data_parallel=data_parallel)
    out["force_thinking"] = force_thinking
    out["vectors"] = {**info, "norm_frac": norm_frac, "categories": list(cats), "selector": selector,
                      "calibration": None if calibration is None else calibration.as_dict()}
    return out
