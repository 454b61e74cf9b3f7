"""`lens directions make|inspect`: difference-of-means directions and their per-layer separability."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import LensError
from .common import TEMPLATE_HELP, console, emit_json, given, table
from .validate import check_layer, choice, non_negative

app = typer.Typer(help="Make and inspect reasoning directions.", no_args_is_help=True)


def _inputs(path: Path | None, default: list):
    from .validate import read_inputs

    return default if path is None else read_inputs(path)


def _folders(ctx: typer.Context, pos: Path | None, neg: Path | None, model: str, template: str | None,
             select: str) -> tuple:
    """(pos folder, neg folder, the resid_post sites both hold in layer order, model spec, selection) for
    `make` on two capture folders, refused with one line when they cannot be compared."""
    from ..selection import parse_select
    from .folders import contrast_folders, same_spec

    if template is not None and pos is not None and pos.is_dir():
        raise LensError("--template formats prompts; capture folders hold activations already (drop --template)")
    a, b, sites = contrast_folders(pos, neg)

    if given(ctx, "model") and not same_spec(model, str(a.model.get("spec"))):
        raise LensError(f"--model {model}: the capture folders were made from {a.model.get('spec')}; drop --model "
                        "or capture again")
    if given(ctx, "select") and parse_select(select).spec != a.manifest["select"]:
        raise LensError(f"--select {select}: the capture folders hold {a.manifest['select']!r} rows; drop --select")
    return a, b, sites, a.model.get("spec"), a.manifest["select"]


@app.command("make")
def make(
    ctx: typer.Context,
    model: str = typer.Option("organism:base", "--model", "-m"),
    pos: Path = typer.Option(None, help="JSONL of the positive set, or a capture folder of its activations "
                                        "(default: organism prompts marked T)"),
    neg: Path = typer.Option(None, help="JSONL of the negative set, or a capture folder of its activations "
                                        "(default: organism prompts marked D)"),
    layer: int = typer.Option(None, help="layer of the saved direction (default: the most separable)",
                              callback=non_negative),
    select: str = typer.Option("last_prompt", help="token selection (see lens capture --help)"),
    too_long: str = typer.Option("error", "--too-long", callback=choice("error", "truncate"),
                                 help="an input longer than the model's context: error or truncate"),
    out: Path = typer.Option(None, "--out", "-o", help="folder to save the direction in"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a direction already saved at --out"),
    template: str = typer.Option(None, "--template", help=TEMPLATE_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Difference of means pos - neg at every layer; report AUROC per layer; save one layer's direction.

    --pos and --neg are JSONL inputs (captured here at every resid_post) or, both, capture folders (`lens
    capture -o`) of the same model: their rows are used as they are, at every resid_post site both hold."""
    from ..capture_memory import capture
    from ..directions import diff_of_means, separability_by_layer
    from ..outputs import check_output
    from ..selection import parse_select
    from .common import load, templated

    if out is not None:  # before any work: a path that would lose the user's files fails at once
        check_output(out, "direction", overwrite=overwrite)

    parse_select(select)  # bad inputs and options fail before the model loads
    if any(p is not None and p.is_dir() for p in (pos, neg)):
        a, b, sites, spec, select = _folders(ctx, pos, neg, model, template, select)
        if layer is not None and f"blocks.{layer}.hook_resid_post" not in sites:
            raise LensError(f"--layer {layer}: the capture folders hold resid_post at layers "
                            f"{', '.join(s.split('.')[1] for s in sites)}")
    else:
        p_given, n_given = _inputs(pos, None), _inputs(neg, None)
        m = load(ctx, model)
        check_layer("--layer", layer, m.n_layers)
        t_prompts, d_prompts = [], []
        if pos is None or neg is None:
            from ..studies.organism_inputs import marker_contrast

            t_prompts, d_prompts = marker_contrast()
        p_items = t_prompts if p_given is None else list(templated(p_given, template, m))
        n_items = d_prompts if n_given is None else list(templated(n_given, template, m))
        sites = [f"blocks.{i}.hook_resid_post" for i in range(m.n_layers)]
        a = capture(m, p_items, sites, select, progress=False, too_long=too_long)
        b = capture(m, n_items, sites, select, progress=False, too_long=too_long)
        spec = m.spec
    rows = separability_by_layer(sites, a, b)
    best = max(rows, key=lambda r: r["auroc"])["site"] if layer is None else f"blocks.{layer}.hook_resid_post"
    d = diff_of_means(best, a, b, name="reasoning")
    d.info["select"] = select
    if out is not None:
        d.save(out, overwrite=overwrite)
    result = {"model": spec, "layers": rows, "chosen_site": best, "norm": d.norm,
              "mean_resid_norm": d.info["mean_resid_norm"], "saved": str(out) if out else None}
    if as_json:
        emit_json(result)
    else:
        console.print(table(f"separability of pos - neg on {spec} ({select})", rows))
        console.print(f"chosen {best}: |v|={d.norm:.3f} (mean residual norm {d.info['mean_resid_norm']:.3f})"
                      + (f", saved to {out}" if out else ""))


@app.command("inspect")
def inspect(folder: Path, as_json: bool = typer.Option(False, "--json")) -> None:
    """Print a saved direction's metadata."""
    from ..artifacts import read_json
    from ..directions import load_direction

    d = load_direction(folder)
    meta = read_json(folder / "direction.json", "direction")
    if as_json:
        emit_json(meta)
    else:
        console.print(str(d))
        console.print(table(f"direction {folder}", [(k, v) for k, v in meta.items() if k != "model"]))
