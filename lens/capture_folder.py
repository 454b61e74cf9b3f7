"""A capture streamed to disk: safetensors shards + manifest.json, written atomically, resumable.

Layout of a capture folder:
  manifest.json        model facts, sites, selection, dtype, d_model, shards, counts, inputs hash
  shard-00000.safetensors   per site [rows, d_model] + example/start/end/token_id; labels in metadata

Each shard is written to a temp file and renamed, then the manifest is rewritten atomically to
list it, so a killed capture leaves only complete shards that the manifest names. Re-running
the same capture into the same folder skips the examples already done (checked by a hash of
their text) and appends the rest: no row is lost or duplicated.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float

from .artifacts import base_metadata, file_digest, load_tensors, read_json, save_tensors, write_json
from .capture_memory import GROUP_BATCHES, META_KEYS, Activations, Forward, ProgressBar, capture_parts, examples_hash
from .errors import LensError, check_number
from .models import Model
from .outliers import NormOutliers
from .outputs import LOCK_NAME, check_output, is_own, writer_lock
from .selection import Example, Selection, to_examples
from .sites import Site

FORMAT = "lens-capture/1"


MANIFEST_KEYS = {"format": str, "model": dict, "sites": list, "select": str, "dtype": str, "d_model": int,
                 "shards": list, "n_rows": int, "n_examples_done": int, "n_tokens": int, "inputs_hash": str,
                 "complete": bool}
SHARD_KEYS = {"file": str, "rows": int}
SHARD_FILE = re.compile(r"(part-\d{3}-of-\d{3}/)?shard-\d{5,}\.safetensors")  # inside the folder, no other paths


def check_manifest(m: object, path: Path) -> None:
    """Refuse a manifest with a missing key, a value of the wrong type, or an impossible count."""
    fix = "re-capture it (or restore the manifest)"
    if not isinstance(m, dict):
        raise LensError(f"capture manifest {path / 'manifest.json'} is not a JSON object; {fix}")
    if m.get("format") != FORMAT:
        raise LensError(f"{path} is not a lens capture folder (format {m.get('format')!r})")
    for key, typ in MANIFEST_KEYS.items():
        v = m.get(key)
        if key not in m or not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
            raise LensError(f"capture manifest {path / 'manifest.json'}: {key!r} is missing or not a "
                            f"{typ.__name__}; {fix}")
    for i, sh in enumerate(m["shards"]):
        if not isinstance(sh, dict) or any(not isinstance(sh.get(k), t) for k, t in SHARD_KEYS.items()) \
                or sh["rows"] < 0 or not SHARD_FILE.fullmatch(sh["file"]):
            raise LensError(f"capture manifest {path / 'manifest.json'}: shard entry {i} is malformed; {fix}")
    if sum(sh["rows"] for sh in m["shards"]) != m["n_rows"] or min(m["n_rows"], m["n_examples_done"],
                                                                    m["n_tokens"], m["d_model"]) < 0:
        raise LensError(f"capture manifest {path / 'manifest.json'}: the row counts do not add up; {fix}")
    if not m["sites"] or not all(isinstance(x, str) for x in m["sites"]):
        raise LensError(f"capture manifest {path / 'manifest.json'}: 'sites' must be a non-empty list of names; {fix}")


class CaptureFolder:
    """Read access to a capture folder: manifest, per-site tensors, streaming over shards."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            what = "is not a folder" if self.path.exists() else "does not exist"
            raise LensError(f"capture folder {self.path} {what}")
        self.manifest = read_json(self.path / "manifest.json", "capture manifest")
        check_manifest(self.manifest, self.path)

    def verify(self) -> tuple[int, str] | None:
        """(index, reason) of the first shard that is missing, truncated or changed since it was
        written (size and SHA-256 against the manifest), or None when every shard checks out."""
        for i, info in enumerate(self.manifest["shards"]):
            f = self.path / info["file"]
            if not f.is_file():
                return i, f"{info['file']} is missing"
            if "bytes" in info and f.stat().st_size != info["bytes"]:
                return i, f"{info['file']} is truncated or changed ({f.stat().st_size} bytes, {info['bytes']} written)"
            if "sha256" in info and file_digest(f)["sha256"] != info["sha256"]:
                return i, f"{info['file']} was changed after it was written (checksum differs)"
        return None

    def _provenance(self, info: dict, meta: dict) -> None:
        m = self.manifest["model"]
        if "model" in meta and (meta.get("model") != m.get("fingerprint") or meta.get("spec") != m.get("spec")
                                or meta.get("sites") != self.sites):
            raise LensError(f"capture shard {info['file']} was written from {meta.get('spec')} "
                            f"({meta.get('model')}), but the manifest of {self.path} says {m.get('spec')} "
                            f"({m.get('fingerprint')}); the manifest was edited or the folder mixes captures; "
                            "re-capture")

    def _shard_file(self, info: dict) -> Path:
        f = self.path / info["file"]
        if "bytes" in info and f.is_file() and f.stat().st_size != info["bytes"]:
            raise LensError(f"capture shard {f} is truncated or changed ({f.stat().st_size} bytes, "
                            f"{info['bytes']} written); re-run the same capture to recapture it")
        return f

    @property
    def sites(self) -> list[str]:
        return list(self.manifest["sites"])

    @property
    def model(self) -> dict:
        """The facts of the model the rows came from (spec, fingerprint, family, widths), as `Activations.model`."""
        return dict(self.manifest["model"])

    @property
    def n_rows(self) -> int:
        return int(self.manifest["n_rows"])

    @property
    def complete(self) -> bool:
        return bool(self.manifest["complete"])

    @property
    def d_model(self) -> int:
        return int(self.manifest["d_model"])

    def shard(self, i: int) -> Activations:
        """Shard i as Activations (verifies shapes against the manifest)."""
        info = self.manifest["shards"][i]
        tensors, meta = load_tensors(self._shard_file(info), "capture shard")
        self._provenance(info, meta)
        for s in self.sites:
            t = tensors.get(s)
            if t is None or tuple(t.shape) != (info["rows"], self.d_model):
                raise LensError(f"capture shard {info['file']} does not match the manifest (site {s}); re-capture")
        return Activations(
            {s: tensors[s] for s in self.sites}, **{k: tensors[k] for k in META_KEYS},
            labels=meta.get("labels", [""] * info["rows"]), model=self.manifest["model"],
        )

    def site_rows(self, i: int, site: str | Site) -> Float[torch.Tensor, "rows d_model"]:
        """One site's rows of shard i, read alone (the other sites and the row metadata stay on disk)."""
        name = Site.parse(site).name
        if name not in self.sites:
            raise LensError(f"site {name} is not in capture {self.path}; it holds {', '.join(self.sites)}")
        info = self.manifest["shards"][i]
        tensors, meta = load_tensors(self._shard_file(info), "capture shard", keys=[name])
        self._provenance(info, meta)
        t = tensors[name]
        if tuple(t.shape) != (info["rows"], self.d_model):
            raise LensError(f"capture shard {info['file']} does not match the manifest (site {name}); re-capture")
        return t

    def shard_site(self, i: int, site: str | Site) -> Activations:
        """Shard i with one site's rows and the row metadata only (the other sites stay on disk)."""
        name = Site.parse(site).name
        if name not in self.sites:
            raise LensError(f"site {name} is not in capture {self.path}; it holds {', '.join(self.sites)}")
        info = self.manifest["shards"][i]
        tensors, meta = load_tensors(self._shard_file(info), "capture shard", keys=[name, *META_KEYS])
        self._provenance(info, meta)
        if tuple(tensors[name].shape) != (info["rows"], self.d_model):
            raise LensError(f"capture shard {info['file']} does not match the manifest (site {name}); re-capture")
        return Activations({name: tensors[name]}, **{k: tensors[k] for k in META_KEYS},
                           labels=meta.get("labels", [""] * info["rows"]), model=self.manifest["model"])

    def __iter__(self) -> Iterator[Activations]:
        for i in range(len(self.manifest["shards"])):
            yield self.shard(i)

    def load(self) -> Activations:
        """Everything in memory (for small captures)."""
        return Activations.concat(list(self))

    def __getitem__(self, site: str | Site | tuple[str, int]) -> Float[torch.Tensor, "rows d_model"]:
        name = Site.parse(site).name
        if name not in self.sites:
            raise LensError(f"site {name} is not in capture {self.path}; it holds {', '.join(self.sites)}")
        return torch.cat([self.site_rows(i, name) for i in range(len(self.manifest["shards"]))])

    def layers(self, kind: str = "resid_post") -> list[int]:
        """The layers captured at hook kind `kind` (with or without ``hook_``), ascending (as `Activations.layers`)."""
        full = Site.kind_name(kind)
        return sorted(s.layer for s in map(Site.parse, self.sites) if s.kind == full)

    def stack(self, kind: str = "resid_post") -> Float[torch.Tensor, "layers rows d_model"]:
        """Every captured layer of one hook kind as one tensor in memory, layers ascending (as
        `Activations.stack`; only those sites are read)."""
        found = self.layers(kind)
        if not found:
            raise LensError(f"no {Site.kind_name(kind)} site is in capture {self.path}; "
                            f"it holds {', '.join(self.sites)}")
        return torch.stack([self[kind, layer] for layer in found])

    def iter_rows(self, site: str | Site, batch_rows: int) -> Iterator[Float[torch.Tensor, "batch d_model"]]:
        """Stream one site's rows in batches of `batch_rows` (views; the last may be shorter), reading
        only that site and holding one shard (plus less than one batch carried over) at a time."""
        if batch_rows < 1:
            raise LensError(f"batch_rows must be at least 1, got {batch_rows}")
        carry: torch.Tensor | None = None
        for i in range(len(self.manifest["shards"])):
            t = self.site_rows(i, site)
            if carry is not None and carry.shape[0]:
                t = torch.cat([carry, t])
            full = t.shape[0] // batch_rows * batch_rows
            for a in range(0, full, batch_rows):
                yield t[a : a + batch_rows]
            carry = t[full:].clone()  # not a view: the rest of the shard is freed
        if carry is not None and carry.shape[0]:
            yield carry

    def summary(self, verify: bool = False) -> dict:
        """A JSON-ready summary for `lens info`; `verify` checks every shard's size and checksum and
        raises a LensError naming the first damaged one."""
        m = self.manifest
        if verify:
            bad = self.verify()
            if bad is not None:
                raise LensError(f"capture {self.path} is damaged: {bad[1]}; re-run the same `lens capture` "
                                "command to recapture from there")
        return {
            "path": str(self.path),
            "model": m["model"],
            "sites": m["sites"],
            "select": m["select"],
            "dtype": m["dtype"],
            "d_model": m["d_model"],
            "rows": m["n_rows"],
            "examples": m["n_examples_done"],
            "tokens": m["n_tokens"],
            "shards": len(m["shards"]),
            "complete": m["complete"],
            "lens_version": m.get("lens_version"),
            "created": m.get("created"),
            "backends": sorted({str(sh.get("backend", "unrecorded")) for sh in m["shards"]}),
        }


