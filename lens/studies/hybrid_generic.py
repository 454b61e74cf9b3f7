"""The hybrid study for any model pair, with categories found without labels (the hybrid paper's way).

1. the thinking model answers the trace prompts greedily; each completion is split into sentences;
2. a taxonomy SAE with one latent per category is fitted on the THINKING model's sentence vectors at
   the read layer (``saes.taxonomy``); each sentence's category is its argmax latent;
3. the category vectors are the BASE model's one-vs-rest means over the same sentences, by category,
   at the steer layer;
   the bias is the base's difference of means between prompts that ask for reasoning and prompts
   that ask for a direct answer (last prompt token);
4. base, thinking and the hybrid (the argmax latent of the thinking model's residual picks the
   category at a gated step) on the evaluation prompts, in mode paper with the ablations, and in mode
   unsteered_allowed (``hybrid.study``); the reasoning phase ends at the thinking model's ``</think>``
   (when its tokenizer has it as one token) and the base is then given "\n\nFinal answer: ".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from ..decoding.generate import generate
from ..errors import LensError
from ..hybrid.calibrate import DEFAULT_GRID, calibrate_vectors
from ..hybrid.config import ALL_ABLATIONS, NO_GUARDRAIL_COEFFICIENT, PAPER_COEFFICIENTS, HybridConfig
from ..hybrid.paper_pairs import paper_pair
from ..hybrid.selectors import taxonomy_selector
from ..hybrid.study import run_study
from ..hybrid.vectors import hybrid_vectors
from ..models import Model
from ..selection import SENTENCE_RE


def sentence_traces(prompts: Sequence[str], completions: Sequence[str]) -> list[dict]:
    """Traces whose spans are the completion's sentences (unlabelled), indexing prompt + completion."""
    out = []
    for p, c in zip(prompts, completions, strict=True):
        spans = [[len(p) + m.start(), len(p) + m.end(), ""] for m in re.finditer(SENTENCE_RE, c)
                 if m.group(0).strip()]
        if spans:
            out.append({"prompt": p, "completion": c, "spans": spans})
    return out


