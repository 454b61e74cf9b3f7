"""KV-cached, batched hybrid decoding (base weights, thinking-model timing).

Per generated token k (processed at absolute position q = P + k - 1, whose output predicts token
k; for k = 0 that is the last prompt position P - 1):
1. both models process the newest token with their own KV caches (base unsteered);
2. the gate compares their next-token distributions; rows where it fires (and, in mode paper, where
   the thinking model is still reasoning: `region`) are candidates;
3. a selector picks a category vector from the thinking model's residual at `read_site`, position q;
4. for each coefficient the base's newest position q is re-run with coefficient x vector added at
   the category's steer site (`site`, or its own in `category_sites`) on a copy of the row's cache up
   to q - 1, giving one candidate token per coefficient; all the step's (row, coefficient) candidates
   run as one batched forward (`lens.hybrid.candidates`, at most `candidate_batch` rows per forward);
5. the guardrail picks a candidate (`decide.choose`); the base cache is then left holding position q
   unsteered (mode paper: the steering is a one-step nudge, as the paper's hybrid_eval.py reverts it)
   or the chosen variant (mode unsteered_allowed): each variant's keys/values at q are kept and the
   wanted one is written back per row; in mode paper the reasoning phase may then replace the token
   (base EOS suppressed, answer prompt forced); both models advance with the token.
Each model reads its own prompt; the base's tokens reach the thinking model through the pair's
token map (`thinking_side`). No full recompute: each step costs one forward of each model, plus
one batched base forward of a single position per `candidate_batch` candidates when the gate fires
(where the cache does not expose its tensors, the sweep runs one coefficient at a time on the base's
own cache instead).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..batching import encode, left_pad, pad_id
from ..decoding.loop import forward_kwargs, returned_cache
from ..errors import LensError
from ..interventions import Intervention, Where, steer
from ..models import Model
from ..site_hooks import hooks
from .candidates import clear_gates, plain_layers, set_gates, sweep, write_kept
from .common import HybridConfig, HybridResult, StepLog, choose, gate_rows, select_vectors
from .config import Draws, draw_rows
from .region import Region


def _drop_last(cache) -> None:
    """Remove the newest position from an HF cache (API differs across transformers versions)."""
    try:
        cache.crop(-1)
    except (ValueError, TypeError):  # older transformers: crop(max_length)
        cache.crop(cache.get_seq_length() - 1)


def _rollback_cache() -> object | None:
    """An empty KV cache that keeps every position of every layer, so `_drop_last` can always roll back one.

    The cache a model builds for itself gives sliding-window layers (Mistral, Gemma 2/3, OLMo 3, Phi-3, ...)
    a layer that keeps only the last window - 1 positions and refuses `crop` once the window is reached
    (transformers 4.56 on; 5.15 on can record the past, earlier 5.x cannot). A cache built without a config
    holds full layers: the model's attention mask still applies each layer's window, so the outputs are the
    same, and those layers hold the whole sequence (as full-attention layers do). None when the installed
    transformers has no `DynamicCache` (the model then makes its own)."""
    try:
        from transformers import DynamicCache

        return DynamicCache()
    except Exception:  # noqa: BLE001 - any failure: let the model build its own cache, as before
        return None


def _last_kv(cache) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Copies of every layer's keys/values at the newest position, or None if the cache hides them."""
    layers = getattr(cache, "layers", None)
    if not layers or not all(isinstance(getattr(la, "keys", None), torch.Tensor) for la in layers):
        return None
    return [(la.keys[:, :, -1:].clone(), la.values[:, :, -1:].clone()) for la in layers]


def _write_last_kv(cache, variants: list[list[tuple[torch.Tensor, torch.Tensor]]], choice: torch.Tensor) -> None:
    """Set each row's newest keys/values to those of variant ``choice[row]`` (in place)."""
    for i, la in enumerate(cache.layers):
        for j, attr in enumerate(("keys", "values")):
            stack = torch.stack([v[i][j] for v in variants])  # [variants, batch, heads, 1, head_dim]
            idx = choice.to(stack.device).view(1, -1, 1, 1, 1).expand(1, *stack.shape[1:])
            getattr(la, attr)[:, :, -1:] = stack.gather(0, idx)[0]


def _forward(model: Model, ids, mask, cache):
    """(last-position logits as float, the cache) of one cached forward; the LM head runs on the last position
    only where the model takes ``logits_to_keep`` (the prompt's forward would otherwise project every position)."""
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]
    cache_arg, keeps_logits = forward_kwargs(type(model.hf))
    extra = {"logits_to_keep": 1} if keeps_logits else {}
    out = model.hf(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{cache_arg: cache},
                   **extra)
    return out.logits[:, -1].float(), returned_cache(out)


def _full_forward(model: Model, ids, mask):
    """Logits at the last position of a forward over the whole sequence, no cache."""
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return model.hf(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, -1].float()


