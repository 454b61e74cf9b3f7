"""The docs build (mkdocs, strict: a broken link or reference fails) and their Python examples run.

Every ```python block of docs/*.md runs, page by page in one namespace and a fresh process, in a scratch
folder; a block preceded by `<!-- no-run: reason -->` is a fragment and is only compiled. A ```bash block
preceded by `<!-- run -->` runs as it is (bash -e, the page's marked blocks in order, in an empty folder, with
`lens` on the PATH). Every `lens` command in the shell and untagged blocks of docs/ and README.md is parsed by
the CLI (command, options, values), whether it runs or not.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- no-run:[^>]*-->\s*\n)?```python\n(.*?)```", re.S)
PAGES = sorted((ROOT / "docs").rglob("*.md"))
SHELL_RUN = re.compile(r"<!-- run -->\s*\n```bash\n(.*?)```", re.S)


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


@pytest.mark.parametrize("page", [p for p in PAGES if SHELL_RUN.search(p.read_text())],
                         ids=lambda p: str(p.relative_to(ROOT / "docs")))
def test_marked_shell_examples_run(page, tmp_path):
    """The page's `<!-- run -->` shell blocks, as a user would paste them: every command exits 0."""
    script = "set -euo pipefail\n" + "\n".join(SHELL_RUN.findall(page.read_text()))
    assert "lens " in script
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])


def shell_blocks(text: str) -> list[str]:
    """The bodies of the fenced blocks of a page that are shell or untagged (```bash, ```sh, ```console, ```)."""
    out, body, lang = [], None, None
    for line in text.splitlines():
        if line.startswith("```"):
            if body is None:
                lang, body = line[3:].strip(), []
            else:
                if lang in ("", "bash", "sh", "console", "shell"):
                    out.append("\n".join(body))
                body = None
        elif body is not None:
            body.append(line)
    return out


def shell_lens_commands() -> list[tuple[str, list[str]]]:
    """(page, argv after `lens`) of every `lens ...` command in the shell and untagged blocks of docs/ and README.md
    (lines joined at backslashes; comments, `VAR=value` prefixes, redirections and the other commands of a pipeline
    left out)."""
    import shlex

    out = []
    for page in [*PAGES, ROOT / "README.md"]:
        for block in shell_blocks(page.read_text()):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                for part in re.split(r"\s*(?:\||&&|;)\s*", line.split(" #", 1)[0].strip()):
                    part = re.split(r"\s[12]?>", part.strip())[0]
                    part = re.sub(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)+", "", part)  # OMP_NUM_THREADS=1 lens ...
                    if part.startswith("lens "):  # "[--opt X]" (optional) is checked as "--opt X"
                        out.append((page.name, shlex.split(part.replace("[", "").replace("]", ""))[1:]))
    return out


def test_every_lens_command_in_the_docs_parses():
    """Most shell blocks are not run (some take the 15-minute budget); each `lens` command in them must name a
    command that exists with options it takes and values its checks accept, as the CLI parses them."""
    import typer

    from lens.cli.main import app

    commands = shell_lens_commands()
    assert len(commands) >= 40
    bad = []
    for page, argv in commands:
        cmd, rest, path = typer.main.get_command(app), list(argv), ["lens"]
        try:
            while hasattr(cmd, "list_commands"):  # a group: its own options, then a subcommand
                while rest and rest[0].startswith("-"):
                    opt = rest.pop(0).split("=", 1)
                    param = next((q for q in cmd.params if opt[0] in getattr(q, "opts", ())), None)
                    if param is None:
                        raise ValueError(f"{' '.join(path)} has no option {opt[0]}")
                    if len(opt) == 1 and not getattr(param, "is_flag", False):
                        rest.pop(0)  # its value
                if not rest:
                    break
                sub = cmd.get_command(None, rest[0])
                if sub is None:
                    raise ValueError(f"no command {' '.join(path)} {rest[0]}")
                path.append(rest.pop(0))
                cmd = sub
            if "--help" not in rest:  # `lens X --help` is a valid line (click exits at the flag)
                given = [a for i, a in enumerate(rest) if a != "..." or (i and rest[i - 1].startswith("-"))]
                cmd.make_context(" ".join(path), given)  # "..." stays only as an option's value
        except Exception as e:  # noqa: BLE001 - a click usage error, a validation error, an unknown command
            if "..." in argv and type(e).__name__ == "MissingParameter":
                continue  # "lens steer ... --where X": the elided part holds the required options
            bad.append(f"{page}: lens {' '.join(argv)}: {getattr(e, 'format_message', lambda e=e: str(e))()}")
    assert not bad, "\n".join(bad)
