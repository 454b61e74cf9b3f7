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
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import torch
from jaxtyping import Float

from .artifacts import base_metadata, load_tensors, read_json, save_tensors, write_json
from .capture import (
    META_KEYS,
    Activations,
    _batches,
    _progress,
    capture_batch,
    capture_every,
    examples_hash,
    reading,
)
from .errors import LensError
from .models import Model
from .selection import AllTokens, Example, Selection
from .sites import Site

FORMAT = "lens-capture/1"


class CaptureFolder:
    """Read access to a capture folder: manifest, per-site tensors, streaming over shards."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise LensError(f"capture folder {self.path} does not exist")
        self.manifest = read_json(self.path / "manifest.json", "capture manifest")
        if self.manifest.get("format") != FORMAT:
            raise LensError(f"{self.path} is not a lens capture folder (format {self.manifest.get('format')!r})")

    @property
    def sites(self) -> list[str]:
        return list(self.manifest["sites"])

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
        tensors, meta = load_tensors(self.path / info["file"], "capture shard")
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
        t = load_tensors(self.path / info["file"], "capture shard", keys=[name])[0][name]
        if tuple(t.shape) != (info["rows"], self.d_model):
            raise LensError(f"capture shard {info['file']} does not match the manifest (site {name}); re-capture")
        return t

    def __iter__(self) -> Iterator[Activations]:
        for i in range(len(self.manifest["shards"])):
            yield self.shard(i)

    def load(self) -> Activations:
        """Everything in memory (for small captures)."""
        return Activations.concat(list(self))

    def __getitem__(self, site: str | Site) -> Float[torch.Tensor, "rows d_model"]:
        name = Site.parse(site).name
        if name not in self.sites:
            raise LensError(f"site {name} is not in capture {self.path}; it holds {', '.join(self.sites)}")
        return torch.cat([self.site_rows(i, name) for i in range(len(self.manifest["shards"]))])

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

    def summary(self) -> dict:
        """A JSON-ready summary for `lens info`."""
        m = self.manifest
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
            "lens_version": m["lens_version"],
            "created": m["created"],
        }


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
        if old[key] != new[key]:
            raise LensError(f"{out} holds a capture with other {key} ({old[key]} vs {new[key]}); "
                            "use another --out folder or delete it")
    if old["model"]["fingerprint"] != new["model"]["fingerprint"]:
        raise LensError(f"{out} holds a capture of another model ({old['model']['spec']}); use another --out folder")


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
) -> CaptureFolder:
    """Capture to `out` shard by shard (see module docstring); resume when `out` holds a partial run."""
    manifest = _new_manifest(model, sites, select, dtype)
    mpath = out / "manifest.json"
    examples = (Example.of(x) for x in inputs)
    h = examples_hash([])
    if mpath.exists():
        old = read_json(mpath, "capture manifest")
        _check_same(old, manifest, out)
        manifest = old
        done = manifest["n_examples_done"]
        skipped = list(islice(examples, done))
        h = examples_hash(skipped)
        if len(skipped) < done or h.hexdigest() != manifest["inputs_hash"]:
            raise LensError(f"{out} holds a capture of other inputs (the first {done} differ); "
                            "use another --out folder or delete it")
        if manifest["complete"]:
            # a complete capture is returned unless the inputs go on
            nxt = list(islice(examples, 1))
            if not nxt:
                return CaptureFolder(out)
            examples = (e for part in (nxt, examples) for e in part)
            manifest["complete"] = False
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp"):  # half-written files of a killed run
        stale.unlink()
    write_json(mpath, manifest)

    bar = _progress(progress, total, initial=manifest["n_examples_done"])
    pending: list[Activations] = []
    pending_rows = 0
    ex_pending: list[Example] = []

    def flush() -> None:
        nonlocal pending, pending_rows, ex_pending
        if not ex_pending:
            return
        idx = len(manifest["shards"])
        name = f"shard-{idx:05d}.safetensors"
        rows = sum(len(p) for p in pending)
        if rows:
            part = Activations.concat(pending)
            tensors = {**part.acts, **part.meta_tensors()}
            save_tensors(out / name, tensors, {"labels": part.labels, "shard": idx})
            manifest["shards"].append({"file": name, "rows": rows,
                                       "examples": [int(part.example.min()), int(part.example.max()) + 1]})
        examples_hash(ex_pending, h)
        manifest["inputs_hash"] = h.hexdigest()
        manifest["n_rows"] += rows
        manifest["n_examples_done"] += len(ex_pending)
        manifest["n_tokens"] += sum(p.n_tokens for p in pending)
        write_json(mpath, manifest)
        pending, pending_rows, ex_pending = [], 0, []

    start = manifest["n_examples_done"]
    if isinstance(select, AllTokens):  # every token: groups of batches straight into preallocated rows
        for k, group in enumerate(_batches(examples, batch_size * 8)):
            part = capture_every(model, group, sites, batch_size, dtype, padding_side, bar, start + k * batch_size * 8,
                                 pin=False)  # parts wait for the disk: no page-locked memory held meanwhile
            pending.append(part)
            ex_pending.extend(group)
            pending_rows += len(part)
            if pending_rows >= shard_rows:
                flush()
    else:
        with reading(model, sites) as state:
            for k, chunk in enumerate(_batches(examples, batch_size)):
                t0 = time.perf_counter()
                part = capture_batch(model, chunk, sites, select, start + k * batch_size, dtype, padding_side, state)
                pending.append(part)
                ex_pending.extend(chunk)
                pending_rows += len(part)
                bar.update(len(chunk), part.n_tokens, time.perf_counter() - t0)
                if pending_rows >= shard_rows:
                    flush()
    flush()
    bar.close()
    if manifest["n_examples_done"] == 0:
        raise LensError("no inputs to capture; the input list or file is empty")
    manifest["complete"] = True
    write_json(mpath, manifest)
    return CaptureFolder(out)


def open_capture(path: str | Path) -> CaptureFolder:
    """Open a capture folder written by `capture(..., out=path)`."""
    return CaptureFolder(path)


def read_jsonl(path: str | Path) -> Iterator[dict | str]:
    """Lazily read inputs from a JSONL file (objects, or bare JSON strings), with line numbers in errors."""
    path = Path(path)
    if not path.is_file():
        raise LensError(f"input file {path} does not exist")
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise LensError(f"{path}:{n} is not valid JSON ({e.msg}); each line must be one JSON object") from None