def backend_name(forward: Forward | None) -> str:
    """What ran a shard's forward passes: ``lens`` (its hooked forward), or the ``backend`` a custom forward names
    (``nnsight``, ``nnsight-remote``), else ``custom``."""
    return "lens" if forward is None else str(getattr(forward, "backend", "custom"))


def _new_manifest(model: Model, sites: list[Site], select: Selection, dtype: torch.dtype) -> dict:
    return base_metadata(
        "capture",
        format=FORMAT,
        model=model.facts(),
        sites=[s.name for s in sites],
        select=select.spec,
        dtype=str(dtype).replace("torch.", ""),
        d_model=model.d_model,
        shards=[],
        n_rows=0,
        n_examples_done=0,
        n_tokens=0,
        inputs_hash=examples_hash([]).hexdigest(),
        complete=False,
    )


def _check_same(old: dict, new: dict, out: Path) -> None:
    for key in ("sites", "select", "dtype"):
        if old.get(key) != new[key]:
            raise LensError(f"{out} holds a capture with other {key} ({old.get(key)} vs {new[key]}); "
                            "pass --overwrite to replace it or choose another --out folder")
    if (old.get("model") or {}).get("fingerprint") != new["model"]["fingerprint"]:
        raise LensError(f"{out} holds a capture of another model ({(old.get('model') or {}).get('spec')}); "
                        "pass --overwrite to replace it or choose another --out folder")


