"""Entry point of the `lens` command: registers every sub-command and turns errors into one line."""

from __future__ import annotations

import importlib
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
