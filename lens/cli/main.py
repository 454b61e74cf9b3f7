"""Entry point of the `lens` command: registers every sub-command and turns errors into one line."""

from __future__ import annotations

import importlib
import sys

import typer

from .capture_cmd import capture_cmd, info_cmd

app = typer.Typer(
    name="lens",
    help="Does a base model already contain the reasoning post-training seems to create?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("capture")(capture_cmd)
app.command("info")(info_cmd)

# Sub-apps live in their own modules; each is optional so a partial install still runs.
for _module, _name in [("organism", "organism")]:
    try:
        _sub = importlib.import_module(f"lens.cli.{_module}")
    except ModuleNotFoundError as _e:  # pragma: no cover - only while a sub-command is missing
        if _e.name != f"lens.cli.{_module}":
            raise
        continue
    app.add_typer(_sub.app, name=_name)


def main() -> None:
    """Run the CLI; a LensError (bad input) prints one line on stderr and exits with status 2."""
    from ..errors import LensError

    try:
        app()
    except LensError as e:
        print(f"lens: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("lens: interrupted (a capture resumes when re-run with the same --out)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
