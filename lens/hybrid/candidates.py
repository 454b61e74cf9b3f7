"""The hybrid's coefficient sweep as batched forwards: every (gated row, coefficient) candidate of a step is one
row of a base forward, at most `HybridConfig.candidate_batch` rows per forward.

Newest-position candidates (hybrid_eval.py) run position q alone on a copy of the row's KV cache up to q - 1
(the base's own cache is not touched); all-positions candidates (hybrid_token.py) run the whole sequence with
the vector at every position, no cache. Either way a candidate row sees exactly the tokens and steering the
sequential sweep gives it (one forward per coefficient), so the tokens are the same; only the number of calls
changes, which is what costs on real pairs (the gate fires on a few percent of tokens, and each firing used
to cost one forward per coefficient).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import torch
from jaxtyping import Bool, Float, Int

from ..interventions.engine import Gate, batch_rows, current_batch_rows

#: the per-layer keys and values of each candidate at the newest position, [candidates, heads, 1, head_dim]
CandidateKV = list[tuple[torch.Tensor, torch.Tensor]]


def plain_layers(cache) -> bool:
    """True when `cache` is a transformers DynamicCache whose layers all hold plain key/value tensors
    (the cache `lens.hybrid.generate` builds), so its rows can be copied into a new cache."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(la).__name__ == "DynamicLayer" and isinstance(getattr(la, "keys", None),
                                                                                     torch.Tensor) for la in layers)


def rows_cache(cache, rows: Int[torch.Tensor, " k"]):
    """A new DynamicCache holding `rows` of `cache` (a row may repeat), every position but the newest.

    Its layers (`_rows_layer_class`) copy the rows once, when the candidates' newest position arrives, straight into
    the tensor attention reads (a plain DynamicLayer would copy the rows, then concatenate the new position onto
    that copy: twice the bytes, which is most of a sweep's cost on long sequences)."""
    from transformers import DynamicCache

    out = DynamicCache()
    ids, counts = torch.unique_consecutive(rows.cpu(), return_counts=True)
    ends = counts.cumsum(0).tolist()
    runs = [(end - c, end, int(r)) for r, c, end in zip(ids.tolist(), counts.tolist(), ends, strict=True)]
    layer = _rows_layer_class()  # built on first use: transformers is imported late
    out.layers = [layer(la.keys, la.values, runs, len(rows)) for la in cache.layers]
    return out


