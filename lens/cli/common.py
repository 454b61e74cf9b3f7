"""Shared CLI plumbing: one-line errors, JSON output, rich tables."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

# no emoji codes: a prompt, path or selection such as "generated:A:B" prints as written, not with an emoji
console = Console(stderr=False, emoji=False)
err_console = Console(stderr=True, emoji=False)


def load_options(ctx: typer.Context | None) -> dict:
    """This invocation's `lens --device/--dtype/--device-map` options (set by the top-level callback)."""
    while ctx is not None and ctx.parent is not None:
        ctx = ctx.parent
    obj = ctx.obj if ctx is not None else None
    return {k: v for k, v in (obj or {}).items() if v is not None}


# Libraries that read model files; an exception they define, raised while loading, means unusable files.
_LOADERS = ("safetensors", "gguf", "tokenizers", "transformers", "huggingface_hub")


def _unreadable(e: Exception) -> bool:
    """Whether `e`, raised while loading a model, says its files are corrupt, truncated or unsupported
    (a truncated GGUF raises struct.error or ValueError, truncated safetensors a SafetensorError, a broken
    tokenizer.json a ValueError or KeyError, weights of another shape a RuntimeError, ...)."""
    import struct

    import torch

    from ..errors import LensError

    if isinstance(e, (LensError, OSError, torch.cuda.OutOfMemoryError)):  # each has its own line (lens.cli.main)
        return False
    if isinstance(e, (ValueError, KeyError, IndexError, EOFError, struct.error, RuntimeError)):
        return True
    return type(e) is Exception or type(e).__module__.split(".")[0] in _LOADERS


def load(ctx: typer.Context | None, spec: str):
    """`lens.load_model(spec)` placed as the top-level options say; corrupt, truncated or unsupported
    model files fail with one LensError naming the spec."""
    from ..errors import LensError, check_text
    from ..models import load_model

    check_text("the model spec", spec)
    try:
        return load_model(spec, **load_options(ctx))
    except Exception as e:
        if not _unreadable(e):
            raise
        kind = type(e).__name__ if type(e).__module__ == "builtins" else \
            f"{type(e).__module__.split('.')[0]}.{type(e).__name__}"
        detail = " ".join(str(e).split())[:200]
        raise LensError(f"cannot load model {spec!r}: its files are corrupt, truncated or not a supported model "
                        f"({kind}: {detail}); re-download or re-export it, or pass another model") from None


def load_both(ctx: typer.Context | None, base: str, thinking: str):
    """`lens.load_pair(base, thinking)` placed as the top-level options say (each loaded as `load` does)."""
    from ..models import load_pair

    return load_pair(load(ctx, base), load(ctx, thinking))


def emit_json(obj: Any) -> None:
    """Print standard JSON (only JSON; NaN/inf as null) to stdout for scripts."""
    from ..artifacts import strict_json

    sys.stdout.write(json.dumps(strict_json(obj), indent=2, default=str, allow_nan=False) + "\n")


def table(title: str, rows: list[tuple[str, Any]] | list[dict]) -> Table:
    """A two-column key/value table, or a table with one column per dict key (cells print as written:
    no rich markup is read from them)."""
    t = Table(title=Text(title))
    if rows and isinstance(rows[0], dict):
        for key in rows[0]:
            t.add_column(Text(str(key)))
        for r in rows:
            t.add_row(*[Text(_fmt(v)) for v in r.values()])
    else:
        t.add_column("field")
        t.add_column("value")
        for k, v in rows:
            t.add_row(Text(str(k)), Text(_fmt(v)))
    return t


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


TEMPLATE_HELP = ("prompt template applied to each input's prompt (or text) before the model reads it: chat (the "
                 "model's chat template), plain, user_assistant, r1_zero, identity, or a format string with "
                 "{question}; default: inputs as written")


def templated(items, template: str | None, model):
    """The inputs with `template` applied to each one's prompt ({"prompt"}), text ({"text"}) or string, built with
    the model's tokenizer; token-id inputs are refused (a template applies to text). None: unchanged."""
    from ..evaluation.templates import apply_template

    if template is None:
        yield from items
        return
    for n, item in enumerate(items):
        check_templatable(n, item)
        if isinstance(item, str):
            yield apply_template(template, [item], model.tokenizer)[0]
        elif isinstance(item.get("prompt"), str):
            yield {**item, "prompt": apply_template(template, [item["prompt"]], model.tokenizer)[0]}
        else:
            yield {**item, "text": apply_template(template, [item["text"]], model.tokenizer)[0]}


