"""Steered-generation and hybrid benchmark rows, measured in the same run as their baselines.

Rows: plain HF generate; lens engine steering every generated position; TransformerLens
(TransformerBridge) generate with the same hook; nnsight generate with the same intervention;
hybrid (KV-cached) vs plain base generation vs a reference-style full-recompute hybrid.
"""

from __future__ import annotations

import copy
import statistics
import sys

import torch

from lens.hybrid import HybridConfig, hybrid_generate, hybrid_generate_reference
from lens.interventions import Intervention, Where, steer
from lens.models import Model


def _median_time(fn, repeats: int) -> float:
    from benchmarks.capture import _all_times

    return statistics.median(_all_times([fn], repeats)[0])


def steering_pair(model: Model, batch: int = 4, new_tokens: int = 64):
    """(plain HF generate, lens steered generation, prompt ids, the intervention, the same steering inside
    HF generate): one add at the middle layer's resid_post on every generated position (absolute
    positions P.. of each row; the prompt is untouched), `new_tokens` greedy tokens for `batch` copies of
    one prompt, EOS ignored. lens's row is what `lens steer` runs: `lens.decoding.generate` (its own
    KV-cached loop, texts decoded) inside `steer`."""
    from lens.decoding import generate

    tok = model.tokenizer
    ids = tok(["Q:47+38+26+19=?\n"] * batch, return_tensors="pt")["input_ids"].to(model.device)
    vec = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0)) * 0.1
    iv = Intervention(f"blocks.{model.n_layers // 2}.hook_resid_post", vec, where=Where.generated(0, None))
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
              pad_token_id=tok.pad_token_id, eos_token_id=None)
    prompts = ids.tolist()

    def hf():
        with torch.no_grad():
            model.hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)

    def lens_steer():
        with torch.no_grad(), steer(model, iv, record=False):
            generate(model, prompts, new_tokens, eos_token_id=None, batch_size=batch)

    def steer_in_hf():
        with torch.no_grad(), steer(model, iv, record=False):
            model.hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)

    return hf, lens_steer, ids, iv, steer_in_hf


def steering_rows(model: Model, batch: int = 4, new_tokens: int = 64, repeats: int = 3) -> list[dict]:
    """Tokens/s of each way to generate with one add-intervention at one layer on every generated position."""
    tok = model.tokenizer
    hf, lens_steer, ids, iv, steer_in_hf = steering_pair(model, batch, new_tokens)
    rows = [("plain HF generate", hf), ("lens steer (every generated position; lens.decoding.generate)", lens_steer),
            ("lens steer hooks inside HF generate", steer_in_hf)]
    try:
        from transformer_lens.model_bridge import TransformerBridge

        from lens.interventions.backends.transformer_lens_backend import transformer_lens_hooks

        bridge = TransformerBridge.boot_transformers("bench", hf_model=copy.deepcopy(model.hf), tokenizer=tok)

        def tl():
            with torch.no_grad(), bridge.hooks(fwd_hooks=transformer_lens_hooks([iv], ids.shape[1])):
                bridge.generate(ids, max_new_tokens=new_tokens, do_sample=False, use_past_kv_cache=True,
                                verbose=False, stop_at_eos=False)

        rows.append(("TransformerLens Bridge generate + same hook", tl))
    except Exception as e:  # noqa: BLE001
        print(f"TransformerLens row skipped: {e}", file=sys.stderr)
    try:
        from nnsight import LanguageModel

        from lens.interventions.backends.nnsight_backend import generate_nnsight

        lm = LanguageModel(copy.deepcopy(model.hf), tokenizer=tok)

        def nn():
            generate_nnsight(lm, model, [iv], ids, new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=None,
                             min_new_tokens=new_tokens)

        rows.append(("nnsight generate + same intervention", nn))
    except Exception as e:  # noqa: BLE001
        print(f"nnsight row skipped: {e}", file=sys.stderr)
    from benchmarks.capture import _all_times

    runs = _all_times([fn for _, fn in rows], repeats)
    times = [statistics.median(t) for t in runs]
    return [{"method": name, "new_tokens_per_s": round(batch * new_tokens / sec, 1),
             "speed_vs_hf": round(times[0] / sec, 3), "runs_s": [round(x, 4) for x in t]}
            for (name, _), sec, t in zip(rows, times, runs, strict=True)]


