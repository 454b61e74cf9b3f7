"""`lens hybrid`: the hybrid study (base steered where the thinking model would act differently)."""

from __future__ import annotations

import typer

from .common import console, emit_json, table


def hybrid_cmd(
    base: str = typer.Option("organism:base", "--base"),
    thinking: str = typer.Option("organism:thinking", "--thinking"),
    n: int = typer.Option(100, help="held-out problems"),
    layer: int = typer.Option(None, help="steering layer (default 1: where the organism's reasoning direction acts)"),
    norm_frac: float = typer.Option(0.5, help="vector norm as a fraction of the mean residual norm"),
    selector: str = typer.Option("taxonomy", help="taxonomy (SAE argmax latent) or nearest (cosine)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Accuracy of base, thinking and hybrid, gap recovered, fraction of tokens steered, and the ablations."""
    from ..errors import LensError
    from ..models import load_pair
    from ..studies import hybrid_organism

    if not (base.startswith("organism:") and thinking.startswith("organism:")):
        raise LensError("lens hybrid runs on the bundled organism's task set; for other pairs use "
                        "lens.hybrid.study.run_study from Python with your prompts and checker")
    b, t = load_pair(base, thinking)
    res = hybrid_organism.run(b, t, n=n, layer=layer, norm_frac=norm_frac, selector=selector,
                              progress=None if as_json else (lambda msg: console.print(f"[dim]{msg}[/]")))
    if as_json:
        emit_json(res)
        return
    rows = [{"run": "base", "accuracy": res["base"]["value"], "gap_recovered": 0.0, "steered": 0.0},
            {"run": "thinking", "accuracy": res["thinking"]["value"], "gap_recovered": 1.0, "steered": 0.0}]
    rows += [{"run": f"hybrid ({k})" if k != "none" else "hybrid", "accuracy": v["accuracy"]["value"],
              "gap_recovered": v["gap_recovered"], "steered": v["fraction_steered"]} for k, v in res["runs"].items()]
    console.print(table(f"hybrid on {n} held-out problems, {res['site']}", rows))
