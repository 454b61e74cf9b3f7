"""`lens organism train` and `lens organism eval`: regenerate and measure the bundled organism."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .validate import finite, non_negative, number, positive

app = typer.Typer(
    help="The bundled reasoning organism (tiny base/thinking/control models with known ground truth).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _cpu_only(ctx: typer.Context) -> None:
    """The organism is trained and evaluated on the CPU (its models are tiny)."""
    from .common import load_options

    if load_options(ctx):
        _fail("lens organism trains and evaluates on the CPU; drop --device/--dtype/--device-map")


def _fail(message: str) -> None:
    print(f"lens: error: {message}", file=sys.stderr)
    raise typer.Exit(2)


@app.command("train")
def train_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="folder that receives one folder per model (base, thinking, "
                                                       "control; for the verifier pair its two models)"),
    pair: str = typer.Option("sums", help="which pair: sums (the first; base, thinking, control) or verifier "
                                          "(slips at carries, checks; its control is the first pair's)"),
    steps: int = typer.Option(1800, help="pretraining steps (batch 32 x 256 tokens)", callback=positive),
    which: str = typer.Option("base,thinking,control", help="comma-separated subset to (re)build"),
    threads: int = typer.Option(1, help="torch CPU threads with --sequential (1 is fastest when the cores are shared)",
                                callback=positive),
    parallel: bool = typer.Option(True, "--parallel/--sequential",
                                  help="pretrain the control in a second process alongside base + thinking"),
    overwrite: bool = typer.Option(False, "--overwrite", help="rebuild models that are already finished in --out "
                                                               "(your other files there are kept)"),
    as_json: bool = typer.Option(False, "--json", help="print each model's training record as JSON (progress goes "
                                                      "to stderr)"),
) -> None:
    """Regenerate the organism from scratch with a fixed seed (resumes an interrupted run)."""
    import torch

    from lens.organism import PAIRS
    from lens.organism.train import PretrainConfig, train_all

    if pair not in PAIRS:
        _fail(f"unknown pair {pair!r}; choose from {', '.join(PAIRS)}")
    if pair == "verifier-rl":
        _fail("the verifier-rl thinking model is made by RL, not by this command: lens rl train organism:verifier-base "
              "--regime one --problem 2 --steps 100 --lr 3e-5 --generations 8 --prompts-per-step 2 "
              "--max-new-tokens 220 --seed 0 --out DIR (see docs/organism.md)")
    names = tuple(w.strip() for w in which.split(",") if w.strip())
    allowed = ("base", "thinking", "control") if pair == "sums" else ("base", "thinking")
    if pair != "sums" and which == "base,thinking,control":
        names = allowed
    bad = [n for n in names if n not in allowed]
    if bad:
        extra = "" if pair == "sums" else " (the verifier pair's control is the first pair's: use --pair sums)"
        _fail(f"unknown model(s) {', '.join(bad)}; choose from {', '.join(allowed)}{extra}")
    if steps < 1:
        _fail("--steps must be positive")
    folder = dict(zip(("base", "thinking", "control"), PAIRS[pair], strict=True))
    if "thinking" in names and "base" not in names and not (out / folder["base"] / "config.json").exists():
        _fail(f"building thinking alone needs {out / folder['base']}; add base to --which")
    from ..outputs import check_output, writer_lock

    check_output(out, "organism", resumable=True)  # new, empty, or an organism folder being (re)built
    _check_targets(out, tuple(folder[n] for n in names), overwrite)
    torch.set_num_threads(max(1, threads))
    with writer_lock(out, "organism"):
        log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if as_json else print
        if pair == "sums":
            infos = train_all(out, pre=PretrainConfig(steps=steps), which=names, parallel=parallel, log=log)
        else:
            from lens.organism.train import train_verifier

            torch.set_num_threads(min(2, max(1, threads)) if not parallel else 2)
            infos = train_verifier(out, pre=PretrainConfig(steps=steps), which=tuple(folder[n] for n in names),
                                   log=log)
    if as_json:
        from .common import emit_json

        emit_json({name: {**info, "folder": str(out / name)} for name, info in infos.items()})
        return
    for name, info in infos.items():
        print(f"{name}: {info.get('train_seconds')} s -> {out / name}")


def _check_targets(out: Path, names: tuple[str, ...], overwrite: bool) -> None:
    """Refuse to rebuild into `out/<name>` a folder lens did not write, or (without --overwrite) a finished
    model that no interrupted run of this command is resuming."""
    from ..outputs import is_lens_model

    for name in names:
        sub = out / name
        if not sub.exists() or (sub.is_dir() and not any(sub.iterdir())):
            continue
        if not is_lens_model(sub):
            _fail(f"{sub} is not a model lens trained (no lens training.json); choose another --out "
                  "(lens never replaces a folder it did not write)")
        resuming = (out / ".ckpt" / f"{name}.json").exists() and not name.endswith("thinking")
        if not overwrite and not resuming:
            _fail(f"{sub} already holds a finished {name} model; pass --overwrite to rebuild it "
                  "or choose another --out")


def _check_layer(model_dir: Path | None, layer: int) -> None:
    """`layer` is a layer of the organism's base model (read from its config.json when there is one)."""
    import json

    from lens.organism import MODELS_DIR

    from .validate import check_layer

    config = (model_dir or MODELS_DIR) / "base" / "config.json"
    try:
        n_layers = int(json.loads(config.read_text())["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # a missing or unreadable model is reported when it is loaded
    check_layer("--layer", layer, n_layers)


@app.command("eval")
def eval_cmd(
    model_dir: Path = typer.Option(
        None, "--model-dir", "-m", help="folder holding the pair's model folders, as lens organism train writes "
                                        "them (default: the bundled copy)"
    ),
    pair: str = typer.Option("sums", help="which pair to measure: sums (the first), verifier, or verifier-rl (the "
                                          "verifier base against its RL-made thinking model)"),
    n: int = typer.Option(500, help="held-out problems for greedy metrics", callback=positive),
    samples: int = typer.Option(16, help="T=1 base samples per problem (pass@k up to this k; at least 4)",
                                callback=number(4, integer=True)),
    sample_problems: int = typer.Option(200, help="problems that get T=1 samples", callback=positive),
    layer: int = typer.Option(1, help="decoder layer (0-based) whose output is read and steered",
                              callback=non_negative),
    scale: float = typer.Option(0.5, help="direction norm as a multiple of the residual norm", callback=finite),
    as_json: bool = typer.Option(False, "--json", help="print JSON only"),
) -> None:
    """Measure every property of an organism pair and print the table (`--json` for the raw numbers)."""
    from lens.organism import PAIRS
    from lens.organism.evaluate import evaluate, format_value

    if pair not in PAIRS:
        _fail(f"unknown pair {pair!r}; choose from {', '.join(PAIRS)}")
    if model_dir is not None and not model_dir.is_dir():
        _fail(f"model folder {model_dir} does not exist")
    if pair in ("verifier", "verifier-rl"):
        from lens.organism.verifier_eval import evaluate_verifier

        def measure(model_dir, n, samples, sample_problems, log, **_):
            return evaluate_verifier(model_dir, n=n, samples=samples, sample_problems=sample_problems, log=log,
                                     thinking=PAIRS[pair][1])
    else:
        _check_layer(model_dir, layer)
        measure = evaluate
    try:
        result = measure(
            model_dir,
            n=n,
            samples=samples,
            sample_problems=min(sample_problems, n),
            layer=layer,
            scale=scale,
            log=None if as_json else print,
        )
    except (FileNotFoundError, ValueError, IndexError) as e:
        _fail(str(e))
    if as_json:
        from lens.cli.common import emit_json

        emit_json(result)
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"organism properties, {pair} pair ({model_dir or 'bundled'})")
    for col in ("property", "measured", "target", "pass"):
        t.add_column(col)
    for r in result["properties"]:
        ok = "" if r["pass"] is None else ("[green]yes[/]" if r["pass"] else "[red]no[/]")
        t.add_row(r["name"], format_value(r["value"]), r["target"], ok)
    Console().print(t)
    print(f"eval took {result['metrics']['eval_seconds']} s")
