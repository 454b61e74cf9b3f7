"""Greedy generation of prompts through nnsight, as `lens.generate` does it: `generate_nnsight_prompts`.

Prompts are sorted by length and cut into batches (the plan of `lens.generate`), each batch left-padded with
its attention mask and decoded by Hugging Face's ``generate`` inside an nnsight trace under lens's pinned
decoding settings (`generation_config`); completions are cut at EOS as `lens.generate` cuts them. Under
`interventions` the batch is steered by `lens.interventions.backends.nnsight_backend`, and
each row gets exactly the tokens it gets alone on the lens engine. ``remote=True`` is passed to nnsight (NDIF).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..batching import left_pad, pad_id
from ..interventions.backends.nnsight_backend import generate_planned, language_model, plan
from ..interventions.engine import batch_rows
from ..interventions.spec import Intervention
from ..models import Model
from .generate import (
    Generation,
    Prompt,
    Sample,
    encode_prompts,
    eos_ids,
    finish,
    generation_config,
)


def generate_nnsight_prompts(
    model: Model,
    prompts: Sequence[Prompt],
    max_new_tokens: int = 256,
    interventions: Sequence[Intervention] = (),
    *,
    lm: Any = None,
    remote: bool = False,
    batch_size: int = 32,
    eos_token_id: int | Sequence[int] | None | str = "default",
) -> tuple[Generation, list[dict]]:
    """(greedy completions of `prompts`, where the interventions fired) through nnsight.

    lm: the nnsight model over `model`'s weights (default: `language_model(model)`). Per-example vectors
    [inputs, d_model] follow the prompts, as in `lens.generate`. Fired records are dicts (row = prompt index,
    step, absolute position, site), one per slot an intervention touched in the steps that prompt runs alone
    (until its EOS), in the order the lens engine logs them for that prompt alone.
    """
    from ..errors import LensError

    if max_new_tokens < 1 or batch_size < 1:
        raise LensError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
    lm = language_model(model) if lm is None else lm
    ivs = list(interventions)
    encoded = encode_prompts(model, prompts)
    pad, eos = pad_id(model.tokenizer), eos_ids(model, eos_token_id)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    samples: dict[int, Sample] = {}
    fired: dict[int, list[dict]] = {}
    model.hf.eval()
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = left_pad([encoded[i] for i in chunk], pad)
        config = generation_config(model, max_new_tokens, pad, eos, ids.shape[1])
        with batch_rows(chunk):  # per-example vectors: row r is prompt chunk[r]
            todo = plan(lm, model, ivs, mask, max_new_tokens)
            out = generate_planned(lm, todo, ids, mask, max_new_tokens, remote, generation_config=config)
        new = out[:, ids.shape[1] :].cpu()
        for r, i in enumerate(chunk):
            tok_ids, text, reason = finish(model.tokenizer, new[r].tolist(), eos, 0, ())
            samples[i] = Sample(i, 0, text, tok_ids, len(tok_ids), reason)
        for rec in todo.fired([samples[i].n_new_tokens for i in chunk]):
            fired.setdefault(chunk[rec["row"]], []).append({**rec, "row": chunk[rec["row"]]})
    gen = Generation([samples[i] for i in range(len(encoded))], len(encoded), 1, [len(e) for e in encoded],
                     dict(max_new_tokens=max_new_tokens, greedy=True, n=1, eos_token_id=eos, backend="nnsight"),
                     [list(e) for e in encoded])
    return gen, [rec for i in range(len(encoded)) for rec in fired.get(i, [])]
