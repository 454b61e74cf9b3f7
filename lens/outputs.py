"""Where artifacts are written: output-path checks, one writer per folder, folders replaced in one step.

- `check_output(path, kind, ...)` refuses an output path that exists and is not an artifact of that
  kind (a user's folder, a plain file, the command's own input); replacing an artifact of the same
  kind needs `overwrite=True`, and even then the user's other files in that folder are kept.
- `writer_lock(folder)` is an advisory lock (`fcntl.flock` on `folder/.lens.lock`): a second writer
  is refused with one line naming the holder; the lock dies with its process, so a killed run never
  leaves a stale lock.
- `atomic_folder(out, own)` yields a temporary folder beside `out`; when the block ends without an
  error it takes `out`'s place in one rename (Linux `renameat2(RENAME_EXCHANGE)` when `out` exists),
  so a reader or a kill sees the old artifact or the new one, never neither and never half.
- `file_mode()` / `folder_mode()`: the permissions the user's umask gives new files and folders.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fnmatch
import json
import os
import re
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import LensError

LOCK_NAME = ".lens.lock"
TMP_TAG = ".lens-tmp-"

# Each kind's own files (glob patterns on names inside the folder) and how to recognise the kind.
OWN_FILES: dict[str, tuple[str, ...]] = {
    "capture": ("manifest.json", "shard-*.safetensors", ".shard-*.tmp", ".manifest.json.*.tmp", "part-*-of-*",
                LOCK_NAME),
    "sae": ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "lens.json", "checkpoints",
            ".cfg.json.*.tmp", ".lens.json.*.tmp", LOCK_NAME),
    "direction": ("direction.json", "direction.safetensors", LOCK_NAME),
    "interventions": ("spec.json", "vectors.safetensors", LOCK_NAME),
    "vectors": ("vectors.json", "bias", "category-*", LOCK_NAME),
    "report": ("index.html", "results.json", "results.md", ".index.html.*", ".results.*", LOCK_NAME),
    "organism": ("base", "thinking", "control", "verifier-base", "verifier-thinking", "verifier-thinking-rl", ".ckpt",
                 "card.md", LOCK_NAME),
    "rl": ("rl_log.json", ".rl_log.json.*", "checkpoint-*", "final", ".final.lens-tmp-*", "README.md", LOCK_NAME),
    "model": ("config.json", "generation_config.json", "model*.safetensors", "model.safetensors.index.json",
              "tokenizer*", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "vocab*",
              "merges.txt", "training.json", "adapter_*", LOCK_NAME),
}
NAMES = {"capture": "capture folder", "sae": "SAE folder", "direction": "direction folder",
         "interventions": "intervention folder", "vectors": "hybrid vectors folder",
         "report": "report folder", "organism": "organism folder", "model": "model folder",
         "rl": "RL run folder"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Permissions of a new file under the user's umask (e.g. 0o644 for umask 022)."""
    return 0o666 & ~_umask()


def folder_mode() -> int:
    """Permissions of a new folder under the user's umask (e.g. 0o755 for umask 022)."""
    return 0o777 & ~_umask()


def is_own(kind: str, name: str) -> bool:
    """Whether `name` (an entry of a folder) is one of the files an artifact of `kind` writes."""
    return any(fnmatch.fnmatchcase(name, p) for p in OWN_FILES[kind])


def _json(path: Path) -> dict:
    """A JSON object from `path`, or {} when it is missing, unreadable, not JSON or not an object."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _is_lens_html(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return b'content="lens dashboard"' in fh.read(4096)
    except OSError:
        return False


#: model folders an organism folder holds (the bundled pairs and the RL-made verifier thinking model)
ORGANISM_MODELS = ("base", "thinking", "control", "verifier-base", "verifier-thinking", "verifier-thinking-rl")


def is_lens_model(path: Path) -> bool:
    """Whether `path` is a model folder lens's organism training wrote (its training.json)."""
    info = _json(path / "training.json")
    return path.is_dir() and "recipe" in info and "name" in info


