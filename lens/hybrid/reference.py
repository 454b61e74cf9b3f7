"""Full-recompute hybrid, a port of the paper's loop (hybrid_token.py / hybrid_eval.py): no KV cache, O(steps^2).

The ground truth the KV-cached `hybrid_generate` must match token for token, and the benchmark's
"reference style" row. Every decision is written here from the paper's code, not taken from the cached
path's modules (`decide`, `region`, `generate.thinking_side`): the gate, the category and its vector
under each ablation, the candidate sweep, the guardrail (strict `>` over the coefficients in order), the
reasoning phase (no steering at or after the thinking model's end-of-reasoning marker, the base's EOS
replaced by the thinking model's token inside it, the answer prompt forced after it). Shared with the
cached path: the configuration (`HybridConfig`, including its fixed random vectors), the pair's
`TokenMap`, tokenisation, the ids that spell the end-of-reasoning marker (`lens.hybrid.region.close_marker`;
the matching over them is written here), and the random draws (`lens.hybrid.config.Draws`: per row, seeded by the
row's prompt index and the step).

Mode paper: each candidate is a full forward with coefficient x vector added at the newest position
only, no past steering replayed (hybrid_eval.py's revert), or at every position of the sequence with
``steer_positions="all"`` (hybrid_token.py). Mode unsteered_allowed: past steering choices
are replayed at their positions on every recompute, as the cached loop keeps them in its cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..batching import left_pad, pad_id, token_rows
from ..models import Model
from ..site_hooks import hooks
from .common import HybridResult
from .config import Draws, HybridConfig, draw_rows
from .region import CloseMarker, close_marker


def _spell(marker: CloseMarker, state: int, tok: int) -> tuple[int, str]:
    """hybrid_eval.py's end-of-reasoning detection, written as its state machine: one id, or an opener (a token
    ending with the marker's first piece) followed by the other pieces; a fresh opener restarts the match."""
    if marker.single is not None:
        return (0, "close") if tok == marker.single else (0, "")
    if state == 0:
        return (1, "partial") if tok in marker.openers else (0, "")
    if tok == marker.suffix[state - 1]:
        return (0, "close") if state == len(marker.suffix) else (state + 1, "partial")
    return (1, "partial") if tok in marker.openers else (0, "")


def _forward(model: Model, rows: list[list[int]], adds=None, read_site=None) -> tuple:
    """(logits at each row's last token [n, vocab], residual at `read_site` there or None) of a full forward.

    rows are unpadded; they are left-padded here. adds[row] = [(site, index into the row, vector)]."""
    width = max(len(r) for r in rows)
    pad = [width - len(r) for r in rows]
    fill = pad_id(model.tokenizer)
    ids, mask = left_pad(rows, fill)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    read: dict = {}

    def add_at(site: str):
        def add(h):
            h = h.clone()
            for r, items in enumerate(adds):
                for s, i, v in items:
                    if s == site:
                        h[r, pad[r] + i] = h[r, pad[r] + i] + v.to(h.device, h.dtype)
            return h

        return add

    def keep(h):
        read["h"] = h[:, -1].detach().float().cpu()

    fns = {}
    for site in {s for items in adds or [] for s, _, _ in items}:
        fns[site] = add_at(site)
    if read_site is not None:
        fns[read_site] = keep
    dev = model.device
    with hooks(model, fns):
        logits = model.hf(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                          use_cache=False).logits
    return logits[:, -1].float().cpu(), read.get("h")


def _base_to_thinking(base: Model, thinking: Model) -> tuple[torch.Tensor | None, object]:
    """(thinking id read for each base id, or None when the pair's map is the identity; base id -> the
    thinking ids fed for it: all the ids of its mapping, those past the thinking vocabulary or a mapping of
    none replaced by the map's fill id)."""
    from ..pairs import token_map

    tm = token_map(base, thinking)
    if tm.is_identity and base.vocab_size == thinking.vocab_size:
        return None, lambda v: [v]

    def ids(v: int) -> list[int]:
        return [j if j < thinking.vocab_size else tm.target_fill for j in tm.map_id(v)] or [tm.target_fill]

    return torch.tensor([ids(v)[0] for v in range(base.vocab_size)]), ids


def _gate(cfg: HybridConfig, b_logits: torch.Tensor, t_logits: torch.Tensor) -> list[bool]:
    """The paper's gate: the greedy tokens differ (or, gate "kl": KL(thinking || base) > threshold)."""
    if cfg.gate == "disagree":
        return [int(b) != int(t) for b, t in zip(b_logits.argmax(-1), t_logits.argmax(-1), strict=True)]
    out = []
    for b, t in zip(b_logits, t_logits, strict=True):
        pt, lt, lb = t.softmax(-1), t.log_softmax(-1), b.log_softmax(-1)
        out.append(float((pt * (lt - lb)).sum()) > cfg.kl_threshold)
    return out


