"""Data-parallel runs under `torchrun` / `accelerate launch`: which process this is, and its share.

lens does not start processes: the launcher does (`torchrun --nproc-per-node N lens capture ...`,
several nodes the same way) and sets RANK / WORLD_SIZE. `ranks()` reads them; `init()` joins the
process group (gloo on CPU, nccl on CUDA) for the barriers lens needs; `block(n, align)` is this
rank's contiguous share of n inputs, cut at multiples of `align` so every rank forms the same
batches a single process would (rows come out equal, bit for bit).

Jobs other than capture (sampling, CoT-decoding, the steer-check, `lens reproduce`) split their
units of work with `claimed` (each unit to the first rank free for it), inside a `data_parallel()`
block or when asked with ``data_parallel=True``, and share the results with `gather_indexed` (JSON in
byte tensors through ``all_gather``): every rank ends with the whole result, in input order, equal to
one process's. The hybrid study claims and shares its batches the same way; `lens diff` shares its
parameters (`strided`) and its captures (`capture_memory.capture_shared`: contiguous blocks of whole
batches, rows through `all_gather_rows`).
"""

from __future__ import annotations

import atexit
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .errors import LensError

T = TypeVar("T")

@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel job."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1


_ALONE: ContextVar[bool] = ContextVar("lens_alone", default=False)


def ranks() -> Ranks:
    """The running job's (rank, world size): from torch.distributed when initialised, else the launcher's
    RANK / WORLD_SIZE environment variables, else (0, 1); (0, 1) inside an `alone()` block."""
    import torch.distributed as dist

    if _ALONE.get():
        return Ranks()
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return Ranks(int(os.environ.get("RANK", "0") or 0), world) if world > 1 else Ranks()


def init() -> Ranks:
    """Join the launcher's process group (once) when the job has several processes; returns `ranks()`.

    On CUDA it also makes the rank's LOCAL_RANK GPU the current one, so a model placed on ``cuda``
    after this call lands on that rank's own GPU.
    """
    import torch
    import torch.distributed as dist

    r = ranks()
    if r.parallel and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("LENS_DIST_BACKEND") != "gloo" else "gloo"
        if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:  # "cuda" means this rank's own GPU
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        dist.init_process_group(backend=os.environ.get("LENS_DIST_BACKEND", backend))
        atexit.register(_leave)  # a group left alive at exit can abort the process ("terminate called ...")
    return ranks()


def _leave() -> None:
    """Leave the process group at interpreter exit, if it is still open: on gloo the ranks first meet (a
    monitored barrier, bounded), so no rank tears its group down while another still has work queued on it
    (a rank once aborted at exit with "terminate called without an active exception")."""
    import datetime

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "gloo":
            try:
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=120))
            except Exception:  # noqa: BLE001 - a rank that failed or left: leave anyway
                pass
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in a single process and inside `alone()`)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and not _ALONE.get():
        dist.barrier()


def block(n: int, r: Ranks, align: int = 1) -> range:
    """Rank r's contiguous share of range(n): whole units of `align` items, spread as evenly as possible."""
    units = -(-n // align)
    lo, hi = units * r.rank // r.world, units * (r.rank + 1) // r.world
    return range(min(lo * align, n), min(hi * align, n))


def part_name(r: Ranks) -> str:
    """The sub-folder of a shared output that rank r writes (e.g. `part-001-of-004`)."""
    return f"part-{r.rank:03d}-of-{r.world:03d}"


@contextmanager
def alone() -> Iterator[None]:
    """Within this block this process works as if launched alone: `ranks()` is (0, 1), so what lens runs
    there (SAE training, `sharing`, ...) runs whole in this process and meets no other rank.

    For small work that every rank repeats with the same result, e.g. the hybrid's taxonomy SAE: trained
    data-parallel, its weights would equal one process's only to float tolerance."""
    token = _ALONE.set(True)
    try:
        yield
    finally:
        _ALONE.reset(token)


#: the variables by which a launcher (torchrun, accelerate launch) tells a process its place in the job
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                    "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT")


def single_process_env() -> dict[str, str]:
    """This process's environment without the launcher's variables (and torchelastic's and accelerate's own):
    a child process started with it runs alone, as if nothing had launched it."""
    return {k: v for k, v in os.environ.items()
            if k not in LAUNCH_VARIABLES and not k.startswith(("TORCHELASTIC_", "ACCELERATE_"))}


# ------------------------------------------------------------------------------------------ shared work

_SCOPE: ContextVar[bool] = ContextVar("lens_data_parallel", default=False)


