"""The tutorial notebooks: each jupytext pair is in sync, and each notebook runs top to bottom on the organism
(its last cell asserts what the tutorial shows)."""

from __future__ import annotations

import json
import os
import sys
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


def _kernel_manager(folder: Path):
    """A kernel manager whose only kernel runs this interpreter (`sys.executable -m ipykernel_launcher`).

    The spec is written under `folder`, so no installed kernelspec (user, system or the venv's
    share/jupyter) is needed and the kernel always sees the packages the tests see."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    spec = folder / "kernels" / "lens-tests"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "lens tests", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(spec.parent)], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name="lens-tests", kernel_spec_manager=specs)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))  # connection files
    root = str(NOTEBOOKS.parent)
    monkeypatch.setenv("PYTHONPATH", root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    before = sorted(NOTEBOOKS.iterdir())
    work = tmp_path / "work"
    work.mkdir()
    km = _kernel_manager(tmp_path / "jupyter")
    NotebookClient(nb, km=km, timeout=300, resources={"metadata": {"path": str(work)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors  # execute() raises on the first failing cell (the last cells assert the outcome)
    assert sorted(NOTEBOOKS.iterdir()) == before  # run in tmp_path: nothing written beside the notebooks
