"""The docs build (mkdocs, strict: a broken link or reference fails) and their Python examples run.

Every ```python block of docs/*.md runs, page by page in one namespace and a fresh process, in a scratch
folder; a block preceded by `<!-- no-run: reason -->` is a fragment and is only compiled.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- no-run:[^>]*-->\s*\n)?```python\n(.*?)```", re.S)
PAGES = sorted((ROOT / "docs").rglob("*.md"))


def blocks(page: Path) -> list[tuple[bool, str]]:
    return [(not no_run, code) for no_run, code in BLOCK.findall(page.read_text())]


def test_reference_and_guides_build_without_warnings(tmp_path):
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[dev]')")
    mkdocs = str(Path(sys.executable).parent / "mkdocs")
    done = subprocess.run([mkdocs, "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    html = (tmp_path / "site" / "reference" / "capture" / "index.html").read_text()
    assert "capture_to_disk" in html  # the reference is generated from the docstrings


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: str(p.relative_to(ROOT / "docs")))
def test_python_examples_run(page, tmp_path):
    code = []
    for runs, block in blocks(page):
        compile(block, str(page), "exec")  # fragments must at least be valid Python
        if runs:
            code.append(block)
    if not code:
        return
    if "nnsight" in "\n".join(code) and importlib.util.find_spec("nnsight") is None:
        pytest.skip("this page's examples run nnsight, the optional extra reasoning-lens[nnsight]")
    script = tmp_path / "page.py"
    script.write_text("\n".join(code))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