def kind_of(path: Path) -> str | None:
    """The lens artifact kind stored in folder `path`, or None when it holds none.

    Only lens's own markers count (a format or kind field lens writes, its HTML generator tag), never
    a file name alone: a user's `cfg.json` or a downloaded sae_lens SAE is not a lens SAE folder.
    """
    if str(_json(path / "manifest.json").get("format", "")).startswith("lens-capture/"):
        return "capture"
    if any(kind_of(p) == "capture" for p in path.glob("part-[0-9]*-of-[0-9]*") if p.is_dir()):
        return "capture"  # a data-parallel capture whose ranks have not all finished
    if _json(path / "lens.json").get("format") == "lens-sae/1":
        return "sae"
    latest = _json(path / "checkpoints" / "latest.json")
    name = latest.get("checkpoint")
    if isinstance(name, str) and re.fullmatch(r"step-\d+", name) \
            and "config" in _json(path / "checkpoints" / name / "state.json"):
        return "sae"  # an interrupted lens SAE run
    if _json(path / "direction.json").get("kind") == "direction":
        return "direction"
    if _json(path / "spec.json").get("kind") == "interventions":
        return "interventions"
    if _json(path / "vectors.json").get("kind") == "hybrid vectors":
        return "vectors"
    if _json(path / "rl_log.json").get("format") == "lens-rl/1":
        return "rl"
    if "meta" in _json(path / "results.json") and _is_lens_html(path / "index.html"):
        return "report"
    if is_lens_model(path):
        return "model"
    if any(is_lens_model(path / n) for n in ORGANISM_MODELS) \
            or any(_json(f).get("kind") == "organism-pretrain-checkpoint" for f in path.glob(".ckpt/*.json")):
        return "organism"
    return None


def _overlaps(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def check_output(path: str | Path, kind: str, *, overwrite: bool = False, inputs: Sequence[str | Path] = (),
                 resumable: bool = False, flag: str = "--out") -> bool:
    """Refuse an output path that would lose what a user owns; True when it holds an artifact of `kind`.

    Allowed: a path that does not exist, an empty folder, or a folder holding an artifact of `kind`
    (other files of the user's beside it are kept by the writers). Refused with a LensError naming the
    path and the fix: a plain file, a folder of other files, an artifact of another kind, a path that
    is or contains or lies inside one of `inputs`. An existing artifact of the same kind is refused
    unless `overwrite` or `resumable` (the writer then decides whether it resumes it or differs).
    """
    p = Path(os.path.abspath(path))
    what = NAMES[kind]
    a_what = ("an " if what[0] in "aeiouS" else "a ") + what
    if Path.cwd() == p or p in Path.cwd().parents:
        raise LensError(f"{flag} {path} is the current folder (or holds it); name a new folder inside it")
    if os.path.islink(path) and not os.path.isdir(path):
        raise LensError(f"{flag} {path} is a symbolic link to something that is not a folder; choose another {flag}")
    p = Path(os.path.realpath(p))  # a link to a folder: the folder it names is written
    if os.path.ismount(p):
        raise LensError(f"{flag} {path} is a mount point, which lens cannot replace in one step; "
                        f"name a folder inside it")
    parent = next((q for q in [p.parent, *p.parent.parents] if q.exists()), None)
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise LensError(f"no permission to write in {parent}; choose another {flag} or fix its permissions")
    for i in inputs:
        if i is not None and Path(i).exists() and _overlaps(p, Path(i)):
            raise LensError(f"{flag} {p} is the input {i} (or inside it); write the {what} somewhere else")
    if not os.path.lexists(p):
        return False
    if not p.is_dir():
        raise LensError(f"{flag} {p} exists and is not a folder; choose another {flag} (nothing was changed)")
    entries = [e for e in os.listdir(p) if e != LOCK_NAME]
    if not entries:
        return False
    found = kind_of(p)
    if found is None:
        raise LensError(f"{flag} {p} is a folder of other files, not {a_what}; choose another {flag} "
                        "(lens never replaces a folder it did not write)")
    if found != kind:
        raise LensError(f"{flag} {p} holds a lens {NAMES[found]}, not {a_what}; choose another {flag}")
    if not (overwrite or resumable):
        raise LensError(f"{flag} {p} already holds {a_what}; pass --overwrite to replace it "
                        f"(your other files there are kept) or choose another {flag}")
    return True


def _holder(fh) -> str:
    try:
        fh.seek(0)
        info = json.loads(fh.read() or "{}")
        return (f"pid {info.get('pid')} on {info.get('host')}, since {info.get('since')}: "
                f"{info.get('command', '')}").strip()
    except (OSError, ValueError):
        return "another process"


@contextmanager
def writer_lock(folder: str | Path, what: str = "folder") -> Iterator[None]:
    """Hold an exclusive advisory lock on `folder` (created if missing) for the block; refuse a second writer."""
    import fcntl

    folder = Path(os.path.realpath(folder))
    restore_swapped(folder)  # before anything is created at that path
    created = not os.path.lexists(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fh = open(path, "a+")
    locked = False
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fh)
            raise LensError(f"{folder} is being written by another lens process ({holder}); wait for it to "
                            f"finish or choose another output for this {what}") from None
        locked = True
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                             "command": " ".join(sys.argv)[:300]}))
        fh.flush()
        os.fsync(fh.fileno())  # on a shared filesystem (NFS) other machines read it now (`distributed.check_shared`)
        try:
            os.chmod(path, file_mode())
        except OSError:
            pass
        yield
    finally:
        if locked and created and os.listdir(folder) == [LOCK_NAME]:  # nothing written: leave no trace
            os.unlink(path)
            os.rmdir(folder)
        fh.close()  # closing releases the lock


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _carry(old: Path, new: Path, kind: str | None) -> None:
    """Hard-link (or copy) the user's files of `old` that are not the artifact's own into `new`; the lock
    file is hard-linked too (same inode), so a writer holding it keeps holding it after the swap."""
    for name in os.listdir(old):
        src, dst = old / name, new / name
        if name == LOCK_NAME and not dst.exists():
            os.link(src, dst)
            continue
        if (kind is not None and is_own(kind, name)) or dst.exists() or TMP_TAG in name:
            continue
        if src.is_dir() and not src.is_symlink():
            shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(src), str(dst))


