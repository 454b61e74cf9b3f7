"""`lens diff`: weight and activation differences between a base model and its tuned counterpart."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import TEMPLATE_HELP, console, emit_json, table, templated
from .validate import check_layer, non_negative, read_inputs


def diff_cmd(
    ctx: typer.Context,
    base: str = typer.Argument("organism:base"),
    thinking: str = typer.Argument("organism:thinking"),
    layer: int = typer.Option(None, help="measure the activations at this layer only (default: every layer; the "
                              "weight table covers all)", callback=non_negative),
    pos: Path = typer.Option(None, "--pos", help="JSONL of reasoning prompts for the base's direction (with --neg; "
                             "default: the organism's T-marked prompts), or a capture folder of the base's "
                             "activations on them (lens capture --select last_prompt)"),
    neg: Path = typer.Option(None, "--neg", help="JSONL of direct-answer prompts for the base's direction, or a "
                             "capture folder of them"),
    prompts: Path = typer.Option(None, "--prompts", help="JSONL of prompts where the activation shift is measured "
                                 "(default: the --pos and --neg prompts, or 128 organism training problems; "
                                 "needed with capture folders)"),
    template: str = typer.Option(None, "--template", help=TEMPLATE_HELP + " (--pos, --neg and --prompts)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Per layer: relative weight change, fraction of parameters changed, activation shift and its
    cosine with the base model's own reasoning direction (reasoning minus direct prompts, at the last prompt
    token; by default the organism's T-marked minus D-marked prompts).
    Under torchrun / accelerate launch the ranks share the parameters and the inputs; rank 0 alone reports
    (the result equals one process's)."""
    from ..capture_memory import capture_shared
    from ..directions import diff_of_means
    from ..distributed import init
    from ..errors import LensError
    from ..pair_diff import activation_diff, weight_diff
    from ..studies.organism_inputs import marker_contrast, train_problems
    from .common import load_both

    if (pos is None) != (neg is None):
        raise LensError("give --pos and --neg together (reasoning and direct-answer prompts), or neither")
    if template is not None and pos is None and prompts is None:
        raise LensError("--template applies to --pos, --neg and --prompts; the organism's default prompts are "
                        "already in its format")
    held = None  # --pos/--neg as capture folders of the base: (pos folder, neg folder, resid_post sites)
    if pos is not None and (pos.is_dir() or neg.is_dir()):
        from .folders import contrast_folders, same_spec

        held = contrast_folders(pos, neg)
        if held[0].manifest["select"] != "last_prompt":
            raise LensError(f"--pos/--neg hold {held[0].manifest['select']!r} rows; the base's direction is read at "
                            "the last prompt token: capture with --select last_prompt")
        if prompts is None:
            raise LensError("capture folders hold activations, not prompts: give --prompts, the JSONL of prompts "
                            "where the two models are compared")
    # the files are read (and checked) before any model loads
    named = [("--prompts", prompts)] if held is not None else [("--pos", pos), ("--neg", neg), ("--prompts", prompts)]
    files = {flag: read_inputs(f, flag) for flag, f in named if f is not None}
    main = init().main  # under a launcher: join the job first, so `--device cuda` is each rank's own GPU
    b, t = load_both(ctx, base, thinking)
    check_layer("--layer", layer, b.n_layers)
    layers = range(b.n_layers) if layer is None else [layer]
    sites = [f"blocks.{i}.hook_resid_post" for i in layers]
    given = {flag: list(templated(items, template, b)) for flag, items in files.items()}
    if held is not None:
        a, c, have = held
        made, now = str(a.model.get("dtype")), str(b.dtype).replace("torch.", "")
        if a.model.get("fingerprint") != b.fingerprint and made != now and same_spec(b.spec, str(a.model.get("spec"))):
            raise LensError(f"--pos/--neg were captured from {a.model.get('spec')} in {made} and the base is loaded in "
                            f"{now}: load it as captured (lens --dtype {made} diff ...) or capture again")
        if a.model.get("fingerprint") != b.fingerprint:
            raise LensError(f"--pos/--neg were captured from {a.model.get('spec')}, not from the base {b.spec} (other "
                            "weights); capture them from the base")
        sites = have if layer is None else sites
        if layer is not None and sites[0] not in have:
            raise LensError(f"--layer {layer}: the capture folders hold resid_post at layers "
                            f"{', '.join(s.split('.')[1] for s in have)}")
    else:
        tp, dp = (given["--pos"], given["--neg"]) if pos is not None else marker_contrast()
        a, c = (capture_shared(b, p, sites, "last_prompt_token", progress=False, data_parallel=True)
                for p in (tp, dp))
    if prompts is not None:
        neutral = given["--prompts"]
    else:
        neutral = [*tp, *dp] if pos is not None else [p.prompt() for p in train_problems(128, seed=99)]
    dirs = {s: diff_of_means(s, a, c).vector for s in sites}
    res = {"weights": weight_diff(b, t, data_parallel=True),
           "activations": activation_diff(b, t, neutral, sites, directions=dirs, data_parallel=True)}
    if not main:  # rank 0 reports for the whole job
        return
    if as_json:
        emit_json(res)
        return
    console.print(table(f"weights: {b.spec} -> {t.spec}", res["weights"]))
    console.print(table("activations at the last prompt token (cosine with the base's reasoning direction)",
                        res["activations"]))