def _remove_own(out: Path) -> None:
    """Remove the capture's own files from `out` (manifest, shards, their temporaries); keep the rest."""
    for f in out.iterdir():
        if f.name != LOCK_NAME and is_own("capture", f.name) and f.is_file():
            f.unlink()


def _roll_back(manifest: dict, out: Path, first_bad: int) -> None:
    """Forget shards from `first_bad` on (they are recaptured): counts go back to where that shard began."""
    info = manifest["shards"][first_bad]
    if "done_before" not in info:
        raise LensError(f"{out}: {info['file']} is missing or damaged and this capture predates per-shard "
                        "bookkeeping; re-capture with --overwrite")
    for later in manifest["shards"][first_bad:]:
        (out / later["file"]).unlink(missing_ok=True)
    manifest["shards"] = manifest["shards"][:first_bad]
    manifest["n_rows"] = sum(int(x["rows"]) for x in manifest["shards"])
    manifest["n_examples_done"] = int(info["done_before"])
    manifest["n_tokens"] = int(info["tokens_before"])
    manifest["inputs_hash"] = info["hash_before"]
    manifest["complete"] = False


def stream_capture(
    model: Model,
    inputs: Iterable,
    sites: list[Site],
    select: Selection,
    out: Path,
    *,
    batch_size: int,
    dtype: torch.dtype,
    padding_side: str,
    shard_rows: int,
    progress: bool,
    total: int | None,
    overwrite: bool = False,
    too_long: str = "error",
    index_offset: int = 0,
    forward: Forward | None = None,
) -> CaptureFolder:
    """Capture to `out` shard by shard (see module docstring); resume when `out` holds a partial run.

    `out` must be new, empty or a capture folder; one writer at a time (a second is refused with the
    holder's pid). A capture of other inputs, sites or model there is replaced only with `overwrite`
    (the user's other files in the folder are kept). Resuming re-checks every shard it keeps and
    recaptures from the first one that is missing, truncated or changed.
    """
    check_output(out, "capture", overwrite=overwrite, resumable=True)
    with writer_lock(out, "capture"):
        return _stream(model, inputs, sites, select, out, batch_size=batch_size, dtype=dtype,
                       padding_side=padding_side, shard_rows=shard_rows, progress=progress, total=total,
                       overwrite=overwrite, too_long=too_long, index_offset=index_offset, forward=forward)


