"""`lens diff`: weight and activation differences between a base model and its tuned counterpart."""

from __future__ import annotations

import typer

from .common import console, emit_json, table
from .validate import check_layer, non_negative


def diff_cmd(
    ctx: typer.Context,
    base: str = typer.Argument("organism:base"),
    thinking: str = typer.Argument("organism:thinking"),
    layer: int = typer.Option(None, help="layer of the base's reasoning direction (default: middle)",
                              callback=non_negative),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Per layer: relative weight change, fraction of parameters changed, activation shift and its
    cosine with the base model's own reasoning direction (T-marked minus D-marked prompts).
    Under torchrun / accelerate launch the ranks share the parameters and the inputs; rank 0 alone reports
    (the result equals one process's)."""
    from ..capture_memory import capture_shared
    from ..directions import diff_of_means
    from ..distributed import init
    from ..pair_diff import activation_diff, weight_diff
    from ..studies.organism_inputs import marker_contrast, train_problems
    from .common import load_both

    main = init().main  # under a launcher: join the job first, so `--device cuda` is each rank's own GPU
    b, t = load_both(ctx, base, thinking)
    check_layer("--layer", layer, b.n_layers)
    sites = [f"blocks.{i}.hook_resid_post" for i in range(b.n_layers)]
    tp, dp = marker_contrast()
    a, c = (capture_shared(b, p, sites, "last_prompt", progress=False, data_parallel=True) for p in (tp, dp))
    dirs = {s: diff_of_means(s, a, c).vector for s in sites}
    prompts = [p.prompt() for p in train_problems(128, seed=99)]
    res = {"weights": weight_diff(b, t, data_parallel=True),
           "activations": activation_diff(b, t, prompts, sites, directions=dirs, data_parallel=True)}
    if not main:  # rank 0 reports for the whole job
        return
    if as_json:
        emit_json(res)
        return
    console.print(table(f"weights: {b.spec} -> {t.spec}", res["weights"]))
    console.print(table("activations at the last prompt token (cosine with the base's T-D direction)",
                        res["activations"]))