def hybrid_rows(base: Model, thinking: Model, prompts: list[str], new_tokens: int = 48, repeats: int = 1,
                ref_tokens: int | None = None, configs: dict[str, HybridConfig] | None = None,
                each_prompts: int | None = None) -> list[dict]:
    """Hybrid (KV-cached) tokens/s vs plain base generate vs the full-recompute reference, per config.

    configs: label -> HybridConfig (default: random category vectors at the middle layer, a worst
    case where the trajectories diverge and the gate fires often). each_prompts: the reference run one
    prompt at a time is timed on the first `each_prompts` prompts only (default all; its tokens/s does not
    depend on how many prompts run, one after another).
    """
    configs = configs or random_configs(base)
    tok = base.tokenizer
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True).to(base.device)
    n = len(prompts)
    ref_n = ref_tokens or new_tokens  # the reference costs O(tokens^2): fewer tokens understate the speedup
    each = prompts[:each_prompts] if each_prompts else prompts

    def plain():
        with torch.no_grad():
            base.hf.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=None)

    t_plain = _median_time(plain, repeats)
    rows = [{"method": "plain base generate", "new_tokens_per_s": round(n * new_tokens / t_plain, 1),
             "ratio_to_plain": 1.0}]
    for label, cfg in configs.items():
        res = {}

        def fast(cfg=cfg, res=res):
            res["r"] = hybrid_generate(base, thinking, prompts, cfg, max_new_tokens=new_tokens, eos_token_id=-1)

        def ref(cfg=cfg):
            hybrid_generate_reference(base, thinking, prompts, cfg, max_new_tokens=ref_n, eos_token_id=-1)

        def ref_each(cfg=cfg):  # the paper's code runs one problem at a time
            for p in each:
                hybrid_generate_reference(base, thinking, [p], cfg, max_new_tokens=ref_n, eos_token_id=-1)

        t_fast, t_ref, t_each = (_median_time(f, repeats) for f in (fast, ref, ref_each))
        fast_tps, ref_tps, each_tps = n * new_tokens / t_fast, n * ref_n / t_ref, len(each) * ref_n / t_each
        gated = res["r"].fraction_gated()
        to_plain = lambda tps: round(tps * t_plain / (n * new_tokens), 3)  # noqa: E731
        rows += [
            {"method": f"lens hybrid, {label} (gate fired on {gated:.0%} of tokens)",
             "new_tokens_per_s": round(fast_tps, 1), "ratio_to_plain": to_plain(fast_tps)},
            {"method": f"reference-style hybrid, {label} (full recompute, one prompt at a time as the paper's "
                       f"code, {ref_n} tokens{'' if len(each) == n else f', first {len(each)} prompts'})",
             "new_tokens_per_s": round(each_tps, 1),
             "ratio_to_plain": to_plain(each_tps)},
            {"method": f"full-recompute hybrid, batched ({ref_n} tokens)",
             "new_tokens_per_s": round(ref_tps, 1), "ratio_to_plain": to_plain(ref_tps)},
            {"method": f"lens hybrid / reference-style (one at a time), {label}", "new_tokens_per_s": "",
             "ratio_to_plain": round(fast_tps / each_tps, 2)},
            {"method": f"lens hybrid / full recompute batched, {label}", "new_tokens_per_s": "",
             "ratio_to_plain": round(fast_tps / ref_tps, 2)},
        ]
    return rows


def random_configs(base: Model) -> dict[str, HybridConfig]:
    """The worst case: random category vectors at the middle layer (the gate fires often)."""
    g = torch.Generator().manual_seed(0)
    cats = {f"c{i}": torch.randn(base.d_model, generator=g) for i in range(4)}
    return {"random category vectors": HybridConfig(f"blocks.{base.n_layers // 2}.hook_resid_post", cats)}


def organism_configs(base: Model, thinking: Model, layer: int = 1) -> dict[str, HybridConfig]:
    """The organism's category vectors and reasoning bias as `lens hybrid` builds them (nearest selector)."""
    from lens.hybrid.study import category_vectors
    from lens.studies import organism_inputs as O

    site = f"blocks.{layer}.hook_resid_post"
    pos, neg = O.marker_contrast()
    bias, cats, _ = category_vectors(base, O.labelled_traces(thinking), site, pos, neg)
    return {"organism vectors (nearest selector)": HybridConfig(site, cats, bias=bias)}
