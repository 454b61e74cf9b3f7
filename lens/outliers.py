"""Rows whose norm dwarfs the others' (e.g. the first token, an attention sink), found and named.

Many models write a huge residual at position 0 (SmolLM2-135M: norm ~25,000 there, ~170
elsewhere). Kept among ordinary tokens, such rows dominate whatever is fitted on them: an SAE
trained on `--select all` with SmolLM2's first token explains 0.24 of the variance, 0.93 without
it. `NormOutliers` counts rows over `ratio` x the median row norm of their batch and site, by
token position; capture and `train_sae` warn with the positions and the selection that skips
them (`from:N`: every token from position N on).
"""

from __future__ import annotations

import warnings
from collections import Counter

import torch

RATIO = 10.0


class OutlierWarning(UserWarning):
    """Some captured rows have norms far above the rest (see `lens.outliers`)."""


class NormOutliers:
    """Running count of rows whose norm is over `ratio` x the median row norm (per site and batch)."""

    def __init__(self, ratio: float = RATIO):
        self.ratio = ratio
        self.rows = 0
        self.flagged = 0
        self.worst = 0.0
        self.positions: Counter[int] = Counter()  # single-token rows: absolute position -> flagged rows
        self.mean_rows = 0  # flagged rows that average several tokens (no one position)

    def update_rows(self, acts: dict[str, torch.Tensor], start: torch.Tensor | None = None,
                    end: torch.Tensor | None = None) -> None:
        """Add a batch: per site [rows, d] tensors, with the rows' token positions [start, end) if known."""
        flagged = None
        n = 0
        for t in acts.values():
            if t.shape[0] < 2:
                continue
            norms = t.detach().float().norm(dim=-1).cpu()
            med = float(norms.median())
            if not med > 0:
                continue
            bad = norms > self.ratio * med
            if bool(bad.any()):
                self.worst = max(self.worst, float(norms.max()) / med)
            flagged = bad if flagged is None else flagged | bad
            n = t.shape[0]
        if flagged is None:
            return
        self.rows += n
        k = int(flagged.sum())
        if not k:
            return
        self.flagged += k
        if start is None:
            self.mean_rows += k
            return
        start, end = start.cpu(), (end.cpu() if end is not None else start.cpu() + 1)
        single = flagged & (end - start == 1)
        self.positions.update(start[single].tolist())
        self.mean_rows += int((flagged & ~single).sum())

    def update(self, acts) -> None:
        """Add an `Activations` (or anything with .acts, .start, .end)."""
        self.update_rows(acts.acts, acts.start, acts.end)

    def message(self, what: str = "captured rows") -> str | None:
        """The warning text, or None when no row stood out."""
        if not self.flagged:
            return None
        pos = sorted(self.positions)
        where = ", ".join(f"{p} ({_rows(self.positions[p])})" for p in pos[:8]) + (" ..." if len(pos) > 8 else "")
        parts = [f"{self.flagged} of {self.rows} {what} have a norm over {self.ratio:g}x the median row norm "
                 f"(up to {self.worst:.0f}x)"]
        if pos:
            parts.append(f", at token position(s) {where}")
        if self.mean_rows:
            parts.append(f"{';' if pos else ','} {self.mean_rows} of them averages over several tokens")
        msg = "".join(parts) + ". Such rows (often the first token, an attention sink) dominate an SAE's or " \
                               "a direction's fit"
        if pos and pos == list(range(pos[-1] + 1)) and pos[-1] < 8:
            n = pos[-1] + 1
            msg += (f"; skip them with the selection from:{n} (every token from position {n} on; "
                    f"`lens capture --select from:{n}`)")
        else:
            msg += "; leave those positions out of the selection (positions:..., from:N) or drop those rows"
        return msg

    def warn(self, what: str = "captured rows", stacklevel: int = 3) -> str | None:
        """Issue the warning (an `OutlierWarning`) if any row stood out; returns its text."""
        msg = self.message(what)
        if msg:
            warnings.warn(msg, OutlierWarning, stacklevel=stacklevel)
        return msg


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def check_capture_folder(folder, site: str, ratio: float = RATIO, max_rows: int = 65536) -> NormOutliers:
    """Outliers among the first `max_rows` rows of one site of a capture folder (the first shards,
    read alone with their positions)."""
    from .artifacts import load_tensors

    mon = NormOutliers(ratio)
    seen = 0
    for info in folder.manifest["shards"]:
        if seen >= max_rows:
            break
        tensors, _ = load_tensors(folder.path / info["file"], "capture shard", keys=[site, "start", "end"])
        mon.update_rows({site: tensors[site]}, tensors["start"], tensors["end"])
        seen += tensors[site].shape[0]
    return mon