def _stream(model: Model, inputs: Iterable, sites: list[Site], select: Selection, out: Path, *, batch_size: int,
            dtype: torch.dtype, padding_side: str, shard_rows: int, progress: bool, total: int | None,
            overwrite: bool, too_long: str, index_offset: int = 0, forward: Forward | None = None) -> CaptureFolder:
    for stale in list(out.glob(".shard-*.tmp")) + list(out.glob(".manifest.json.*.tmp")):
        stale.unlink(missing_ok=True)  # half-written files of a killed run of this folder (we hold its lock)
    manifest = _new_manifest(model, sites, select, dtype)
    mpath = out / "manifest.json"
    inputs = iter(inputs)
    examples = to_examples(inputs)
    h = examples_hash([])
    if mpath.exists():
        old = read_json(mpath, "capture manifest")
        try:
            _check_same(old, manifest, out)
        except LensError:
            if not overwrite:
                raise
            _remove_own(out)
            old = None
        if old is not None:
            check_manifest(old, out)
            bad = CaptureFolder(out).verify()
            if bad is not None:
                _roll_back(old, out, bad[0])
            manifest = old
            done = manifest["n_examples_done"]
            skipped = list(islice(examples, done))
            h = examples_hash(skipped)
            if len(skipped) < done or h.hexdigest() != manifest["inputs_hash"]:
                if not overwrite:
                    raise LensError(f"{out} holds a capture of other inputs (the first {done} differ); "
                                    "pass --overwrite to replace it or choose another --out folder")
                _remove_own(out)
                manifest, h = _new_manifest(model, sites, select, dtype), examples_hash([])
                examples = (e for part in (skipped, to_examples(inputs, done)) for e in part)
            elif manifest["complete"]:
                # a complete capture is returned unless the inputs go on
                nxt = list(islice(examples, 1))
                if not nxt:
                    return CaptureFolder(out)
                examples = (e for part in (nxt, examples) for e in part)
                manifest["complete"] = False
    out.mkdir(parents=True, exist_ok=True)
    write_json(mpath, manifest)

    bar = ProgressBar(progress, total, initial=manifest["n_examples_done"])
    pending: list[Activations] = []
    pending_rows = 0
    ex_pending: list[Example] = []
    provenance = {"model": manifest["model"].get("fingerprint"), "spec": manifest["model"].get("spec"),
                  "sites": manifest["sites"]}
    outliers = NormOutliers()  # rows far above the median norm (the first token...): warned about at the end

    def flush() -> None:
        nonlocal pending, pending_rows, ex_pending
        if not ex_pending:
            return
        idx = len(manifest["shards"])
        name = f"shard-{idx:05d}.safetensors"
        rows = sum(len(p) for p in pending)
        if rows:
            part = Activations.concat(pending)
            outliers.update(part)
            tensors = {**part.acts, **part.meta_tensors()}
            save_tensors(out / name, tensors, {"labels": part.labels, "shard": idx, **provenance})
            manifest["shards"].append({"file": name, "rows": rows, "backend": backend_name(forward),
                                       "examples": [int(part.example.min()), int(part.example.max()) + 1],
                                       "done_before": manifest["n_examples_done"],
                                       "hash_before": manifest["inputs_hash"],
                                       "tokens_before": manifest["n_tokens"], **file_digest(out / name)})
        examples_hash(ex_pending, h)
        manifest["inputs_hash"] = h.hexdigest()
        manifest["n_rows"] += rows
        manifest["n_examples_done"] += len(ex_pending)
        manifest["n_tokens"] += sum(p.n_tokens for p in pending)
        write_json(mpath, manifest)
        pending, pending_rows, ex_pending = [], 0, []

    start = index_offset + manifest["n_examples_done"]  # example numbers are global in a data-parallel part
    try:
        # every token: groups of 8 batches straight into preallocated rows; the parts wait for the disk, so no
        # page-locked memory
        for part, chunk in capture_parts(model, examples, sites, select, batch_size=batch_size, dtype=dtype,
                                         side=padding_side, bar=bar, first_index=start, too_long=too_long,
                                         forward=forward, every_group=batch_size * GROUP_BATCHES, pin=False):
            pending.append(part)
            ex_pending.extend(chunk)
            pending_rows += len(part)
            if pending_rows >= shard_rows:
                flush()
        flush()
        if manifest["n_examples_done"] == 0:
            raise LensError("no inputs to capture; the input list or file is empty")
    except BaseException:
        if manifest["n_examples_done"] == 0:  # stopped before anything was kept: leave no manifest, no shard
            _remove_own(out)  # (a shard the manifest does not list yet included; the lock then removes a new folder)
        raise
    finally:
        bar.close()
    manifest["complete"] = True
    write_json(mpath, manifest)
    outliers.warn(f"rows captured to {out}", stacklevel=4)
    return CaptureFolder(out)