def _vectors(cfg: HybridConfig, resid: torch.Tensor, draws: Draws) -> tuple[list[int], list[torch.Tensor], list[str]]:
    """(category recorded per row, steering vector per row, steer site per row): the selector's pick, then the
    ablation.

    A pick of -1 (a latent without a vector, the paper's missing key) steers with nothing, recorded -2;
    bias_only records -1 (no category used). A category steers at its own site (`category_sites`, else `site`)
    with the bias given for that site."""
    if callable(cfg.selector):
        cats = [int(c) for c in torch.as_tensor(cfg.selector(resid)).reshape(-1)]
    else:  # nearest: the category direction with the highest cosine to the thinking residual
        m = cfg.matrix
        units = m / m.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        cats = [int((units @ (h / h.norm().clamp(min=1e-12))).argmax()) for h in resid.float()]
    if cfg.ablation == "random_category":
        cats = draws.ints("random_category", len(cfg.names)).tolist()
    source = cfg.random_matrix if cfg.ablation == "random_vector" else cfg.matrix
    where = cfg.category_sites or {}
    sites = [where.get(cfg.names[c], cfg.site) if c >= 0 else cfg.site for c in cats]
    biases = {**(cfg.site_biases or {}), cfg.site: cfg.bias}
    vecs = []
    for c, s in zip(cats, sites, strict=True):
        if c < 0:
            vecs.append(torch.zeros(cfg.matrix.shape[1]))
        elif cfg.ablation == "bias_only":
            vecs.append(biases[s].float().clone())
        else:
            vecs.append(source[c] + (biases[s].float() if cfg.bias is not None else 0.0))
    if cfg.ablation == "random_vector_per_step":
        rnd = draws.normal("random_vector_per_step", cfg.matrix.shape[1])
        vecs = [r / r.norm() * v.norm() for r, v in zip(rnd, vecs, strict=True)]
    recorded = [-2 if c < 0 else (-1 if cfg.ablation == "bias_only" else c) for c in cats]
    return recorded, vecs, sites


def _guardrail(cfg: HybridConfig, logprobs: torch.Tensor, unsteered: int, cands: list[int], draw: int | None) -> int:
    """Index of the chosen coefficient (-1 = the unsteered token) for one gated row."""
    if cfg.ablation == "random_guardrail":
        return int(draw)
    if cfg.ablation == "no_guardrail":
        return cfg.no_guardrail_index if cfg.mode == "paper" else len(cands) - 1
    pick, best = -1, float("-inf")
    if cfg.mode == "unsteered_allowed":  # the unsteered token first: a steered one must beat it
        best = float(logprobs[unsteered])
    for j, tok in enumerate(cands):
        if float(logprobs[tok]) > best:  # strict `>`: ties keep the earlier coefficient
            pick, best = j, float(logprobs[tok])
    return pick