@functools.cache
def _rows_layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class RowsLayer(DynamicLayer):
        """A candidate cache layer: rows of a source layer's keys/values up to q - 1, filled on the first update."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, runs: list[tuple[int, int, int]], n: int):
            super().__init__()
            self._src, self._runs, self._n = (keys, values), runs, n
            self.device, self.is_initialized = keys.device, True
            self.keys = keys[:1, :, :-1].expand(n, -1, -1, -1)  # views: the shape and length the model reads
            self.values = values[:1, :, :-1].expand(n, -1, -1, -1)

        def _fill(self, src: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
            s = src.shape[-2] - 1
            out = new.new_empty(self._n, src.shape[1], s + new.shape[-2], src.shape[-1])
            for start, end, row in self._runs:  # a row's candidates in one broadcast copy
                out[start:end, :, :s] = src[row : row + 1, :, :s]
            out[:, :, s:] = new
            return out

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if self._src is None:  # a later step: an ordinary dynamic layer
                return super().update(key_states, value_states, *args, **kwargs)
            self.keys, self.values = self._fill(self._src[0], key_states), self._fill(self._src[1], value_states)
            self._src = None
            return self.keys, self.values

    return RowsLayer


def set_gates(gates: list[Gate], rows: Bool[torch.Tensor, " batch"], vectors: Float[torch.Tensor, "batch d"],
              scales: Float[torch.Tensor, " batch"], sites: Int[torch.Tensor, " batch"], everywhere: bool = False,
              ) -> None:
    """Open gate i (steer site i of `HybridConfig.sites`) on the rows that steer there."""
    for i, gate in enumerate(gates):
        gate.set(rows & (sites.to(rows.device) == i), vectors, scales, everywhere=everywhere)


def clear_gates(gates: list[Gate]) -> None:
    for gate in gates:
        gate.clear()


def _chunks(total: int, size: int) -> Iterator[slice]:
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


def sweep(
    gates: list[Gate],
    sites: Int[torch.Tensor, " batch"],
    forward: Callable[[torch.Tensor, torch.Tensor, object], tuple[torch.Tensor, object]],
    gated: Bool[torch.Tensor, " batch"],
    vectors: Float[torch.Tensor, "batch d"],
    coefficients: tuple[float, ...],
    ids: Int[torch.Tensor, "batch seq"],
    mask: Int[torch.Tensor, "batch seq"],
    unsteered: Int[torch.Tensor, " batch"],
    candidate_batch: int,
    cache=None,
    keep_kv: bool = False,
) -> tuple[list[Int[torch.Tensor, " batch"]], CandidateKV | None]:
    """(one token per row per coefficient, the candidates' newest keys/values or None).

    cache None: all-positions candidates, `ids`/`mask` the whole sequence, the vector added at every real
    position. Else newest-position candidates on a copy of `cache` without its newest position, `ids` the
    newest token [batch, 1] and `mask` the whole sequence's mask. gates: one per steer site; sites: each
    row's. `forward(ids, mask, cache)` returns (last-position logits, cache). Rows the gate did not pick keep
    `unsteered` in every candidate list.
    keep_kv (newest-position only): also return, per layer, the keys and values each candidate wrote at the
    newest position, candidate (gated row g, coefficient j) at index g * len(coefficients) + j.
    """
    n_coef = len(coefficients)
    picked = gated.nonzero(as_tuple=True)[0]
    row_of = picked.repeat_interleave(n_coef)  # candidate -> batch row
    coef = torch.tensor(coefficients, dtype=torch.float32, device=vectors.device).repeat(len(picked))
    tokens = unsteered[:, None].repeat(1, n_coef).clone()  # [batch, n_coef]
    outer = current_batch_rows()
    if outer is None or len(outer) != len(gated):
        outer = tuple(range(len(gated)))
    found: list[torch.Tensor] = []
    kv: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
    for part in _chunks(len(row_of), max(1, int(candidate_batch))):
        r = row_of[part]
        ones = torch.ones(len(r), dtype=torch.bool, device=vectors.device)
        set_gates(gates, ones, vectors[r.to(vectors.device)], coef[part], sites[r.to(sites.device)],
                  everywhere=cache is None)
        sub = None if cache is None else rows_cache(cache, r)
        with batch_rows([outer[i] for i in r.tolist()]):  # per-example hooks see each candidate's own input
            logits, sub = forward(ids[r.to(ids.device)], mask[r.to(mask.device)], sub)
        found.append(logits.argmax(-1).to(tokens.device))
        if keep_kv and sub is not None:
            kv.append([(la.keys[:, :, -1:].clone(), la.values[:, :, -1:].clone())  # copies: each chunk's cache
                       for la in sub.layers])  # is freed before the next one is built
    clear_gates(gates)
    if found:
        tokens[picked.to(tokens.device)] = torch.cat(found).view(len(picked), n_coef)
    cand_kv = None
    if keep_kv and kv:
        cand_kv = [(torch.cat([c[i][0] for c in kv]), torch.cat([c[i][1] for c in kv])) for i in range(len(kv[0]))]
    return [tokens[:, j] for j in range(n_coef)], cand_kv


def write_kept(cache, cand_kv: CandidateKV, gated: Bool[torch.Tensor, " batch"], keep: Int[torch.Tensor, " batch"],
               n_coef: int) -> None:
    """Set the newest keys/values of each gated row with keep > 0 to those of its candidate keep - 1 (in place);
    other rows keep their unsteered newest position."""
    picked = gated.nonzero(as_tuple=True)[0].cpu()
    chosen = keep.cpu()[picked]
    sel = chosen > 0
    if not bool(sel.any()):
        return
    rows = picked[sel]
    src = torch.arange(len(picked))[sel] * n_coef + (chosen[sel] - 1)
    for la, (k, v) in zip(cache.layers, cand_kv, strict=True):
        la.keys[rows.to(la.keys.device), :, -1:] = k[src.to(k.device)]
        la.values[rows.to(la.values.device), :, -1:] = v[src.to(v.device)]