def parallel_capture(model: Model, inputs: Iterable, sites: list[Site], select: Selection, out: Path, *,
                     batch_size: int, dtype: torch.dtype, padding_side: str, shard_rows: int, progress: bool,
                     overwrite: bool = False, too_long: str = "error", forward: Forward | None = None) -> CaptureFolder:
    """One capture folder written by every rank of a data-parallel job (`torchrun`, `accelerate launch`).

    Each rank captures its contiguous block of the inputs (cut at whole groups of batches, so every
    batch is the one a single process forms) into `out/part-RRR-of-WWW/`, an ordinary capture folder
    with its own lock, checksums and resume; then rank 0 writes `out/manifest.json` listing every
    part's shards in input order. The folder reads exactly like a one-process capture of the same
    inputs (same rows, same example numbers). A killed job resumes when run again with the same
    number of processes. Every rank must see the same `out` (on several machines, a filesystem they
    share): `lens.distributed.check_shared` refuses it otherwise, before any rank captures.
    """
    from contextlib import ExitStack

    from .distributed import Ranks, agree, block, check_shared, first_on_rank0, init, part_name

    r = init()
    examples = list(to_examples(inputs))
    if not examples:
        raise LensError("no inputs to capture; the input list or file is empty")
    new = _new_manifest(model, sites, select, dtype)
    h = examples_hash(examples).hexdigest()
    held = ExitStack()  # rank 0: the folder's lock, for the whole job

    def prepare() -> None:
        held.enter_context(writer_lock(out, "capture"))
        _prepare_parallel(out, new, h, r.world, overwrite)

    with held:
        first_on_rank0(prepare)  # an error there (a capture of other inputs, another writer) stops every rank
        check_shared(out)  # every rank writes its part into the folder rank 0 holds
        plan = [block(len(examples), Ranks(k, r.world), align=batch_size * GROUP_BATCHES) for k in range(r.world)]
        mine = plan[r.rank]
        error = None
        try:
            if len(mine):
                stream_capture(model, examples[mine.start:mine.stop], sites, select, out / part_name(r),
                               batch_size=batch_size, dtype=dtype, padding_side=padding_side, shard_rows=shard_rows,
                               progress=progress and r.main, total=len(mine), overwrite=overwrite, too_long=too_long,
                               index_offset=mine.start, forward=forward)
        except Exception as e:  # noqa: BLE001 - raised on every rank by agree
            error = e
        agree(error)
        first_on_rank0(lambda: _merge_parts(out, new, h, [len(p) for p in plan]))
    return CaptureFolder(out)


