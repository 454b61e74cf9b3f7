"""Settling glibc's heap once per process, so multi-MiB buffers are reused instead of re-faulted.

glibc serves large blocks with mmap and returns freed heap tops to the OS above a threshold that
starts small and grows with the largest mmapped block freed so far (up to 32 MiB). Until such a block
has been freed, a process gives back and page-faults again the few-MiB buffers it allocates and frees
over and over (each training step's tensors, each capture's output buffers): measured here, 10x the
page faults of SAE training and 1,500-12,000 faults per capture of 7,700 tokens x 4 sites, at ~13 us
each on this virtual machine. A process that has freed one large block (a notebook after a capture,
sae_lens's runner after loading its dataset) is already settled; `settle_heap` frees one 30 MiB block
up front so every run starts there. That raises glibc's dynamic mmap threshold to ~30 MiB and its trim
threshold to ~60 MiB for the process, on purpose (up to that much freed memory may stay mapped, as in
any process that once freed such a block); elsewhere than glibc (macOS, Windows, musl) it is one
allocation and nothing more.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def settle_heap() -> None:
    """Allocate, touch and free one 30 MiB block (the first call in a process; later calls do nothing)."""
    block = torch.empty(30 << 20, dtype=torch.uint8)
    block.fill_(0)  # touched, so the block is really mapped (and unmapped on free)
    del block
