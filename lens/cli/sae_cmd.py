"""`lens sae train|eval|info`: SAEs on capture folders or streamed from a model, saved in the sae_lens folder format."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from saes.config import BUILTIN_ARCHITECTURES

from .common import TEMPLATE_HELP, console, emit_json, load_options, table
from .validate import choice, fraction, non_negative, non_negative_float, positive, positive_float

app = typer.Typer(help="Train, evaluate and describe SAEs (sae_lens architectures and format).", no_args_is_help=True)

OPTION_FORM = ("use KEY=VALUE, a field of the architecture's sae_lens config class and its value as JSON "
               "(e.g. matryoshka_widths=[64,256], aux_loss_coefficient=0.5, use_matryoshka_aux_loss=true) or "
               "else a string")


def parse_options(items: list[str] | None) -> dict:
    """`--option KEY=VALUE` items as TrainConfig.options: each VALUE parsed as JSON when it is JSON, else kept
    as a string. A malformed item or a key given twice raises a LensError."""
    from ..errors import LensError

    options: dict = {}
    for item in items or []:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise LensError(f"--option {item!r}: {OPTION_FORM}")
        if key in options:
            raise LensError(f"--option {key} is given twice; give each option once")
        try:
            options[key] = json.loads(text)
        except ValueError:
            options[key] = text
    return options


def import_modules(modules: list[str] | None) -> None:
    """Import each `--import` module (e.g. one that registers an SAE architecture with sae_lens)."""
    import importlib

    from ..errors import LensError

    for module in modules or []:
        try:
            importlib.import_module(module)
        except Exception as e:  # the user's module: any failure to import it is theirs to fix
            why = (str(e).splitlines() or [""])[0][:200]
            raise LensError(f"--import {module}: cannot import it ({type(e).__name__}: {why}); give a module on "
                            "the Python path (e.g. PYTHONPATH=. for one in this folder)") from None


@app.command("train")
def train(
    ctx: typer.Context,
    capture: Path = typer.Option(None, "--capture", "-c", help="capture folder written by lens capture"),
    model: str = typer.Option(None, "--model", "-m", help="stream activations from this model's forward passes "
                                                          "(no capture folder; with --inputs and --site)"),
    inputs: Path = typer.Option(None, "--inputs", "-i", help="JSONL inputs for --model (re-read every epoch)"),
    select: str = typer.Option("all", help="tokens to train on with --model: all | from:N | last_prompt | "
                                           "positions:0,-1 | last:N | spans | regex:P | sentences"),
    forward_batch: int = typer.Option(8, help="inputs per forward pass with --model", callback=positive),
    out: Path = typer.Option(..., "--out", "-o", help="SAE folder (resumed when it holds an interrupted run)"),
    site: str = typer.Option(None, help="site to train on (default: the capture's only site; required with "
                                        "--model)"),
    architecture: str = typer.Option(
        "topk", "--arch",
        help=f"SAE architecture, a name in sae_lens's training registry: {' | '.join(BUILTIN_ARCHITECTURES)}, "
             "or one a module given with --import registers"),
    option: list[str] = typer.Option(
        None, "--option", metavar="KEY=VALUE",
        help="a setting of the architecture's sae_lens config class (repeatable); VALUE is read as JSON when it "
             "is JSON, else as a string: --option matryoshka_widths=[64,256] --option aux_loss_coefficient=0.5"),
    imports: list[str] = typer.Option(
        None, "--import", metavar="MODULE",
        help="import this Python module first (repeatable), e.g. one that calls "
             "sae_lens.register_sae_training_class to add an architecture"),
    expansion: int = typer.Option(8, help="d_sae = expansion x d_in (unless --d-sae)", callback=positive),
    d_sae: int = typer.Option(None, help="number of latents", callback=positive),
    k: int = typer.Option(16, help="active latents per row (topk, abstopk) or on average per row (batchtopk, "
                                   "matryoshka_batchtopk); at most d_sae", callback=positive),
    l1: float = typer.Option(5.0, help="L1 coefficient (standard, gated)", callback=non_negative_float),
    l0: float = typer.Option(1.0, help="L0 coefficient (jumprelu)", callback=non_negative_float),
    lr: float = typer.Option(1e-3, help="learning rate (> 0)", callback=positive_float),
    total_rows: int = typer.Option(200_000, help="training rows (the capture is re-read in epochs)",
                                   callback=positive),
    batch_size: int = typer.Option(1024, callback=positive),
    buffer_rows: int = typer.Option(32_768, help="shuffling buffer size in rows (bounds memory)", callback=positive),
    normalize: str = typer.Option("none", help="none | expected_average_only_in",
                                  callback=choice("none", "expected_average_only_in")),
    checkpoint_every: int = typer.Option(200, help="steps between checkpoints (0: none; a killed run restarts)",
                                         callback=non_negative),
    seed: int = typer.Option(0, callback=non_negative),
    sparse_decode: bool = typer.Option(
        True, "--sparse-decode/--dense-decode",
        help="topk/batchtopk: decode each batch from its active latents (same step, less work) or run "
             "sae_lens's dense step as it is"),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="replace a finished SAE (or another run's checkpoints) at --out; "
                                        "your other files there are kept"),
    template: str = typer.Option(None, "--template", help=TEMPLATE_HELP + " (with --model and --inputs)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Train an SAE on a capture folder or on a model's activations streamed as it runs over --inputs;
    shows progress, checkpoints, resumes when re-run. Under torchrun / accelerate launch the training is
    data-parallel (each process its share of every batch) and rank 0 reports."""
    from saes.config import TrainConfig, registered_architectures
    from saes.evals import evaluate
    from saes.io import load_sae
    from saes.stream import head_rows
    from saes.train import train_sae

    from ..capture_folder import open_capture
    from ..distributed import ranks
    from ..errors import LensError

    options = parse_options(option)
    import_modules(imports)
    if architecture not in (known := registered_architectures()):
        raise LensError(f"--arch {architecture!r} is not in sae_lens's training registry; use one of "
                        f"{', '.join(known)}, or --import a module that registers it")
    cfg = TrainConfig(architecture=architecture, d_sae=d_sae, expansion=expansion, k=k, l1_coefficient=l1,
                      l0_coefficient=l0, lr=lr, total_rows=total_rows, batch_size=batch_size, buffer_rows=buffer_rows,
                      normalize=normalize, checkpoint_every=checkpoint_every, seed=seed, sparse_decode=sparse_decode,
                      options=options, device=str(load_options(ctx).get("device", "cpu")))  # `lens --device cuda ...`
    cfg.validate()  # the options against the architecture's config class, before any data is read
    if (capture is None) == (model is None):
        raise LensError("give --capture DIR (a capture folder) or --model SPEC with --inputs FILE and --site "
                        "(activations streamed from the model), not both")
    if capture is not None:
        if inputs is not None:
            raise LensError("--inputs goes with --model (streamed training); --capture already holds the rows")
        if template is not None:
            raise LensError("--template formats --inputs for --model; a --capture folder holds activations already")
        cfg.check_width(open_capture(capture).d_model)  # --k against d_sae, before anything is written
        source = capture
    else:
        from saes.stream import model_source

        from ..outputs import check_output
        from ..selection import parse_select
        from .common import load, templated
        from .validate import iter_inputs

        if inputs is None or site is None:
            raise LensError("--model streams activations: give --inputs FILE (JSONL) and --site NAME too")
        check_output(out, "sae", overwrite=overwrite, inputs=[inputs], resumable=True)  # before the model loads
        parse_select(select)
        if not any(True for _ in iter_inputs(inputs)):  # checks every line before the model loads
            raise LensError(f"input file {inputs} is empty; write one JSON object per line")
        m = load(ctx, model)
        cfg.check_width(m.d_model)
        if template is not None:  # each epoch re-reads the file and formats it again (the hash names the result)
            source = model_source(m, lambda: templated(iter_inputs(inputs), template, m), site, select,
                                  batch_size=forward_batch)
        else:
            source = model_source(m, inputs, site, select, batch_size=forward_batch)
    res = train_sae(source, out, cfg, site=site, progress=not as_json, overwrite=overwrite)
    if not ranks().main:  # under torchrun: rank 0 reports for the whole job
        return
    d = load_sae(res.path)
    ev = evaluate(d, capture if capture is not None else head_rows(source, 8192))
    summary = {"path": str(res.path), "steps": res.steps, "rows": res.rows, "resumed_from": res.resumed_from,
               "rows_per_s": res.rows_per_s, **d.describe(), "evals": ev}
    if as_json:
        emit_json(summary)
    else:
        console.print(table(f"SAE {out}", list(summary.items())))


