"""`lens steer`: generate with interventions from a spec folder or a direction + flags."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import console, emit_json
from .validate import check_fits, choice, finite, positive, valid_text


def parse_where(text: str):
    """first_step | all | prompt | prompt_last:N | generated:START:STOP | positions:0,5"""
    from ..errors import LensError
    from ..interventions import Where

    name, _, arg = text.partition(":")
    try:
        if name == "first_step":
            return Where.first_step()
        if name in ("all", "prompt"):
            return Where(name)
        if name == "prompt_last":
            return Where.prompt_last(int(arg or 1))
        if name == "generated":
            a, _, b = arg.partition(":")
            return Where.generated(int(a or 0), int(b) if b else None)
        if name == "positions":
            return Where.absolute(*[int(x) for x in arg.split(",")])
    except ValueError as e:
        raise LensError(f"bad --where {text!r}: {e}") from None
    raise LensError(f"unknown --where {text!r}; use first_step, all, prompt, prompt_last:N, generated:A:B, "
                    "positions:0,5")


def steer_cmd(
    ctx: typer.Context,
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="prompt text (repeatable); \\n is a newline",
                                     callback=valid_text),
    model: str = typer.Option("organism:base", "--model", "-m"),
    direction: Path = typer.Option(None, help="a saved direction folder"),
    spec: Path = typer.Option(None, help="a saved intervention spec folder (spec.json + vectors.safetensors)"),
    scale: float = typer.Option(1.0, help="scale of the direction", callback=finite),
    unit: bool = typer.Option(False, help="use the direction's unit vector (scale is then a norm)"),
    op: str = typer.Option("add", help="add | set | project_out | clamp",
                           callback=choice("add", "set", "project_out", "clamp")),
    where: str = typer.Option("first_step", help="first_step | all | prompt_last:N | generated:A:B | positions:.."),
    max_new_tokens: int = typer.Option(64, callback=positive),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Generate greedily with and without the interventions, and print where they fired."""
    from ..decoding.generate import generate
    from ..directions import load_direction
    from ..errors import LensError
    from ..interventions import steer
    from ..interventions.spec import describe, load_interventions
    from .common import load

    if (direction is None) == (spec is None):
        raise LensError("give exactly one of --direction DIR or --spec DIR")
    at = parse_where(where) if direction is not None else None  # a bad --where fails before the model loads
    m = load(ctx, model)
    if spec is not None:
        ivs = load_interventions(spec, m)
    else:
        ivs = [load_direction(direction, m).intervention(scale, op, at, unit=unit)]
    prompts = [p.replace("\\n", "\n") for p in prompt]
    check_fits(m, prompts, "--prompt", max_new_tokens, "--max-new-tokens")
    plain = generate(m, prompts, max_new_tokens).samples
    steered, fired = [], []
    for i, p in enumerate(prompts):  # one prompt per block, so the log's rows are prompt indexes
        with steer(m, ivs) as h:
            steered += generate(m, [p], max_new_tokens).samples
        fired += [{"row": i, "step": r["step"], "position": r["position"], "site": r["site"]} for r in h.log.records]
    rows = [{"prompt": p, "plain": a.text, "steered": b.text} for p, a, b in zip(prompts, plain, steered, strict=True)]
    if as_json:
        emit_json({"interventions": [i.to_json() for i in ivs], "results": rows, "fired": fired})
        return
    console.print(describe(ivs))
    for r in rows:
        text = f"[bold]{r['prompt']!r}[/]\n  plain:   {r['plain']!r}\n  steered: {r['steered']!r}"
        console.print(text, soft_wrap=True)
    console.print(f"fired at {len(fired)} (row, position) pairs: "
                  + ", ".join(f"row {f['row']} pos {f['position']} (step {f['step']})" for f in fired[:12]))
