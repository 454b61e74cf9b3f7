"""Entry point of the `lens` command: registers every sub-command and turns errors into one line."""

from __future__ import annotations

import importlib
import os
import sys

import typer

from . import directions_cmd, sae_cmd
from .capture_cmd import capture_cmd, info_cmd
from .diff_cmd import diff_cmd
from .find_feature_cmd import find_feature_cmd
from .hybrid_cmd import hybrid_cmd
from .reproduce_cmd import reproduce_cmd
from .steer_cmd import steer_cmd

app = typer.Typer(
    name="lens",
    help="Does a base model already contain the reasoning post-training seems to create?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help prints as written (rich turned `generated:A:B` into an emoji, `[x]` into a style)
)


@app.callback()
def _placement(
    ctx: typer.Context,
    device: str = typer.Option(None, "--device", help="where models run: cpu (default), cuda, cuda:N, mps "
                                                      "(and where `sae train` trains; SAEs are read on the CPU)"),
    dtype: str = typer.Option(None, "--dtype", help="model weights: float32 (default), bfloat16, float16"),
    device_map: str = typer.Option(None, "--device-map",
                                   help="'auto': spread a model too large for one device over the GPUs and CPU"),
) -> None:
    """Does a base model already contain the reasoning post-training seems to create?"""
    from ..models import check_placement

    check_placement(dtype, device, device_map)  # a bad value fails here, before any model is read
    ctx.obj = {"device": device, "dtype": dtype, "device_map": device_map}


app.command("capture")(capture_cmd)
app.command("info")(info_cmd)
app.command("reproduce")(reproduce_cmd)
app.command("steer")(steer_cmd)
app.command("hybrid")(hybrid_cmd)
app.command("diff")(diff_cmd)
app.command("find-feature")(find_feature_cmd)
app.add_typer(directions_cmd.app, name="directions")
app.add_typer(sae_cmd.app, name="sae")

# Sub-apps live in their own modules; each is optional so a partial install still runs.
for _module, _name in [("organism", "organism"), ("rl_cmd", "rl")]:
    try:
        _sub = importlib.import_module(f"lens.cli.{_module}")
    except ModuleNotFoundError as _e:  # pragma: no cover - only while a sub-command is missing
        if _e.name != f"lens.cli.{_module}":
            raise
        continue
    app.add_typer(_sub.app, name=_name)


INTERNAL = "lens: internal error (a bug): please report it with the traceback above"


def _os_problem(e: OSError) -> str:
    """One line for a failed file operation: what went wrong, on which path, and what to do."""
    import errno

    path = e.filename if e.filename is not None else None
    if path is not None and e.filename2 is not None:
        path = f"{e.filename} -> {e.filename2}"
    where = f" {path}" if path is not None else ""
    code = e.errno
    if isinstance(e, PermissionError):
        if path is not None and os.path.exists(e.filename) and not os.access(e.filename, os.R_OK):
            return f"no permission to read{where}; fix its permissions or pass another path"
        return f"no permission to write{where}; choose another --out or fix the permissions of its folder"
    if isinstance(e, FileExistsError):
        return f"{path or 'the output'} already exists (as a file where a folder is needed, or the other way " \
               "round); choose another --out or remove it"
    if isinstance(e, IsADirectoryError):
        return f"{path or 'a path'} is a folder where a file is expected; pass a file"
    if isinstance(e, NotADirectoryError):
        return f"{path or 'a path'} runs through a file where a folder is expected; choose another path"
    if isinstance(e, FileNotFoundError):
        return f"{path or 'a file'} does not exist (or its folder was removed meanwhile); check the path"
    if code == errno.ENOSPC or code == errno.EDQUOT:
        return f"no space left on the device (writing{where or ' the output'}); free space or choose another --out"
    if code == errno.EROFS:
        return f"{path or 'the output'} is on a read-only file system; choose another --out"
    if code == errno.ENAMETOOLONG:
        return f"a path is too long:{where}; choose a shorter one"
    reason = e.strerror or (str(e).splitlines() or [type(e).__name__])[0]
    return f"{reason}{(': ' + str(path)) if path is not None else ''}"


def expected_problem(e: BaseException) -> str | None:
    """The one-line message for an expected failure (bad input, an unusable file or path, no memory),
    or None for anything else (a bug)."""
    import torch

    from ..errors import LensError

    if isinstance(e, LensError):
        return str(e)
    if isinstance(e, OSError):
        return _os_problem(e)
    if isinstance(e, UnicodeEncodeError):
        bad = e.object[e.start:e.end] if isinstance(e.object, str) else ""
        return (f"cannot write {bad!r} as {e.encoding}: an input holds text that is not valid Unicode, or the "
                "terminal's encoding cannot show it; pass UTF-8 text (or set PYTHONIOENCODING=utf-8)")
    if isinstance(e, UnicodeDecodeError):
        return (f"a file is not {e.encoding} text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                "save it as UTF-8")
    oom = isinstance(e, RuntimeError) and any(m in str(e) for m in ("can't allocate memory", "out of memory",
                                                                      "not enough memory"))
    if isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)) or oom:
        return ("out of memory; use a smaller --batch-size (or fewer inputs, a smaller --d-sae), or another "
                "--device")
    if isinstance(e, RecursionError):
        return "a JSON file or input is nested too deeply to read; check the files this command reads"
    return None


def _close_bars() -> None:
    """Clear and close progress bars left open by a failed command, so the error line is the only one left."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or ()):
        bar.leave = False
        bar.close()


def _fail(problem: str | None, e: BaseException) -> None:
    """Exit for an exception: status 2 and one line for an expected problem, else the traceback and status 1."""
    import traceback

    _close_bars()
    if problem is None:
        traceback.print_exception(e)
        print(INTERNAL, file=sys.stderr)
        sys.exit(1)
    print("lens: error: " + " ".join(problem.splitlines()), file=sys.stderr)
    sys.exit(2)


def main() -> None:
    """Run the CLI. An expected failure (see `expected_problem`) prints one line `lens: error: ...` on
    stderr and exits with status 2; a usage error prints typer's usage message (status 2); anything else
    is a bug: its traceback, then one line asking for a report (status 1)."""
    try:
        code = app(standalone_mode=False)  # exceptions come here instead of typer's own handlers
    except typer.TyperException as e:  # usage errors: usage and message, as typer prints them
        from typer import core, rich_utils

        if core.HAS_RICH and hasattr(e, "ctx"):
            rich_utils.rich_format_error(e)
        elif hasattr(e, "show"):
            e.show()
        else:
            print(f"Error: {e.format_message()}", file=sys.stderr)
        sys.exit(e.exit_code)
    except typer.Abort as e:
        if e.__cause__ is None:
            print("lens: aborted", file=sys.stderr)
            sys.exit(1)
        _fail(expected_problem(e.__cause__), e.__cause__)
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # whoever read stdout stopped (lens ... | head): quietly, as typer does
        try:
            sys.stdout = open(os.devnull, "w")  # nothing left to flush at exit
        finally:
            sys.exit(1)
    except Exception as e:
        _fail(expected_problem(e), e)
    if code == 130:  # typer turns Ctrl-C into exit status 130
        _close_bars()
        print("lens: interrupted (a capture resumes when re-run with the same --out)", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