def _prepare_parallel(out: Path, new: dict, inputs_hash: str, world: int, overwrite: bool) -> None:
    """Rank 0, before the parts start: refuse (or, with overwrite, clear) what `out` holds of another run."""
    mpath = out / "manifest.json"
    if not mpath.exists():
        return
    old = read_json(mpath, "capture manifest")
    same = old.get("inputs_hash") == inputs_hash and old.get("world") == world
    try:
        _check_same(old, new, out)
    except LensError:
        same = False
    if same:
        return
    if not overwrite:
        raise LensError(f"{out} holds a capture of other inputs, settings or process count "
                        f"({old.get('world', 1)} processes); pass --overwrite to replace it or choose another --out")
    _remove_own(out)
    for part in out.iterdir():  # only lens's own part folders (part-RRR-of-WWW), never another folder there
        if part.is_dir() and not part.is_symlink() and re.fullmatch(r"part-\d{3}-of-\d{3}", part.name):
            shutil.rmtree(part)


def _merge_parts(out: Path, new: dict, inputs_hash: str, shares: list[int]) -> None:
    """Rank 0, after every part is complete: the top manifest listing the parts' shards in input order
    (`shares`: how many inputs each rank captured)."""
    from .distributed import Ranks, part_name

    world = len(shares)
    manifest = {**new, "world": world, "parts": [], "inputs_hash": inputs_hash}
    for rank in range(world):
        name = part_name(Ranks(rank, world))
        if not shares[rank]:
            continue  # a rank with no inputs (more processes than groups of batches)
        if not (out / name / "manifest.json").exists():
            raise LensError(f"{out / name}, the part of rank {rank}, is missing; every process must write into "
                            f"the same --out (on several machines, a filesystem they all share)")
        part = CaptureFolder(out / name)
        if not part.complete:
            raise LensError(f"{out / name} is incomplete; run the same command again to resume it")
        manifest["parts"].append(name)
        for sh in part.manifest["shards"]:
            manifest["shards"].append({**sh, "file": f"{name}/{sh['file']}"})
        for key in ("n_rows", "n_examples_done", "n_tokens"):
            manifest[key] += part.manifest[key]
    manifest["complete"] = True
    write_json(out / "manifest.json", manifest)