def check_templatable(n: int, item) -> None:
    """Refuse an input a template cannot apply to (token ids; character spans it would move), naming it."""
    from ..errors import LensError

    if isinstance(item, str):
        return
    if isinstance(item, dict) and item.get("spans"):
        raise LensError(f"input {n}: its character spans refer to the text as written; a template would move "
                        "them: drop --template or write the spans against the templated text")
    if not (isinstance(item, dict) and (isinstance(item.get("prompt"), str) or isinstance(item.get("text"), str))):
        raise LensError(f"input {n}: --template applies to texts and prompts, not to token ids; drop --template "
                        "or give the input as text")


BACKEND_HELP = ("lens (default: lens's own hooks) or nnsight (the same work as edits and reads inside nnsight traces, "
                "left-padded batches)")
REMOTE_HELP = ("with --backend nnsight: run the model on NDIF (nnsight's remote=True, a hub model only; no weights "
               "load here, only its config and tokenizer; a pass through to nnsight, not tested by lens)")


def check_backend(backend: str, remote: bool, spec: str) -> None:
    """Refuse, before the model loads, --remote without --backend nnsight and a remote run of a model NDIF
    cannot serve (anything but a hub id)."""
    from ..errors import LensError
    from ..models import _resolve_spec

    if backend == "nnsight":  # before the model loads: the extra may be missing
        from ..interventions.backends.nnsight_backend import require_nnsight

        require_nnsight()
    if not remote:
        return
    if backend != "nnsight":
        raise LensError("--remote runs the model on NDIF through nnsight; add --backend nnsight")
    source = _resolve_spec(spec)[0]
    if source != "hub":
        raise LensError(f"--remote runs Hugging Face hub models on NDIF; {spec} is a {source} model: drop --remote "
                        "or pass a hub id")


def load_backend(ctx: typer.Context | None, spec: str, backend: str, remote: bool):
    """(lens `Model`, nnsight model or None) for `--backend`/`--remote`: lens loads the weights (`load`) and, for
    nnsight, wraps them; with --remote nothing is loaded here but the config and tokenizer (nnsight builds the
    module on the meta device, NDIF runs it: `nnsight_backend.remote_model`), and the placement options
    (--device, --dtype, --device-map) are refused, since they place weights that are not here."""
    from ..errors import LensError

    if not remote:
        m = load(ctx, spec)
        if backend != "nnsight":
            return m, None
        from ..interventions.backends.nnsight_backend import language_model

        return m, language_model(m)
    from ..errors import check_text
    from ..interventions.backends.nnsight_backend import remote_model

    check_text("the model spec", spec)
    placed = sorted(load_options(ctx))
    if placed:
        raise LensError("--remote runs the model on NDIF, whose deployment places it; drop "
                        + ", ".join(f"--{k.replace('_', '-')}" for k in placed))
    try:
        lm, m = remote_model(spec)
    except OSError as e:
        raise LensError(f"--remote needs {spec}'s config and tokenizer here (the weights stay on NDIF) and cannot "
                        f"read them: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}") from None
    return m, lm


PAPER_PAIR_HELP = ("one of the hybrid paper's pairs by name (r1-math1.5b, r1-llama8b, qwq-32b, orz-7b, ...; "
                   "lens.hybrid.paper_pairs): sets --base and --thinking to its hub ids; give --tasks")


def given(ctx, name: str) -> bool:
    """Whether option `name` was typed on the command line (not its default, not the environment)."""
    return getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"


def paper_pair_models(name: str, *, models_named: bool, others: str = "--base/--thinking") -> tuple[str, str]:
    """(base, thinking) hub ids of the paper pair `name`; refused in one line when the models were named too."""
    from ..errors import LensError
    from ..hybrid.paper_pairs import by_name

    if models_named:
        raise LensError(f"--paper-pair names both models; drop {others} (or --paper-pair)")
    chosen = by_name(name)
    return chosen.base, chosen.thinking
