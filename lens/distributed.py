"""Data-parallel runs under `torchrun` / `accelerate launch`: which process this is, and its share.

lens does not start processes: the launcher does (`torchrun --nproc-per-node N lens capture ...`,
several nodes the same way) and sets RANK / WORLD_SIZE. `ranks()` reads them; `init()` joins the
process group (gloo on CPU, nccl on CUDA) for the barriers lens needs; `block(n, align)` is this
rank's contiguous share of n inputs, cut at multiples of `align` so every rank forms the same
batches a single process would (rows come out equal, bit for bit).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


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


def ranks() -> Ranks:
    """The running job's (rank, world size): from torch.distributed when initialised, else the launcher's
    RANK / WORLD_SIZE environment variables, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return Ranks(int(os.environ.get("RANK", "0") or 0), world) if world > 1 else Ranks()


def init() -> Ranks:
    """Join the launcher's process group (once) when the job has several processes; returns `ranks()`."""
    import torch
    import torch.distributed as dist

    r = ranks()
    if r.parallel and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("LENS_DIST_BACKEND") != "gloo" else "gloo"
        dist.init_process_group(backend=os.environ.get("LENS_DIST_BACKEND", backend))
    return ranks()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def block(n: int, r: Ranks, align: int = 1) -> range:
    """Rank r's contiguous share of range(n): whole units of `align` items, spread as evenly as possible."""
    units = -(-n // align)
    lo, hi = units * r.rank // r.world, units * (r.rank + 1) // r.world
    return range(min(lo * align, n), min(hi * align, n))


def part_name(r: Ranks) -> str:
    """The sub-folder of a shared output that rank r writes (e.g. `part-001-of-004`)."""
    return f"part-{r.rank:03d}-of-{r.world:03d}"