def thinking_side(base: Model, thinking: Model, prompts: list[str], thinking_prompts: list[str] | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, dict[int, list[int]]]:
    """(thinking ids, thinking mask, step table or None, several-id feeds) for a hybrid run.

    Each model encodes its own prompt text with its own tokenizer (left-padded; `thinking_prompts`
    default to the base's `prompts`), so their lengths and specials may differ. Every token the base
    then generates reaches the thinking model through the pair's `TokenMap` (`lens.pairs.token_map`):
    `table[base id]` is the thinking id fed at that step (ordinary ids unchanged; a special through
    its role or its text), except for a special whose text is several thinking ids: `feeds[base id]`
    holds them all and that step feeds them all (the thinking model then advances by several positions;
    a text of no ids feeds the map's fill id). The thinking model's logits are read at `table`, i.e. in
    the base's ids, for the gate and the guardrail (for a several-id special: at its first id). table is
    None when the map is the identity (one tokenizer, or tokenizers that differ only in names), which
    leaves the decoding as before.
    """
    from ..pairs import token_map

    if thinking_prompts is not None and len(thinking_prompts) != len(prompts):
        raise LensError(f"{len(thinking_prompts)} thinking prompts for {len(prompts)} prompts")
    tb = encode(thinking, list(thinking_prompts if thinking_prompts is not None else prompts), side="left")
    tm = token_map(base, thinking)
    table, feeds = None, {}
    if not (tm.is_identity and base.vocab_size == thinking.vocab_size):
        table = tm.step_table(base.vocab_size, thinking.vocab_size)
        fill = tm.target_fill
        feeds = {i: [j if j < thinking.vocab_size else fill for j in v] for i, v in tm.special.items()
                 if len(v) > 1 and i < base.vocab_size}
    return tb.input_ids, tb.attention_mask, table, feeds