def hybrid_generate_reference(
    base: Model, thinking: Model, prompts: list[str], cfg: HybridConfig, max_new_tokens: int = 64,
    eos_token_id: int | None = None, thinking_prompts: list[str] | None = None, rows: Sequence[int] | None = None,
) -> HybridResult:
    """Same decisions as `hybrid_generate`, recomputing both models over the whole sequence each step.

    rows: each prompt's index (seeds its random draws), as `hybrid_generate`'s."""
    cfg.check(base.d_model)
    n = len(prompts)
    ids = draw_rows(rows, n)
    t_texts = list(thinking_prompts if thinking_prompts is not None else prompts)
    b_rows = [list(r) for r in token_rows(base, list(prompts), offsets=False)[0]]
    t_rows = [list(r) for r in token_rows(thinking, t_texts, offsets=False)[0]]
    table, to_thinking = _base_to_thinking(base, thinking)
    eos = eos_token_id if eos_token_id is not None else base.tokenizer.eos_token_id
    coefs = list(cfg.coefficients)
    # the reasoning phase (mode paper): the thinking model's end-of-reasoning marker, one id or several pieces
    marker = close_marker(thinking, cfg.think_close) if cfg.mode == "paper" else CloseMarker()
    close = marker.single
    answer = base.tokenizer.encode(cfg.answer_prompt, add_special_tokens=False) if marker.active else []
    inside, queue, closed, partial = [True] * n, [[] for _ in range(n)], [False] * n, [0] * n
    gated_log, steered_log, cat_log, coef_log, tokens = [], [], [], [], [[] for _ in range(n)]
    done, lengths = [False] * n, [max_new_tokens] * n
    kept: list[list] = [[] for _ in range(n)]  # mode unsteered_allowed: (site, index, vector) replayed every step
    with torch.inference_mode():  # as the paper's loop (hybrid_token.py)
        for k in range(max_new_tokens):
            b_logits, _ = _forward(base, b_rows, kept)
            t_logits, resid = _forward(thinking, t_rows, read_site=cfg.read_site)
            t_top_own = t_logits.argmax(-1).tolist()  # in the thinking model's ids (its marker)
            if table is not None:
                t_logits = t_logits[:, table]
            t_top = t_logits.argmax(-1).tolist()
            unsteered = b_logits.argmax(-1).tolist()
            gate = _gate(cfg, b_logits, t_logits)
            gated = [gate[r] and not done[r] and (not marker.active or (inside[r] and not queue[r]
                                                                          and t_top_own[r] != close))
                     for r in range(n)]
            out = list(unsteered)
            steered, cat_row, coef_row = [False] * n, [-1] * n, [0.0] * n
            if any(gated):
                draws = Draws.at(cfg.seed, ids, k)
                cats, vecs, sites = _vectors(cfg, resid, draws)
                last = [len(row) - 1 for row in b_rows]
                cands = []
                # hybrid_eval.py steers the newest position; hybrid_token.py every position of the sequence
                spots = [list(range(len(b_rows[r]))) if cfg.steer_positions == "all" else [last[r]] for r in range(n)]
                for c in coefs:
                    adds = [kept[r] + ([(sites[r], i, c * vecs[r]) for i in spots[r]] if gated[r] else [])
                            for r in range(n)]
                    cands.append(_forward(base, b_rows, adds)[0].argmax(-1).tolist())
                picks = (draws.ints("random_guardrail", len(coefs)).tolist()
                         if cfg.ablation == "random_guardrail" else [None] * n)
                logprobs = t_logits.log_softmax(-1)
                for r in range(n):
                    if not gated[r]:
                        continue
                    pick = _guardrail(cfg, logprobs[r], unsteered[r], [cand[r] for cand in cands], picks[r])
                    cat_row[r] = cats[r]
                    if pick >= 0:
                        out[r], steered[r], coef_row[r] = cands[pick][r], True, coefs[pick]
                        if cfg.mode == "unsteered_allowed":
                            kept[r].append((sites[r], last[r], coefs[pick] * vecs[r]))
            feed = [None] * n
            for r in range(n):  # the reasoning phase (hybrid_eval.py's think-region state machine)
                if not marker.active or done[r] or not (inside[r] or queue[r]):
                    continue
                if queue[r]:
                    out[r] = queue[r].pop(0)
                else:
                    partial[r], seen = _spell(marker, partial[r], t_top_own[r])
                    if seen == "close":
                        feed[r], closed[r] = t_top_own[r], True
                        if answer:
                            out[r], queue[r] = answer[0], list(answer[1:])
                    elif seen == "partial":  # spelling its marker: the thinking model is fed its own token
                        feed[r] = t_top_own[r]
                    elif out[r] == eos:
                        out[r] = t_top[r]
                if closed[r] and not queue[r]:
                    inside[r] = False
            for r in range(n):
                if done[r]:
                    out[r] = eos
                elif out[r] == eos:
                    done[r], lengths[r] = True, k + 1
                tokens[r].append(out[r])
                b_rows[r].append(out[r])
                t_rows[r].extend([feed[r]] if feed[r] is not None else to_thinking(out[r]))
            gated_log.append(gated)
            steered_log.append(steered)
            cat_log.append(cat_row)
            coef_log.append(coef_row)
            if all(done):
                break
    steps = max(lengths) if lengths else 0
    toks = [tokens[r][: lengths[r]] for r in range(n)]
    texts = base.tokenizer.batch_decode([[t for t in row if t != eos] for row in toks], skip_special_tokens=True)

    def grid(log: list, dtype: torch.dtype) -> torch.Tensor:  # [steps run, n] -> [n, steps]
        return torch.tensor(log, dtype=dtype).reshape(len(log), n).T[:, :steps]

    return HybridResult(toks, texts, grid(gated_log, torch.bool), grid(steered_log, torch.bool),
                        grid(cat_log, torch.long), grid(coef_log, torch.float32), cfg.names, lengths, cfg.mode,
                        marker.active, cfg.ablation)
