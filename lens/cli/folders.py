"""Two capture folders as the two sides of a contrast (`--pos DIR --neg DIR`), checked before use."""

from __future__ import annotations

from pathlib import Path

from ..errors import LensError


def same_spec(spec: str, made: str) -> bool:
    """Whether two model specs name one model: equal, or two spellings of one folder (./m, m)."""
    if Path(spec).exists() and Path(made).exists():
        return Path(spec).resolve() == Path(made).resolve()
    return spec == made


def contrast_folders(pos: Path | None, neg: Path | None) -> tuple:
    """(pos folder, neg folder, the resid_post sites both hold in layer order): both complete, captured from
    one model's weights with one selection; refused with one line when they cannot be compared."""
    from ..capture_folder import open_capture
    from ..sites import Site

    if pos is None or neg is None or not (pos.is_dir() and neg.is_dir()):
        raise LensError("give --pos and --neg both as capture folders, or both as JSONL files")
    a, b = open_capture(pos), open_capture(neg)
    for f in (a, b):
        if not f.complete:
            raise LensError(f"capture folder {f.path} is not complete; re-run the same `lens capture` to finish it")
    if a.model.get("fingerprint") != b.model.get("fingerprint"):
        raise LensError(f"--pos was captured from {a.model.get('spec')} and --neg from {b.model.get('spec')} (other "
                        "weights); capture both from one model")
    if a.manifest["select"] != b.manifest["select"]:
        raise LensError(f"--pos selected {a.manifest['select']!r} and --neg {b.manifest['select']!r}; capture both "
                        "with one selection")
    sites = sorted(Site.parse(s) for s in set(a.sites) & set(b.sites) if Site.parse(s).kind == "hook_resid_post")
    if not sites:
        raise LensError("the two capture folders share no resid_post site; capture blocks.<L>.hook_resid_post")
    return a, b, [s.name for s in sites]
