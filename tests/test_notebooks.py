"""The tutorial notebooks: each jupytext pair is in sync, and each notebook runs top to bottom on the organism
(its last cell asserts what the tutorial shows)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = sorted(p.stem for p in NOTEBOOKS.glob("*.py"))


def test_every_notebook_has_both_files():
    assert NAMES == sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) and len(NAMES) >= 2


@pytest.mark.parametrize("name", NAMES)
def test_pair_in_sync(name):
    import jupytext

    py = jupytext.read(NOTEBOOKS / f"{name}.py")
    nb = jupytext.read(NOTEBOOKS / f"{name}.ipynb")

    def cells(book):
        return [(c.cell_type, c.source.strip()) for c in book.cells]

    assert cells(py) == cells(nb), f"run `jupytext --sync notebooks/{name}.py`"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # committed without outputs


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    root = str(NOTEBOOKS.parent)
    monkeypatch.setenv("PYTHONPATH", root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert not list(tmp_path.glob("*.ipynb"))  # run in tmp_path; nothing written beside the notebooks
