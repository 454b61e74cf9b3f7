"""`lens capture` and `lens info`."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import BACKEND_HELP, REMOTE_HELP, TEMPLATE_HELP, console, emit_json, table
from .validate import choice, positive


def capture_cmd(
    ctx: typer.Context,
    model: str = typer.Option("organism:base", "--model", "-m", help="hub id, local folder, .gguf or bundled name"),
    inputs: Path = typer.Option(
        ..., "--inputs", "-i", help="JSONL: {\"text\"} or {\"prompt\",\"completion\"} per line"
    ),
    sites: str = typer.Option("all", "--sites", "-s",
                              help="comma-separated sites (blocks.L.hook_resid_post) or 'all' resid_post"),
    select: str = typer.Option("all", help="all | from:N (from:1 skips the first token) | last_prompt (= "
                                           "last_prompt_token, P-1) | first_generated_token (P) | positions:0,-1 | "
                                           "last:N | spans | regex:P | sentences"),
    out: Path = typer.Option(..., "--out", "-o", help="capture folder (resumed when it holds a partial run)"),
    batch_size: int = typer.Option(8, help="inputs per forward pass", callback=positive),
    dtype: str = typer.Option("float32", help="dtype of the stored activations: float32, bfloat16 or float16 "
                                               "(the model's own: lens --dtype ... capture)"),
    shard_rows: int = typer.Option(65536, help="rows per shard (bounds memory)", callback=positive),
    too_long: str = typer.Option("error", "--too-long", callback=choice("error", "truncate"),
                                 help="an input longer than the model's context: error (name it and stop) or "
                                      "truncate (keep its first tokens)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a capture of other inputs, sites or model "
                                                               "at --out (your other files there are kept)"),
    template: str = typer.Option(None, "--template", help=TEMPLATE_HELP),
    backend: str = typer.Option("lens", "--backend", help=BACKEND_HELP, callback=choice("lens", "nnsight")),
    remote: bool = typer.Option(False, "--remote", help=REMOTE_HELP),
    as_json: bool = typer.Option(False, "--json", help="print the manifest summary as JSON"),
) -> None:
    """Capture residual activations from a JSONL file into a folder of safetensors shards.

    With --backend nnsight each batch's forward runs as an nnsight trace (left-padded); the folder holds the
    same rows as lens's own capture."""
    from ..capture_folder import capture_to_disk
    from ..errors import LensError
    from ..selection import parse_select
    from ..sites import all_sites
    from .common import check_backend, check_templatable, load_backend, templated
    from .validate import iter_inputs

    check_backend(backend, remote, model)
    if dtype not in ("float32", "bfloat16", "float16"):
        raise LensError(f"dtype {dtype!r} is not one of float32, bfloat16, float16")
    from ..outputs import check_output

    check_output(out, "capture", overwrite=overwrite, inputs=[inputs], resumable=True)  # before the model loads
    parse_select(select)  # a bad selection fails before the model loads
    total = 0
    for item in iter_inputs(inputs):  # checks every line before the model loads
        if template is not None:
            check_templatable(total, item)
        total += 1
    if total == 0:
        raise LensError(f"input file {inputs} is empty; write one JSON object per line")
    m, lm = load_backend(ctx, model, backend, remote)  # --remote: no weights here (a meta module), NDIF runs them
    site_list = [s.name for s in all_sites(m)] if sites == "all" else [s for s in sites.split(",") if s.strip()]
    forward = None
    if lm is not None:
        from ..capture_memory import check_sites
        from ..interventions.backends.nnsight_capture import nnsight_forward

        forward = nnsight_forward(lm, m, check_sites(m, site_list), remote)
    folder = capture_to_disk(m, templated(iter_inputs(inputs), template, m), site_list, select, out=out,
                             batch_size=batch_size, dtype=dtype, shard_rows=shard_rows, progress=not as_json,
                             total=total, overwrite=overwrite, too_long=too_long, forward=forward,
                             padding_side="left" if forward is not None else "right")
    from ..distributed import ranks

    if not ranks().main:  # under torchrun: rank 0 reports for the whole job
        return
    summary = folder.summary()
    if as_json:
        emit_json(summary)
    else:
        console.print(table(f"capture {out}", list(summary.items())))


def info_cmd(
    folder: Path = typer.Argument(..., help="a capture folder (or any lens artifact folder with manifest.json)"),
    as_json: bool = typer.Option(False, "--json", help="print as JSON"),
) -> None:
    """Describe a capture folder: model, sites, selection, rows, shards, completeness."""
    from ..capture_folder import open_capture

    summary = open_capture(folder).summary(verify=True)  # every shard's size and checksum
    if as_json:
        emit_json(summary)
    else:
        console.print(table(f"capture {folder}", list(summary.items())))