@contextmanager
def data_parallel() -> Iterator[Ranks]:
    """Within this block, lens's data-parallel jobs (`sampling_study.run`, `cot_study.run`,
    `saes.steer_check.steer_check`) split their work across the launcher's ranks unless told otherwise.

    Every rank must enter the same jobs in the same order (they meet in collective calls). Outside a
    launcher (one process) nothing changes.
    """
    token = _SCOPE.set(True)
    try:
        yield init()
    finally:
        _SCOPE.reset(token)


def sharing(flag: bool | None = None) -> Ranks | None:
    """This rank's place when a job should split its work, else None.

    flag: True (split when launched with several processes), False (never), None (split inside a
    `data_parallel()` block). A single process always gets None.
    """
    if flag is False or (flag is None and not _SCOPE.get()):
        return None
    r = init()
    return r if r.parallel else None


def strided(n: int, r: Ranks) -> range:
    """Rank r's share of n work units taken in turn (r, r + world, ...): balanced when cost grows along the order."""
    return range(r.rank, n, r.world)


def claimed(n: int, r: Ranks | None) -> Iterator[int]:
    """The work units of range(n) this rank runs, each handed to whichever rank asks for it first.

    Under a launcher the ranks draw units from one counter in the process group's store, so a rank whose
    units ran short (samples that stopped early) takes the next unit instead of waiting at the gather for a
    rank with a longer share; the units themselves are those one process would run, so results gathered by
    index do not change. The ranks meet once at the start (a barrier), so none starts its share late.
    One process (r None or alone): every unit, in order. Where the group exposes no store, `strided`.
    Every rank must iterate the generator to its end (the k-th call on each rank shares one counter).
    """
    if r is None or not r.parallel:
        yield from range(n)
        return
    store = _store()
    if store is None:
        yield from strided(n, r)
        return
    session = store.add(f"lens/claims/rank-{r.rank}", 1)  # the same number on every rank for the same call
    key = f"lens/claims/{session}"
    barrier()
    while (i := store.add(key, 1) - 1) < n:
        yield i


def _store() -> Any | None:
    """The default process group's key-value store, or None (no group, or a torch that hides it)."""
    try:
        import torch.distributed as dist
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store() if dist.is_initialized() else None
    except Exception:  # noqa: BLE001 - a private accessor: fall back to the fixed split
        return None