@app.command("eval")
def eval_cmd(
    ctx: typer.Context,
    sae: str = typer.Argument(..., help="SAE folder"),
    capture: Path = typer.Option(None, "--capture", "-c", help="capture folder for row metrics"),
    model: str = typer.Option(None, "--model", "-m", help="model for CE/KL with the SAE spliced in"),
    texts: Path = typer.Option(None, help="JSONL of texts for the spliced metrics"),
    dense_threshold: float = typer.Option(0.1, help="a latent firing on more than this share of rows is dense",
                                          callback=fraction),
    template: str = typer.Option(None, "--template", help=TEMPLATE_HELP + " (the --texts, with --model)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Explained variance, L0, dead/dense fractions; with --model and --texts, CE loss and KL recovered."""
    from saes.evals import evaluate
    from saes.io import load_sae

    from ..errors import LensError
    from ..selection import Example
    from .common import load, templated
    from .validate import check_fits, read_inputs

    if capture is None and (model is None or texts is None):
        raise LensError("give --capture DIR, or --model and --texts FILE, or both")
    if template is not None and (model is None or texts is None):
        raise LensError("--template formats the --texts for --model; give both")
    rows = read_inputs(texts, "--texts file") if texts else None
    m = load(ctx, model) if model else None
    items = [Example.of(x).text for x in templated(rows, template, m)] if rows is not None else None
    d = load_sae(sae, m)
    if m is not None and items:
        check_fits(m, items, "--texts input")
    ev = evaluate(d, capture, model=m, texts=items, dense_threshold=dense_threshold)
    if as_json:
        emit_json(ev)
    else:
        flat = [(k, v) for k, v in ev.items() if k != "spliced"] + list((ev.get("spliced") or {}).items())
        console.print(table(f"SAE {sae}", flat))


@app.command("info")
def info(sae: str = typer.Argument(..., help="SAE folder"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Describe an SAE folder: architecture, width, site, source model, stored evals."""
    from saes.io import load_sae

    d = load_sae(sae).describe()
    if as_json:
        emit_json(d)
    else:
        console.print(table(f"SAE {sae}", list(d.items())))