def _link_or_copy(src: str, dst: str) -> None:
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _siblings(out: Path, tag: str) -> list[Path]:
    """Entries beside `out` named `.{out.name}{tag}*` (the name is matched literally, never as a pattern)."""
    if not out.parent.is_dir():
        return []
    prefix = f".{out.name}{tag}"
    return [out.parent / n for n in os.listdir(out.parent) if n.startswith(prefix)]


def restore_swapped(out: Path) -> None:
    """Put back an artifact that a writer killed between its two renames left aside (systems without an
    atomic exchange): `out` is missing and its old copy waits beside it."""
    olds = sorted(_siblings(out, f"{TMP_TAG}old-"), key=lambda q: q.stat().st_mtime)
    if olds and not os.path.lexists(out):
        os.replace(olds[-1], out)


def remove_stale_temps(out: Path) -> None:
    """Remove what a killed writer left beside `out` (call it while holding `out`'s lock): unfinished
    temporary folders, and old copies of an artifact whose replacement is in place."""
    restore_swapped(out)
    for q in _siblings(out, TMP_TAG):
        if q.is_symlink() or not q.is_dir():
            q.unlink(missing_ok=True)
        else:
            shutil.rmtree(q, ignore_errors=True)


@contextmanager
def atomic_folder(out: str | Path, kind: str | None = None, clean: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `out`; on success it replaces `out` in one step.

    The user's files in an existing `out` that are not the artifact's own (`OWN_FILES[kind]`) are
    carried into the new folder (hard links) before the swap, so nothing of theirs is lost. On an
    error inside the block the temporary folder is removed and `out` is untouched; if the swap itself
    fails, the finished folder is kept and the error names it. `clean`: first remove what a killed
    writer of `out` left beside it (callers hold `out`'s lock, or write a folder nobody else writes).
    `out` may be a symbolic link to a folder: the folder it names is replaced.
    """
    out = Path(os.path.realpath(out))
    if not out.name:
        raise LensError(f"{out} has no folder name; name a folder to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    if clean:
        remove_stale_temps(out)
    else:
        restore_swapped(out)
    tmp = out.with_name(f".{out.name}{TMP_TAG}{uuid.uuid4().hex[:12]}")
    tmp.mkdir(mode=0o700)
    os.chmod(tmp, folder_mode())
    try:
        yield tmp
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        if os.path.lexists(out) and out.is_dir() and os.listdir(out):
            _carry(out, tmp, kind)
            if not _exchange(tmp, out):
                old = out.with_name(f".{out.name}{TMP_TAG}old-{uuid.uuid4().hex[:8]}")
                os.replace(out, old)
                os.replace(tmp, out)
                tmp = old
        else:
            os.replace(tmp, out)  # onto nothing or an empty folder: one rename
    except OSError as e:
        raise LensError(f"could not put the finished {out.name} in place ({e.strerror or e}); it is kept in "
                        f"{tmp}: move it yourself, or choose another output") from None
    shutil.rmtree(tmp, ignore_errors=True)  # the old artifact, swapped out