def all_gather_json(obj: Any) -> list[Any]:
    """Every rank's JSON-ready `obj`, in rank order (a one-element list in a single process).

    The values travel as UTF-8 JSON in byte tensors through `torch.distributed.all_gather` (on the
    current CUDA device under nccl), so a rank never unpickles what another sent.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1 or _ALONE.get():
        return [json.loads(json.dumps(obj))]
    device = _device()
    data = torch.frombuffer(bytearray(json.dumps(obj, allow_nan=True).encode("utf-8")) or bytearray(b" "),
                            dtype=torch.uint8)
    size = torch.tensor([data.numel()], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    width = max(int(s) for s in sizes)
    buf = torch.zeros(width, dtype=torch.uint8, device=device)
    buf[: data.numel()] = data.to(device)
    bufs = [torch.empty_like(buf) for _ in sizes]
    dist.all_gather(bufs, buf)
    return [json.loads(b[: int(s)].cpu().numpy().tobytes().decode("utf-8")) for b, s in zip(bufs, sizes, strict=True)]


def all_gather_rows(rows: Any) -> Any:
    """Every rank's tensor [n_r, ...] (n_r may differ; same trailing shape and dtype on every rank), concatenated
    in rank order, bit for bit (the tensor itself in one process). On the current CUDA device under nccl,
    returned on `rows`'s device."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1 or _ALONE.get():
        return rows
    device = _device()
    n = torch.tensor([rows.shape[0]], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    width = max(int(s) for s in sizes)
    buf = torch.zeros((width, *rows.shape[1:]), dtype=rows.dtype, device=device)
    buf[: rows.shape[0]] = rows.to(device)
    bufs = [torch.empty_like(buf) for _ in sizes]
    dist.all_gather(bufs, buf)
    return torch.cat([b[: int(s)] for b, s in zip(bufs, sizes, strict=True)]).to(rows.device)


def gather_indexed(local: dict[int, Any]) -> dict[int, Any]:
    """Merge every rank's {index: JSON-ready value} (disjoint indices) into one dict on every rank, by index.

    Refused when two ranks hold the same index or one holds an index twice over (a bug in the split).
    """
    merged: dict[int, Any] = {}
    for part in all_gather_json([[int(k), v] for k, v in local.items()]):
        for k, v in part:
            if k in merged:
                raise LensError(f"data-parallel results: unit {k} came from two ranks (the work split overlaps)")
            merged[k] = v
    return dict(sorted(merged.items()))


def _device():
    """Where the process group's tensors live: the current CUDA device under nccl, else the CPU."""
    import torch
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


# ------------------------------------------------------------------------------- folders across machines


def check_shared(folder: Path, flag: str = "--out") -> None:
    """Every rank, once rank 0 holds `folder`'s writer lock (`lens.outputs.writer_lock`, written and synced to disk):
    refuse, on every rank alike, when some rank does not see the lock file rank 0 wrote there, i.e. `folder` is not
    one folder that every process shares (each machine has its own disk there), so what the ranks write would not
    meet."""
    from .outputs import LOCK_NAME

    try:
        seen = (Path(folder) / LOCK_NAME).read_text()
    except (OSError, UnicodeError):
        seen = None
    views = all_gather_json(seen)
    others = [k for k, v in enumerate(views) if v != views[0] or v is None]
    if others:
        raise LensError(f"{folder} is not the same folder for every process: rank{'s' * (len(others) > 1)} "
                        f"{', '.join(map(str, others))} cannot see the folder rank 0 writes; on several machines "
                        f"put {flag} on a filesystem they all share (NFS, Lustre, ...)")


def _describe(error: BaseException) -> str:
    return str(error) if isinstance(error, LensError) else f"{type(error).__name__}: {error}"


def agree(error: BaseException | None) -> None:
    """Every rank, after a step each ran on its own: raise on every rank when some rank failed (its own error there,
    a LensError naming the first failed rank and its message on the others), so that no rank goes on to a
    collective call that a failed rank never makes. Nothing in a single process (its error is its own)."""
    if not ranks().parallel:
        if error is not None:
            raise error
        return
    msgs = all_gather_json(None if error is None else _describe(error))
    if error is not None:
        raise error
    failed = [(k, m) for k, m in enumerate(msgs) if m is not None]
    if failed:
        raise LensError(f"rank {failed[0][0]} failed, so every rank stops: {failed[0][1]}")


def _rank0_outcome(error: BaseException | None) -> None:
    """After rank 0's step: its error, raised on every rank (on rank 0 itself as it was). The other ranks wait through
    the process group's store, with no time limit of the collectives' (nccl's watchdog would end a long wait)."""
    import datetime

    r, store = ranks(), _store()
    msg = None if error is None else _describe(error)
    if store is None:
        msg = all_gather_json(msg)[0]
    else:
        key = f"lens/rank0/{store.add(f'lens/rank0/rank-{r.rank}', 1)}"  # the same on every rank for the same call
        if r.main:
            store.set(key, json.dumps(msg))
        else:
            store.wait([key], datetime.timedelta(days=7))
            msg = json.loads(store.get(key))
    if error is not None:
        raise error
    if msg is not None:
        raise LensError(f"rank 0 failed, so every rank stops: {msg}")


def first_on_rank0(fn: Callable[[], T], cached: Callable[[T], Path] | None = None) -> T | None:
    """Under a launcher: rank 0 runs `fn` as a single process would (inside `alone()`: a capture or SAE training in it
    runs whole there) while the others wait; `fn`'s result there, None on the other ranks and in a single process.
    When `fn` fails on rank 0, every rank raises.

    cached: for an `fn` that fills a folder of lens's cache (`lens.artifacts.cache_dir`) which the other ranks then
    read, that folder from `fn`'s result: afterwards every rank's own cache holds it byte for byte, sent from
    rank 0 (`share_cached`) to the ranks whose cache lacks it or differs (another machine's disk).
    """
    r = ranks()
    if not r.parallel:
        return None
    init()
    got, folder, error = None, None, None
    if r.main:
        try:
            with alone():
                got = fn()
                folder = cached(got) if cached is not None else None
        except BaseException as e:  # noqa: BLE001 - raised again below, on every rank
            error = e
    _rank0_outcome(error)
    if cached is not None:
        share_cached(folder)
    return got


def share_cached(folder: Path | None, chunk_bytes: int = 64 << 20) -> Path:
    """Rank 0's folder `folder` (inside lens's cache; None on the other ranks) made present, byte for byte, in every
    rank's own cache at the same place under `cache_dir()`; returns this rank's copy.

    A rank's copy is missing or differs when its folders and files (names, sha256) are not rank 0's. In each round
    one rank per host name and cache path among those (the lowest) receives every file from rank 0 through
    `torch.distributed.broadcast`, `chunk_bytes` at a time, into a new folder that is checked against rank 0's
    digests and then replaces its copy in one rename; ranks that share rank 0's disk send and write nothing.
    Rounds go on while some rank lacks a copy (machines that share a host name), at most one per rank. A rank
    that fails to write stops every rank with its error.
    """
    import socket

    from .artifacts import cache_dir

    listing = error = None
    if ranks().main:
        try:
            root, folder = cache_dir().resolve(), Path(folder).resolve()
            if folder == root or not folder.is_relative_to(root):
                raise LensError(f"{folder} is not a folder inside lens's cache {root}; only those are shared")
            listing = _listing(folder)
            listing["folder"] = str(folder.relative_to(root))
        except Exception as e:  # noqa: BLE001 - raised again below, on every rank
            error = e
    listing = all_gather_json(listing if error is None else {"error": _describe(error)})[0]
    if error is not None:
        raise error
    if "error" in listing:
        raise LensError(f"rank 0 failed, so every rank stops: {listing['error']}")
    local = cache_dir() / listing["folder"]
    for _ in range(ranks().world):
        missing = not ranks().main and not _holds(local, listing)  # rank 0 holds what it listed
        views = all_gather_json([missing, socket.gethostname(), os.path.realpath(local)])
        if not any(v[0] for v in views):
            return local
        me = ranks().rank
        writes = views[me][0] and next(k for k, v in enumerate(views) if v[0] and v[1:] == views[me][1:]) == me
        agree(_receive(local, listing, writes, chunk_bytes))
    raise LensError(f"some ranks still lack rank 0's copy of {listing['folder']} in their lens cache after it was "
                    "sent to each; give every machine its own LENS_CACHE, or one they all share")


def _listing(folder: Path) -> dict:
    """A folder's sub-folders and files ([name, bytes, sha256]; writer locks aside), relative names, sorted."""
    from .artifacts import file_digest
    from .outputs import LOCK_NAME

    paths = sorted(folder.rglob("*"))
    files = [p for p in paths if p.is_file() and p.name != LOCK_NAME]
    return {"dirs": [str(p.relative_to(folder)) for p in paths if p.is_dir()],
            "files": [[str(p.relative_to(folder)), d["bytes"], d["sha256"]] for p in files for d in [file_digest(p)]]}


def _holds(folder: Path, listing: dict) -> bool:
    """Whether `folder` holds exactly the listing's folders and files: none more, none less, none other."""
    if not folder.is_dir():
        return False
    mine = _listing(folder)
    return mine["dirs"] == listing["dirs"] and mine["files"] == listing["files"]


def _receive(local: Path, listing: dict, writes: bool, chunk_bytes: int) -> BaseException | None:
    """One round of `share_cached`: rank 0 sends every file; a writing rank keeps them in a new folder beside `local`
    and puts it in place. Every rank takes part in every broadcast, whatever failed; returns this rank's error."""
    import shutil
    import tempfile

    import torch
    import torch.distributed as dist

    failure: BaseException | None = None
    incoming = None
    if writes:
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
            incoming = Path(tempfile.mkdtemp(prefix=f".{local.name}.incoming-", dir=local.parent))
            for d in listing["dirs"]:
                (incoming / d).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            failure = e
    device = _device()
    for name, size, _ in listing["files"]:
        src = dst = None
        try:
            if ranks().main:
                src = open(local / name, "rb")
            if incoming is not None and failure is None:
                dst = open(incoming / name, "wb")
        except OSError as e:
            failure = failure or e
        try:
            for start in range(0, size, chunk_bytes):
                n = min(chunk_bytes, size - start)
                buf = torch.zeros(n, dtype=torch.uint8, device=device)
                if src is not None:
                    data = src.read(n)
                    if len(data) == n:
                        buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)
                    else:
                        failure = failure or OSError(f"{local / name} changed while it was being sent")
                dist.broadcast(buf, src=0)
                if dst is not None:
                    try:
                        dst.write(buf.cpu().numpy().tobytes())
                    except OSError as e:
                        failure = failure or e
                        dst.close()
                        dst = None
        finally:
            for f in (src, dst):
                if f is not None:
                    f.close()
    try:
        if incoming is not None and failure is None:
            if not _holds(incoming, listing):
                raise LensError(f"the copy of {local} received from rank 0 differs from rank 0's (sha256)")
            _install(incoming, local, listing)
    except Exception as e:  # noqa: BLE001 - returned, then raised on every rank
        failure = e
    finally:
        if incoming is not None and incoming.exists():
            shutil.rmtree(incoming, ignore_errors=True)
    return failure


def _install(incoming: Path, local: Path, listing: dict) -> None:
    """Put the received folder `incoming` at `local` (lens's own cache folder, stale or missing here) in one rename;
    where another rank on this disk put a good copy there first, keep that one."""
    import shutil
    import uuid

    for _ in range(3):
        if _holds(local, listing):
            return
        old = local.parent / f".{local.name}.old-{uuid.uuid4().hex}"
        try:
            local.rename(old)
        except FileNotFoundError:
            pass
        try:
            incoming.rename(local)
            return
        except OSError:  # another copy arrived at `local` meanwhile: check it again
            continue
        finally:
            shutil.rmtree(old, ignore_errors=True)
    raise LensError(f"could not put rank 0's copy of {local} in place (other processes keep replacing it)")
