"""`lens steer`: generate with interventions from a spec folder or a direction + flags."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from .common import BACKEND_HELP, REMOTE_HELP, TEMPLATE_HELP, console, emit_json, table
from .validate import check_fits, choice, finite, non_negative, positive, valid_text


def parse_where(text: str):
    """last_prompt_token (= last_prompt = first_step) | first_generated_token | all | prompt |
    prompt_last:N | generated:START:STOP | positions:0,5"""
    from ..errors import LensError
    from ..interventions import Where

    name, _, arg = text.partition(":")
    try:
        if name in ("first_step", "last_prompt_token", "first_generated_token") and not arg:
            return Where(name)
        if name == "last_prompt" and not arg:  # the selection's name for the same position
            return Where("last_prompt_token")
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
    raise LensError(f"unknown --where {text!r}; use last_prompt_token, first_generated_token, first_step, all, "
                    "prompt, prompt_last:N, generated:A:B, positions:0,5")


def parse_metric(text: str | None):
    """A behaviour detector from the CLI: regex:PATTERN (a completion shows it when the pattern is found
    in it, `re.search`) or py:MODULE:FUNCTION (a function of the completion text returning a bool).
    None: no custom metric."""
    import importlib
    import re

    from ..errors import LensError

    if not text:
        return None
    kind, _, arg = text.partition(":")
    if kind == "regex" and arg:
        try:
            pattern = re.compile(arg)
        except re.error as e:
            raise LensError(f"--metric {text!r}: bad regular expression ({e})") from None
        return lambda completion: pattern.search(completion) is not None
    if kind == "py" and ":" in arg:
        module, _, name = arg.rpartition(":")
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise LensError(f"--metric {text!r}: cannot load {module}.{name} ({e})") from None
        if not callable(fn):
            raise LensError(f"--metric {text!r}: {module}.{name} is not a function")
        return fn
    raise LensError(f"--metric {text!r}: use regex:PATTERN or py:MODULE:FUNCTION")


def nnsight_runner(model, prompts: list[str], max_new_tokens: int, remote: bool, lm=None):
    """`lens steer`'s run(interventions) -> (texts, fired) through nnsight: every prompt in left-padded batches,
    fired records as the lens engine logs each prompt run alone. lm: the nnsight model (None: one over
    `model`'s weights)."""
    from ..decoding.nnsight_generate import generate_nnsight_prompts
    from ..interventions.backends.nnsight_backend import language_model

    lm = language_model(model) if lm is None else lm

    def run(items) -> tuple[list[str], list[dict]]:
        gen, fired = generate_nnsight_prompts(model, prompts, max_new_tokens, items, lm=lm, remote=remote)
        return [s.text for s in gen.samples], fired

    return run


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
    where: str = typer.Option("last_prompt_token", help="last_prompt_token (position P-1, whose forward produces "
                              "the first generated token; first_step is the same position under He et al.'s name) | "
                              "first_generated_token (position P) | all | prompt | prompt_last:N | generated:A:B | "
                              "positions:0,5"),
    max_new_tokens: int = typer.Option(64, callback=positive),
    random_control: int = typer.Option(0, "--random-control", callback=non_negative,
                                       help="also steer with N random directions of the same norm (same site, op, "
                                            "scale and positions; seeded), reported beside the real one"),
    seed: int = typer.Option(0, "--seed", callback=non_negative, help="first seed of the random controls"),
    metric: str = typer.Option(None, "--metric", help="behaviour to count in each completion: regex:PATTERN or "
                               "py:MODULE:FUNCTION (text -> bool); the rate is reported per run"),
    template: str = typer.Option(None, "--template", help=TEMPLATE_HELP),
    backend: str = typer.Option("lens", "--backend", help=BACKEND_HELP, callback=choice("lens", "nnsight")),
    remote: bool = typer.Option(False, "--remote", help=REMOTE_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Generate greedily with and without the interventions, and print where they fired.

    With --random-control N the same prompts are also steered with N random directions of the same
    norm: what the real direction does beyond what any vector of its size does. With --metric each
    run reports the share of completions showing the behaviour. With --backend nnsight the same generations
    run as nnsight traces (all prompts in left-padded batches; each completion equals the lens engine's).
    """
    from ..decoding.generate import generate
    from ..directions import load_direction
    from ..errors import LensError
    from ..interventions import steer
    from ..interventions.spec import describe, load_interventions
    from .common import check_backend, load_backend, templated

    if (direction is None) == (spec is None):
        raise LensError("give exactly one of --direction DIR or --spec DIR")
    check_backend(backend, remote, model)
    at = parse_where(where) if direction is not None else None  # a bad --where fails before the model loads
    shows = parse_metric(metric)
    m, lm = load_backend(ctx, model, backend, remote)  # --remote: no weights here (a meta module), NDIF runs them
    if spec is not None:
        ivs = load_interventions(spec, m)
    else:
        ivs = [load_direction(direction, m).intervention(scale, at, op=op, unit=unit)]
    prompts = list(templated([p.replace("\\n", "\n") for p in prompt], template, m))
    check_fits(m, prompts, "--prompt", max_new_tokens, "--max-new-tokens")
    nnsight_run = nnsight_runner(m, prompts, max_new_tokens, remote, lm) if backend == "nnsight" else None
    plain = (nnsight_run([])[0] if nnsight_run is not None else
             [s.text for s in generate(m, prompts, max_new_tokens).samples])

    def run(items):
        if nnsight_run is not None:
            return nnsight_run(items)
        texts, fired = [], []
        for i, p in enumerate(prompts):  # one prompt per block, so the log's rows are prompt indexes
            with steer(m, items) as h:
                texts += [s.text for s in generate(m, [p], max_new_tokens).samples]
            fired += [{"row": i, "step": r["step"], "position": r["position"], "site": r["site"]}
                      for r in h.log.records]
        return texts, fired

    def summary(texts):
        out = {"changed": sum(a != b for a, b in zip(plain, texts, strict=True)) / len(prompts)}
        if shows is not None:
            out["metric_rate"] = sum(bool(shows(t)) for t in texts) / len(prompts)
        return out

    steered, fired = run(ivs)
    rows = [{"prompt": p, "plain": a, "steered": b} for p, a, b in zip(prompts, plain, steered, strict=True)]
    controls = []
    for k in range(random_control):
        rand = [iv.random_like(seed + k * 1000 + j) for j, iv in enumerate(ivs)]
        texts, _ = run(rand)
        controls.append({"seed": seed + k * 1000, "interventions": [i.to_json() for i in rand], "texts": texts,
                         **summary(texts)})
    result = {"interventions": [i.to_json() for i in ivs], "results": rows, "fired": fired,
              "summary": {"plain": summary(plain) if shows is not None else {}, "steered": summary(steered)}}
    if metric:
        result["metric"] = metric
    if random_control:
        result["random_controls"] = controls
        result["summary"]["random_controls"] = {
            "changed_mean": sum(c["changed"] for c in controls) / len(controls),
            **({"metric_rate_mean": sum(c["metric_rate"] for c in controls) / len(controls)}
               if shows is not None else {})}
    if as_json:
        emit_json(result)
        return
    console.print(describe(ivs), markup=False)
    for i, r in enumerate(rows):
        text = f"[bold]{escape(repr(r['prompt']))}[/]\n  plain:   {escape(repr(r['plain']))}\n" \
               f"  steered: {escape(repr(r['steered']))}"
        for c in controls:
            text += f"\n  random (seed {c['seed']}): {escape(repr(c['texts'][i]))}"
        console.print(text, soft_wrap=True)
    console.print(f"fired at {len(fired)} (row, position) pairs: "
                  + ", ".join(f"row {f['row']} pos {f['position']} (step {f['step']})" for f in fired[:12]))
    line = [("steered", result["summary"]["steered"])] + [(f"random seed {c['seed']}", c) for c in controls]
    if shows is not None:
        line = [("plain", result["summary"]["plain"])] + line
    console.print(table("share of prompts: completion changed vs plain" + (f", {metric}" if metric else ""),
                        [{"run": name, "changed": v["changed"],
                          **({"metric": v["metric_rate"]} if shows is not None else {})} for name, v in line]))