def capture_to_disk(
    model: Model,
    inputs: Iterable,
    sites: Iterable[str | Site] | str | Site,
    select: Selection | str = "all",
    *,
    out: str | Path,
    batch_size: int = 8,
    dtype: torch.dtype | str = torch.float32,
    padding_side: str = "right",
    shard_rows: int = 65536,
    progress: bool = True,
    total: int | None = None,
    overwrite: bool = False,
    too_long: str = "error",
    forward: Forward | None = None,
) -> CaptureFolder:
    """Capture `sites` at the tokens `select` picks into the folder `out`, shard by shard.

    The same rows as `lens.capture` (inputs, sites, selection as there), streamed to disk: memory bounded by
    `shard_rows`; a partial capture of the same inputs resumes; under torchrun / accelerate launch each rank
    captures its share into the one folder. A folder holding a capture of other inputs, sites or model is
    replaced only with `overwrite=True`; a folder of other files, or a plain file, is refused.
    forward: runs each batch in place of lens's hooked forward (`lens.capture_memory.capture_batch`), e.g.
    `lens.interventions.backends.nnsight_capture.nnsight_forward(lm, model, sites)` (nnsight; pass
    padding_side="left", as nnsight pads); the rows, their order and the folder are the same.
    """
    from .capture_memory import capture_args
    from .distributed import ranks

    check_number("shard_rows", shard_rows, 1, integer=True)
    site_list, select, dtype = capture_args(model, sites, select, batch_size, dtype, too_long)
    kw = dict(batch_size=batch_size, dtype=dtype, padding_side=padding_side, shard_rows=shard_rows,
              progress=progress, overwrite=overwrite, too_long=too_long, forward=forward)
    if ranks().parallel:  # under torchrun / accelerate launch: each rank its share, one folder
        return parallel_capture(model, inputs, site_list, select, Path(out), **kw)
    return stream_capture(model, inputs, site_list, select, Path(out), total=total, **kw)


def open_capture(path: str | Path) -> CaptureFolder:
    """Open a capture folder written by `capture_to_disk` or `lens capture`."""
    return CaptureFolder(path)


def jsonl_lines(path: str | Path, what: str = "input file") -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) for each non-blank line of a UTF-8 JSONL file, lazily; LensErrors name
    the file and the line (missing file, a folder, bytes that are not UTF-8, a line that is not JSON)."""
    path = Path(path)
    if path.is_dir():
        raise LensError(f"{what} {path} is a folder; pass a JSONL file (one JSON value per line)")
    if not path.is_file():
        raise LensError(f"{what} {path} does not exist")
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise LensError(f"{path}:{n} is not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                                "save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except (json.JSONDecodeError, RecursionError) as e:
                why = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
                raise LensError(f"{path}:{n} is not valid JSON ({why}); each line must be one JSON value") from None


def read_jsonl(path: str | Path) -> Iterator[Any]:
    """Lazily read inputs from a JSONL file (objects, or bare JSON strings), with line numbers in errors."""
    for _, item in jsonl_lines(path):
        yield item
