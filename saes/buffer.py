"""Activation sources and the shuffling buffer that feeds SAE training with bounded memory.

A *source* is anything that can be opened again and again to stream `[rows, d_in]` chunks:
a capture folder (+ site), a path to one, or an in-memory tensor. `shuffled_batches` reads a
source epoch after epoch through a buffer of at most `buffer_rows` rows: when the buffer is
full it is permuted and its first half goes out as batches, so rows from different shards (and
different texts) mix. The stream is a pure function of (source, seed): a resumed run replays it
and skips the rows it has already consumed, which makes resume exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from jaxtyping import Float

from lens.errors import LensError

Chunks = Callable[[], Iterator[Float[torch.Tensor, "rows d_in"]]]


class RowSource:
    """A re-openable stream of activation rows of width `d_in` (see module docstring)."""

    def __init__(self, open_chunks: Chunks, d_in: int, n_rows: int | None, description: str,
                 site: str | None = None, model: dict | None = None):
        self.open_chunks, self.d_in, self.n_rows = open_chunks, d_in, n_rows
        self.description, self.site, self.model = description, site, model or {}

    def __iter__(self) -> Iterator[Float[torch.Tensor, "rows d_in"]]:
        for chunk in self.open_chunks():
            yield chunk.float()

    @classmethod
    def of(cls, source, site: str | None = None, chunk_rows: int = 8192) -> RowSource:
        """Wrap a RowSource, a CaptureFolder or its path (with `site`, or its only site), or a tensor."""
        if isinstance(source, RowSource):
            return source
        if isinstance(source, torch.Tensor):
            if source.dim() != 2 or source.shape[0] == 0:
                raise LensError(f"activation rows must be a non-empty [rows, d_in] tensor, got {tuple(source.shape)}")
            t = source.detach()
            return cls(lambda: iter(t.split(chunk_rows)), t.shape[1], t.shape[0], f"tensor {tuple(t.shape)}", site)
        from lens.capture_folder import CaptureFolder

        if isinstance(source, (str, Path)):
            source = CaptureFolder(source)
        if not isinstance(source, CaptureFolder):
            raise LensError(f"cannot read activations from {type(source).__name__}; give a capture folder or a tensor")
        folder = source
        if site is None:
            if len(folder.sites) != 1:
                raise LensError(f"capture {folder.path} holds {len(folder.sites)} sites ({', '.join(folder.sites)}); "
                                "name one with site=")
            site = folder.sites[0]
        if site not in folder.sites:
            raise LensError(f"site {site} is not in capture {folder.path}; it holds {', '.join(folder.sites)}")
        if folder.n_rows == 0:
            raise LensError(f"capture {folder.path} holds no rows")
        return cls(lambda: folder.iter_rows(site, chunk_rows), folder.d_model, folder.n_rows,
                   f"capture {folder.path}", site, folder.manifest.get("model"))


def shuffled_batches(
    source: RowSource, batch_size: int, buffer_rows: int, seed: int = 0
) -> Iterator[Float[torch.Tensor, "batch d_in"]]:
    """Endless full batches of shuffled rows (epoch after epoch); memory <= buffer_rows + one chunk.

    The buffer is one preallocated tensor of slots. Incoming rows are copied into free slots; when
    none is free, the filled slots are permuted and all but ``keep`` (half the buffer) leave as
    batches, freeing their slots. Each row is copied once in and once out. At the end of an epoch
    every filled slot leaves in full batches; the remainder (< one batch) carries over.
    """
    if buffer_rows < batch_size:
        raise LensError(f"buffer_rows ({buffer_rows}) must be at least batch_size ({batch_size})")
    gen = torch.Generator().manual_seed(seed)
    store = torch.empty(buffer_rows, source.d_in)
    filled = torch.zeros(buffer_rows, dtype=torch.bool)
    free = torch.arange(buffer_rows)  # slots to fill next, in this order
    keep = min(buffer_rows // 2, buffer_rows - batch_size)

    def emit(n_keep: int) -> Iterator[torch.Tensor]:
        nonlocal free
        slots = torch.nonzero(filled).flatten()
        slots = slots[torch.randperm(slots.numel(), generator=gen)]
        n_out = max(0, slots.numel() - n_keep) // batch_size * batch_size
        out = slots[:n_out]
        filled[out] = False
        free = torch.cat([free, out])
        for i in range(0, n_out, batch_size):  # copied out before any later fill reuses the slots
            yield store.index_select(0, out[i : i + batch_size])

    while True:
        seen = 0
        for chunk in source:
            if chunk.shape[-1] != source.d_in:
                raise LensError(f"{source.description}: a chunk has width {chunk.shape[-1]}, expected {source.d_in}")
            seen += chunk.shape[0]
            pos = 0
            while pos < chunk.shape[0]:
                k = min(free.numel(), chunk.shape[0] - pos)
                slots, free = free[:k], free[k:]
                store.index_copy_(0, slots, chunk[pos : pos + k])
                filled[slots] = True
                pos += k
                if free.numel() == 0:
                    yield from emit(keep)
        if seen == 0:
            raise LensError(f"{source.description} yielded no rows")
        yield from emit(0)
