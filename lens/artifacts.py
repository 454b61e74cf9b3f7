"""Atomic, self-describing artifact files: JSON and safetensors written via temp file + rename.

Every artifact carries metadata (source model facts, site, dtype, shapes, lens version, time),
and reading one that is missing, truncated or corrupt raises a LensError that says which file
and what to do.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .errors import LensError
from .outputs import file_mode


def lens_version() -> str:
    from . import __version__

    return __version__


def cache_dir() -> Path:
    """Where lens keeps what it builds on demand (SAEs, tokenizer folders): `$LENS_CACHE`, else the
    platform's user cache folder (never inside the repository or the system temporary folder)."""
    env = os.environ.get("LENS_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("reasoning-lens"))


def base_metadata(kind: str, **fields: Any) -> dict:
    """Common metadata block: artifact kind, lens and torch versions, creation time, plus `fields`."""
    return {
        "kind": kind,
        "lens_version": lens_version(),
        "torch_version": torch.__version__.split("+")[0],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **fields,
    }


def _atomic_replace(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())  # mkstemp makes it private (and writers may re-create it); the umask decides
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write a UTF-8 text file atomically (a reader sees the old file or the new one, never half)."""

    def w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    _atomic_replace(Path(path), w)


def write_generated(path: str | Path, text: str, *, check: bool = False, remedy: str = "regenerate it") -> int:
    """Write a generated file (a docs page made from result files) atomically, or with `check` compare only.

    Returns 0 (written, or up to date) or 1 (`check` and the file differs: one line on stderr says `remedy`).
    """
    import sys

    path = Path(path)
    if check:
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current != text:
            print(f"{path} is not up to date: {remedy}", file=sys.stderr)
            return 1
        return 0
    write_text(path, text)
    print(f"wrote {path}")
    return 0


def generated_page_main(argv: list[str] | None, *, description: str, default: Path, sources: list[Path],
                        render, root: Path, what: str, remedy: str) -> int:
    """The command line of a script that makes a docs page from result files: ``[--out PATH] [--check]``.

    Exit 2 with one line naming the `sources` that are missing (paths shown relative to `root`), else the
    return of `write_generated` for ``render()`` (0 written or up to date, 1 ``--check`` found it stale)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", type=Path, default=default,
                    help=f"where to write the page (default {default.relative_to(root)})")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 when --out differs from a fresh run")
    args = ap.parse_args(argv)
    missing = [str(p.relative_to(root)) for p in sources if not p.is_file()]
    if missing:
        print(f"missing {what} files: {', '.join(missing)}", file=sys.stderr)
        return 2
    return write_generated(args.out, render(), check=args.check, remedy=remedy)


def strict_json(obj: Any) -> Any:
    """`obj` with NaN and +-inf floats replaced by None, so the JSON written is standard (readable by jq,
    JavaScript, ...): e.g. a gap recovered of 0/0 when base and thinking score the same."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Write standard JSON (NaN/inf as null) atomically (a reader sees the old file or the new one, never half)."""

    def w(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(strict_json(obj), fh, indent=2, default=str, allow_nan=False)
            fh.write("\n")

    _atomic_replace(Path(path), w)


def read_json(path: str | Path, what: str = "artifact") -> Any:
    """Read JSON or raise a LensError naming the file (missing, truncated or not JSON)."""
    path = Path(path)
    if not path.exists():
        raise LensError(f"{what} file {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise LensError(f"{what} file {path} is corrupt or truncated ({e.msg if hasattr(e, 'msg') else e}); "
                        "re-create it") from None


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Save tensors to safetensors atomically; `metadata` (JSON-able) is stored under key "lens"."""
    from safetensors.torch import save_file

    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {"lens": json.dumps(metadata or {}, default=str)}
    _atomic_replace(Path(path), lambda tmp: save_file(flat, tmp, metadata=meta))


def load_tensors(path: str | Path, what: str = "artifact", keys: list[str] | None = None,
                 ) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a safetensors file written by `save_tensors`: (tensors, metadata). Clear error when damaged.

    keys: load only these tensors (a missing one is an error); default all.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise LensError(f"{what} file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("lens", "{}"))
            missing = sorted(set(keys or ()) - set(fh.keys()))
            tensors = {k: fh.get_tensor(k) for k in (keys or fh.keys())} if not missing else {}
    except Exception as e:  # safetensors raises several types for damaged files
        raise LensError(f"{what} file {path} is corrupt or truncated ({type(e).__name__}); re-create it") from None
    if missing:
        raise LensError(f"{what} file {path} has no tensor {', '.join(map(repr, missing))}; re-create it")
    for k, v in tensors.items():
        # one pass: NaN/inf make the sum non-finite (a huge finite sum is re-checked element by element)
        if v.is_floating_point() and not torch.isfinite(v.sum()) and not torch.isfinite(v).all():
            raise LensError(f"{what} file {path}: tensor {k!r} contains NaN or inf; re-create it")
    return tensors, meta


def file_digest(path: Path) -> dict:
    """Size and SHA-256 of a file, read in 8 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 23), b""):
            h.update(block)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}