def _settings(base: Model, thinking: Model, layer: int | None, read_layer: int | None,
              n_categories: int | None) -> dict:
    """Steer layer, read layer and categories: as given, else the paper's for its pair, else lens's
    defaults (the middle layer, the steer layer, 5); `from` names the source of each."""
    paper = paper_pair(base.spec, thinking.spec)
    fallback = {"steer_layer": base.n_layers // 2, "read_layer": None, "categories": 5}
    given = {"steer_layer": layer, "read_layer": read_layer, "categories": n_categories}
    out: dict = {"paper_pair": None if paper is None else paper.as_dict(), "from": {}}
    for key, value in given.items():
        if value is not None:
            out[key], out["from"][key] = value, "given"
        elif paper is not None:
            out[key], out["from"][key] = getattr(paper, "sae_layer" if key == "read_layer" else key), "paper"
        else:
            out[key], out["from"][key] = fallback[key], "default"
    if out["read_layer"] is None:
        out["read_layer"], out["from"]["read_layer"] = out["steer_layer"], "steer layer"
    for key, n_layers in (("steer_layer", base.n_layers), ("read_layer", thinking.n_layers)):
        if not 0 <= out[key] < n_layers:
            raise LensError(f"{key.replace('_', ' ')} {out[key]} ({out['from'][key]}) is not a layer of a "
                            f"{n_layers}-layer model; give one between 0 and {n_layers - 1}")
    return out


def run(
    base: Model,
    thinking: Model,
    prompts: Sequence[str],
    is_correct: Callable[[int, str], bool],
    think_prompts: Sequence[str],
    direct_prompts: Sequence[str],
    *,
    n: int | None = None,
    trace_prompts: Sequence[str] | None = None,
    layer: int | None = None,
    read_layer: int | None = None,
    n_categories: int | None = None,
    norm_frac: float = 0.5,
    coefficients: tuple[float, ...] = PAPER_COEFFICIENTS,
    no_guardrail_coefficient: float = NO_GUARDRAIL_COEFFICIENT,
    ablations=ALL_ABLATIONS,
    max_new_tokens: int = 96,
    batch_size: int = 16,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    thinking_prompts: Sequence[str] | None = None,
    data_parallel: bool | None = None,
    vectors: str = "means",
    vectors_dir: str | None = None,
    vector_steps: int = 60,
    steer_positions: str = "newest",
    candidate_batch: int = 32,
    calibrate: int = 0,
    calibration_grid: tuple[float, ...] = DEFAULT_GRID,
    calibration_layers: tuple[int, ...] | None = None,
) -> dict:
    """Unsupervised category vectors from the thinking model's traces, then the hybrid study.

    prompts: a task set; the first `n` (default all) are evaluated. trace_prompts: where the thinking
    model's traces come from; default the next `n` prompts (disjoint) when the set has at least n/2
    more, else the evaluated ones (recorded in the result). thinking_prompts: the thinking model's own
    prompts for the same problems as `prompts` (default `prompts`): it answers and is read on those,
    while the base reads its own prompt followed by the thinking model's completion. layer: the steer
    layer (default the middle one); read_layer: the taxonomy's layer, where the category is read (default
    `layer`); n_categories: the taxonomy's latents (default 5). On a pair the hybrid paper studied
    (`lens.hybrid.paper_pairs`, matched by the models' specs) the three default to the paper's settings
    for it; the result's `settings` says which values ran and where each came from. data_parallel: under
    a launcher the ranks share the thinking model's traces and every run's batches (`run_study`); the
    taxonomy and the vectors are fitted whole on every rank. vectors: "means" or
    "optimised" (`lens.hybrid.vectors`, `vector_steps` Adam steps each); vectors_dir: a folder keeping them for
    later runs. steer_positions: "newest" or "all" (`HybridConfig`); candidate_batch: sweep candidates per base
    forward (`HybridConfig`). calibrate: when > 0, the bias and each category vector are rescaled (and, with
    `calibration_layers`, each category may move to another steer layer) as the hybrid is most accurate on that
    many problems of the task set after the evaluated and trace problems (`lens.hybrid.calibrate`); the task set
    must hold them.
    """
    from ..distributed import sharing

    n = len(prompts) if n is None else n
    t_all = list(prompts if thinking_prompts is None else thinking_prompts)
    if len(t_all) != len(prompts):
        raise LensError(f"{len(t_all)} thinking prompts for {len(prompts)} prompts")
    used = n  # the task set's problems taken so far (evaluated, then traces): calibration starts after them
    if trace_prompts is not None:
        where, t_trace = "given trace prompts", list(trace_prompts)
    elif len(prompts[n : 2 * n]) >= max(4, n // 2):
        trace_prompts, t_trace = list(prompts[n : 2 * n]), t_all[n : 2 * n]
        where = "the next problems of the task set (disjoint from the evaluated ones)"
        used += len(trace_prompts)
    else:
        trace_prompts, t_trace = list(prompts[:n]), t_all[:n]
        where = "the evaluated problems (too few others)"
    if calibration_layers and not calibrate:
        raise LensError("calibration layers are tried by the calibration; give --calibrate N as well")
    dev, t_dev = list(prompts[used: used + calibrate]), t_all[used: used + calibrate]
    if len(dev) < calibrate:
        raise LensError(f"--calibrate {calibrate} needs {calibrate} problems after the {used} evaluated and trace "
                        f"problems, but the task set has {len(prompts)}; lower --calibrate or --n, or give a larger "
                        "task set")
    prompts, t_prompts = list(prompts[:n]), t_all[:n]
    if not think_prompts or not direct_prompts:
        raise LensError("the hybrid's bias needs prompts that ask for reasoning and prompts that ask for a direct "
                        "answer; none were given")
    settings = _settings(base, thinking, layer, read_layer, n_categories)
    layer, read_layer, n_categories = settings["steer_layer"], settings["read_layer"], settings["categories"]
    site = f"blocks.{layer}.hook_resid_post"
    read_site = f"blocks.{read_layer}.hook_resid_post"
    say = progress or (lambda _m: None)
    say(f"thinking-model traces on {len(trace_prompts)} prompts")
    gens = generate(thinking, t_trace, max_new_tokens, batch_size=batch_size,
                    data_parallel=sharing(data_parallel) is not None).samples
    completions = [g.text for g in gens]
    traces = sentence_traces(t_trace, completions)  # the thinking model's prompts: the taxonomy reads these
    b_traces = sentence_traces(list(trace_prompts), completions)  # the base's prompts: category vectors
    n_sent = sum(len(t["spans"]) for t in traces)
    if n_sent < 16:
        raise LensError(f"the thinking model's traces hold {n_sent} sentences; the taxonomy needs at least 16: "
                        "raise --hybrid-n or --max-new-tokens")
    say(f"taxonomy SAE on {n_sent} sentences")
    step_names, pick, tinfo = taxonomy_selector(thinking, traces, read_site, n_categories=n_categories, seed=seed)
    say(f"category vectors ({vectors})")
    bias, cats, info = hybrid_vectors(base, b_traces, site, think_prompts, direct_prompts, method=vectors,
                                      norm_frac=norm_frac, step_labels=step_names, seed=seed, folder=vectors_dir,
                                      steps=vector_steps,
                                      order=list(tinfo["taxonomy"]["categories"]))  # in the selector's index order
    info.update(tinfo)
    calibration, category_sites, site_biases = None, None, None
    if calibrate:
        say(f"calibrating vector scales on {calibrate} problems apart from the evaluated and trace ones")
        cfg = HybridConfig(site, cats, bias=bias, coefficients=coefficients, selector=pick, read_site=read_site,
                           steer_positions=steer_positions, candidate_batch=candidate_batch, seed=seed)

        def vectors_at(other: str):
            return hybrid_vectors(base, b_traces, other, think_prompts, direct_prompts, method=vectors,
                                  norm_frac=norm_frac, step_labels=step_names, seed=seed, steps=vector_steps,
                                  order=list(tinfo["taxonomy"]["categories"]))[:2]

        done = calibrate_vectors(base, thinking, dev, lambda i, text: is_correct(used + i, text), cfg, vectors_at,
                                 layers=calibration_layers or (), grid=calibration_grid,
                                 max_new_tokens=max_new_tokens, thinking_prompts=t_dev, batch_size=batch_size,
                                 progress=say)
        calibration, bias, cats = done.calibration, done.bias, done.categories
        category_sites, site_biases = done.category_sites, done.site_biases
    out = run_study(base, thinking, prompts, is_correct, site, bias, cats, coefficients=coefficients,
                    ablations=ablations, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed,
                    selector=pick, progress=say, thinking_prompts=t_prompts, read_site=read_site,
                    no_guardrail_coefficient=no_guardrail_coefficient,
                    steer_positions=steer_positions, candidate_batch=candidate_batch,
                    selector_variants={"live_only": pick.variant(live_only=True)},
                    category_sites=category_sites, site_biases=site_biases, data_parallel=data_parallel)
    out["settings"] = settings
    out["vectors"] = {**info, "norm_frac": norm_frac, "categories": list(cats), "selector": "taxonomy",
                      "n_traces": len(traces), "n_sentences": n_sent, "trace_prompts": where,
                      "calibration": None if calibration is None else calibration.as_dict()}
    return out
