"""The `lens` command line (typer). Sits on top of the library; nothing below imports it."""
