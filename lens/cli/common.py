"""Shared CLI plumbing: one-line errors, JSON output, rich tables."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=False)
err_console = Console(stderr=True)


def load_options(ctx: typer.Context | None) -> dict:
    """This invocation's `lens --device/--dtype/--device-map` options (set by the top-level callback)."""
    while ctx is not None and ctx.parent is not None:
        ctx = ctx.parent
    obj = ctx.obj if ctx is not None else None
    return {k: v for k, v in (obj or {}).items() if v is not None}


def load(ctx: typer.Context | None, spec: str):
    """`lens.load_model(spec)` placed as the top-level options say."""
    from ..models import load_model

    return load_model(spec, **load_options(ctx))


def load_both(ctx: typer.Context | None, base: str, thinking: str):
    """`lens.load_pair(base, thinking)` placed as the top-level options say."""
    from ..models import load_pair

    return load_pair(base, thinking, **load_options(ctx))


def emit_json(obj: Any) -> None:
    """Print standard JSON (only JSON; NaN/inf as null) to stdout for scripts."""
    from ..artifacts import strict_json

    sys.stdout.write(json.dumps(strict_json(obj), indent=2, default=str, allow_nan=False) + "\n")


def table(title: str, rows: list[tuple[str, Any]] | list[dict]) -> Table:
    """A two-column key/value table, or a table with one column per dict key."""
    t = Table(title=title)
    if rows and isinstance(rows[0], dict):
        for key in rows[0]:
            t.add_column(str(key))
        for r in rows:
            t.add_row(*[_fmt(v) for v in r.values()])
    else:
        t.add_column("field")
        t.add_column("value")
        for k, v in rows:
            t.add_row(str(k), _fmt(v))
    return t


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    return str(v)
