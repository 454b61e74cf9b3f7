"""`lens capture` and `lens info`."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import console, emit_json, table


def capture_cmd(
    ctx: typer.Context,
    model: str = typer.Option("organism:base", "--model", "-m", help="hub id, local folder, .gguf or bundled name"),
    inputs: Path = typer.Option(
        ..., "--inputs", "-i", help="JSONL: {\"text\"} or {\"prompt\",\"completion\"} per line"
    ),
    sites: str = typer.Option("all", "--sites", "-s",
                              help="comma-separated sites (blocks.L.hook_resid_post) or 'all' resid_post"),
    select: str = typer.Option("all", help="all | last_prompt | positions:0,-1 | last:N | spans | regex:P | sentences"),
    out: Path = typer.Option(..., "--out", "-o", help="capture folder (resumed when it holds a partial run)"),
    batch_size: int = typer.Option(8, help="inputs per forward pass"),
    dtype: str = typer.Option("float32", help="dtype of the stored activations: float32, bfloat16 or float16 "
                                               "(the model's own: lens --dtype ... capture)"),
    shard_rows: int = typer.Option(65536, help="rows per shard (bounds memory)"),
    as_json: bool = typer.Option(False, "--json", help="print the manifest summary as JSON"),
) -> None:
    """Capture residual activations from a JSONL file into a folder of safetensors shards."""
    from ..capture import capture
    from ..capture_folder import read_jsonl
    from ..errors import LensError
    from ..sites import all_sites
    from .common import load

    if not inputs.is_file():
        raise LensError(f"input file {inputs} does not exist")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise LensError(f"dtype {dtype!r} is not one of float32, bfloat16, float16")
    m = load(ctx, model)
    site_list = [s.name for s in all_sites(m)] if sites == "all" else [s for s in sites.split(",") if s.strip()]
    total = sum(1 for _ in read_jsonl(inputs))  # validates every line before any work starts
    if total == 0:
        raise LensError(f"input file {inputs} is empty; write one JSON object per line")
    folder = capture(m, read_jsonl(inputs), site_list, select, batch_size=batch_size, out=out, dtype=dtype,
                     shard_rows=shard_rows, progress=not as_json, total=total)
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

    summary = open_capture(folder).summary()
    if as_json:
        emit_json(summary)
    else:
        console.print(table(f"capture {folder}", list(summary.items())))