def thinking_step(token: torch.Tensor, feed: torch.Tensor, table: torch.Tensor | None, feeds: dict[int, list[int]],
                  fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(thinking ids [n, width], their mask [n, width]) fed after a step: per row the region's `feed` (>= 0),
    else the base token through `table`, or all of `feeds[token]`; rows left-padded to the widest."""
    t_tok = token if table is None else table.to(token.device)[token]
    one = torch.where(feed.to(token.device) >= 0, feed.to(token.device), t_tok)
    rows = [feeds[int(t)] if int(f) < 0 and int(t) in feeds else [int(o)]
            for t, f, o in zip(token.tolist(), feed.tolist(), one.tolist(), strict=True)]
    width = max(len(r) for r in rows)
    if width == 1:
        return one[:, None], torch.ones(len(rows), 1, dtype=torch.long, device=token.device)
    return left_pad(rows, fill, token.device)


def _sequential_sweep(base: Model, cfg: HybridConfig, gates, sites, b_cache, gated, vec, step_ids, mask, t_logp,
                      unsteered, draws, coefs) -> tuple[torch.Tensor, torch.Tensor, object]:
    """The newest-position sweep one coefficient at a time, on the base's own cache (cropped and re-run), for a
    cache whose layers `lens.hybrid.candidates.sweep` cannot copy; leaves position q holding the kept variant."""
    n, dev = gated.shape[0], gated.device
    cands, variants = [], [_last_kv(b_cache)]  # position q unsteered, then once per coefficient
    for c in cfg.coefficients:
        _drop_last(b_cache)
        set_gates(gates, gated, vec, torch.full((n,), float(c)), sites)
        logits_c, b_cache = _forward(base, step_ids[:, -1:], mask, b_cache)
        cands.append(logits_c.argmax(-1).to(dev))
        if variants[0] is not None:
            variants.append(_last_kv(b_cache))
    clear_gates(gates)
    token, pick = choose(cfg, t_logp.cpu(), unsteered.cpu(), [c.cpu() for c in cands], gated.cpu(), draws)
    # variant of position q to keep: 0 = unsteered (mode paper, or not steered), i = coefficient i - 1
    keep = pick + 1 if cfg.mode == "unsteered_allowed" else torch.zeros_like(pick)
    held = torch.where(gated.cpu(), len(cands), 0)  # what the cache holds after the sweep
    if variants[0] is not None:
        _write_last_kv(b_cache, variants, keep.to(dev))
    elif not torch.equal(keep, held):  # re-run position q with each row's kept coefficient
        _drop_last(b_cache)
        coef = torch.where(keep > 0, coefs[(keep - 1).clamp(min=0)], torch.zeros(n))
        set_gates(gates, (keep > 0).to(dev), vec, coef.to(dev), sites)
        _, b_cache = _forward(base, step_ids[:, -1:], mask, b_cache)
        clear_gates(gates)
    return token, pick, b_cache


def hybrid_generate(
    base: Model,
    thinking: Model,
    prompts: list[str],
    cfg: HybridConfig,
    max_new_tokens: int = 64,
    eos_token_id: int | None = None,
    thinking_prompts: list[str] | None = None,
    rows: Sequence[int] | None = None,
) -> HybridResult:
    """Generate greedily from `base`, steered where the gate fires (see module docstring).

    thinking_prompts: the thinking model's own prompts (e.g. its chat template), one per prompt;
    default `prompts`. See `thinking_side` for how ids pass between two models with other specials.
    rows: each prompt's index in its task set (default 0..n-1): it seeds the prompt's random draws
    (`lens.hybrid.config.Draws`), so a prompt draws the same in any batch.
    """
    cfg.check(base.d_model)
    dev = base.device
    batch = encode(base, prompts, side="left")
    ids, mask = batch.input_ids.to(dev), batch.attention_mask.to(dev)
    t_ids, t_mask, table, feeds = thinking_side(base, thinking, prompts, thinking_prompts)
    t_fill = pad_id(thinking.tokenizer)
    t_ids, t_mask = t_ids.to(thinking.device), t_mask.to(thinking.device)
    eos = eos_token_id if eos_token_id is not None else base.tokenizer.eos_token_id
    n = len(prompts)
    rows = draw_rows(rows, n)
    log = StepLog(n, max_new_tokens, cfg.coefficients, eos)
    region = Region(cfg, base, thinking, n, eos)
    resid: dict[str, torch.Tensor] = {}

    def keep_last(h: torch.Tensor) -> None:
        resid["h"] = h[:, -1].detach()

    ivs = [Intervention(s, torch.zeros(base.d_model), where=Where.on_gate(f"hybrid:{i}"), source="hybrid")
           for i, s in enumerate(cfg.sites)]  # one gate per steer site
    b_cache, t_cache = _rollback_cache(), None
    step_ids, t_step, full_ids = ids, t_ids, ids
    with torch.inference_mode(), steer(base, ivs, record=False) as handle, hooks(thinking, {cfg.read_site: keep_last}):
        gates = [handle.gates[f"hybrid:{i}"] for i in range(len(cfg.sites))]
        for k in range(max_new_tokens):
            clear_gates(gates)
            b_logits, b_cache = _forward(base, step_ids, mask, b_cache)
            t_logits, t_cache = _forward(thinking, t_step, t_mask, t_cache)
            b_logits, t_logits = b_logits.to(dev), t_logits.to(dev)  # lm heads may sit on other devices
            t_top_raw = t_logits.argmax(-1).cpu()  # in the thinking model's own ids (its end-of-reasoning marker)
            if table is not None:  # the thinking model's logits, read at the base's ids
                t_logits = t_logits[:, table.to(dev)]
            unsteered = b_logits.argmax(-1)
            gated = gate_rows(cfg, b_logits, t_logits) & ~log.done.to(dev) & region.allowed(t_top_raw).to(dev)
            token = unsteered
            if bool(gated.any()):
                draws = Draws.at(cfg.seed, rows, k)
                cat, vec, sites = select_vectors(cfg, resid["h"], draws)
                t_logp = t_logits.log_softmax(-1)
                if cfg.steer_positions == "all":  # hybrid_token.py: a full forward per candidate, steered at
                    cands, _ = sweep(gates, sites, lambda i, m, _c: (_full_forward(base, i, m), None),  # every position
                                     gated, vec, cfg.coefficients, full_ids, mask, unsteered, cfg.candidate_batch)
                    token, pick = choose(cfg, t_logp.cpu(), unsteered.cpu(), [c.cpu() for c in cands], gated.cpu(),
                                         draws)
                elif plain_layers(b_cache):  # position q re-run per candidate on copies of the cache up to q - 1
                    keep_kv = cfg.mode == "unsteered_allowed"
                    cands, cand_kv = sweep(gates, sites, lambda i, m, c: _forward(base, i, m, c), gated, vec,
                                           cfg.coefficients, step_ids[:, -1:], mask, unsteered, cfg.candidate_batch,
                                           cache=b_cache, keep_kv=keep_kv)
                    token, pick = choose(cfg, t_logp.cpu(), unsteered.cpu(), [c.cpu() for c in cands], gated.cpu(),
                                         draws)
                    if keep_kv:  # the chosen variant of position q stays in the cache (the base's is unsteered)
                        write_kept(b_cache, cand_kv, gated, pick + 1, len(cfg.coefficients))
                else:
                    token, pick, b_cache = _sequential_sweep(base, cfg, gates, sites, b_cache, gated, vec, step_ids,
                                                             mask, t_logp, unsteered, draws, log.coefs)
                token = token.to(dev)
                log.steer(k, gated.cpu(), pick, cat.cpu())
            token, feed = region.apply(k, token.cpu(), t_logits.argmax(-1).cpu(), t_top_raw, log.done)
            token = log.advance(k, gated.cpu(), token).to(dev)
            step_ids = token[:, None]
            if cfg.steer_positions == "all":  # only the all-positions candidates re-read the whole sequence
                full_ids = torch.cat([full_ids, step_ids], dim=1)
            t_step, t_new = thinking_step(token, feed, table, feeds, t_fill)
            t_step = t_step.to(thinking.device)
            mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype, device=dev)], dim=1)
            t_mask = torch.cat([t_mask, t_new.to(t_mask.device, t_mask.dtype)], dim=1)
            if bool(log.done.all()):
                break
    return log.result(base.tokenizer, cfg.names, cfg.mode, region.active, cfg.ablation)
