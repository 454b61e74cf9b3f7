"""Every family in the site table, on a tiny random model of that architecture.

Per family: resid_pre(L+1) == resid_post(L) and attn_out + mlp_out == resid_post - resid_pre (the table
points at the right modules; parallel blocks such as Phi-2's included), the final norm and the head give the
logits, padded capture batches give the unpadded rows, lens's decoding loop gives HF generate's tokens,
steering under the KV cache equals a full recompute, the KV-cached hybrid equals its full-recompute
reference, and CoT-decoding equals its branch-by-branch reference. Also: a bidirectional config keeps the
padding mask; GPT-2 logs no missing-mask warning; the Gemma 3 multimodal wrapper is causal and exact.
"""

import pytest
import torch

from lens.capture_memory import capture
from lens.models import Model
from lens.tiny import char_tokenizer

TEXT = ["Q:12+34=?\n<think>12+34=46</think>A:46"]
# every family in lens/families.py but gemma3, the multimodal wrapper (its own test below)
FAMILIES = ["llama", "qwen2", "gpt2", "mistral", "qwen3", "gemma", "gemma2", "gemma3_text", "gpt_neox", "smollm3",
            "olmo", "olmo2", "olmo3", "phi", "phi3", "mixtral", "qwen2_moe", "qwen3_moe"]


def _config(name, vocab):
    import transformers as T

    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    if name == "llama":
        return T.LlamaConfig(**common)
    if name == "qwen2":
        return T.Qwen2Config(**common)
    if name == "gpt2":
        return T.GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=128)
    if name == "mistral":
        return T.MistralConfig(**common)
    if name == "qwen3":
        return T.Qwen3Config(**common, head_dim=16)
    if name == "gemma":
        return T.GemmaConfig(**common, head_dim=16)
    if name == "gemma2":
        return T.Gemma2Config(**common, head_dim=16)
    if name == "gemma3_text":
        return T.Gemma3TextConfig(**common, head_dim=16)
    if name == "mixtral":
        return T.MixtralConfig(**common, num_local_experts=4, num_experts_per_tok=2)
    if name == "qwen2_moe":
        return T.Qwen2MoeConfig(**common, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                                shared_expert_intermediate_size=64)
    if name == "qwen3_moe":
        return T.Qwen3MoeConfig(**common, head_dim=16, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)
    if name == "smollm3":
        return T.SmolLM3Config(**common, pad_token_id=0, no_rope_layers=[1, 0])  # layer 1 without rotary (NoPE)
    if name == "olmo":
        return T.OlmoConfig(**common)
    if name == "olmo2":
        return T.Olmo2Config(**common)
    if name == "olmo3":
        return T.Olmo3Config(**common, layer_types=["sliding_attention", "full_attention"])
    if name == "phi":
        return T.PhiConfig(**{k: v for k, v in common.items() if k != "num_key_value_heads"})
    if name == "phi3":
        return T.Phi3Config(**common, pad_token_id=0)
    if name == "gpt_neox":
        return T.GPTNeoXConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, max_position_embeddings=128, use_parallel_residual=False)
    raise ValueError(name)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_sites_point_at_the_residual_stream(family):
    from transformers import AutoModelForCausalLM

    tok = char_tokenizer()
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(_config(family, len(tok)), dtype=torch.float32).eval()
    model = Model(hf=hf, tokenizer=tok, spec=f"tiny-{family}", source="object")
    assert model.family == family
    s = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out",
         "blocks.1.hook_resid_post"]
    got = capture(model, TEXT, s, progress=False)
    torch.testing.assert_close(got[s[0]], got[s[1]])
    torch.testing.assert_close(got[s[2]] + got[s[3]], got[s[4]] - got[s[1]], atol=1e-4, rtol=1e-4)


def _windowed(family, seed=0):
    """A tiny random model of `family` whose sliding-window layers (if any) attend to 8 positions."""
    from transformers import AutoModelForCausalLM

    tok = char_tokenizer()
    torch.manual_seed(seed)
    cfg = _config(family, len(tok))
    if hasattr(cfg, "sliding_window"):
        cfg.sliding_window = 8
    hf = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    return Model(hf=hf, tokenizer=tok, spec=f"tiny-{family}", source="object")


def _assert_padded_equals_alone(model, texts, sites, side="right"):
    """Capturing `texts` as one padded batch gives, site by site, each text's rows captured alone."""
    batched = capture(model, texts, sites, "all", batch_size=len(texts), padding_side=side, progress=False)
    alone = [capture(model, [t], sites, "all", progress=False) for t in texts]
    for site in sites:
        torch.testing.assert_close(batched[site], torch.cat([a[site] for a in alone]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_capture_equals_unpadded_rows_per_family(family, side):
    """Left padding passes per-row positions; right padding one broadcast row of positions: both give
    each text's unpadded values, also past a sliding window of 8 (Mistral, Gemma 2/3 local layers)."""
    model = _windowed(family)
    assert model.causal  # so right-padded batches run without a padding mask (lens/capture_memory.py _forward)
    texts = [TEXT[0], "Q:1+2=?\nA:3", TEXT[0] + " and more tokens past the window"]
    _assert_padded_equals_alone(model, texts, ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], side)


@pytest.mark.parametrize("family", FAMILIES)
def test_lens_decoding_loop_equals_hf_generate_per_family(family):
    """lens's decoding loop gives HF generate's tokens on a padded batch, also past a short sliding window
    (Mistral, Gemma 2/3 layers that attend to the last 8 positions only)."""
    from lens.decoding import generate

    model = _windowed(family)
    prompts = ["Q:12+34=?\n", "ab", "Q:1+2+3+4=?\n<think>"]
    kw = dict(batch_size=3, eos_token_id=None, return_top2=True)
    a, b = generate(model, prompts, 16, **kw), generate(model, prompts, 16, backend="hf", **kw)
    assert [s.token_ids for s in a.samples] == [s.token_ids for s in b.samples]
    for x, y in zip(a.samples, b.samples, strict=True):
        torch.testing.assert_close(x.top2, y.top2, atol=1e-6, rtol=1e-5)


def test_bidirectional_config_keeps_the_padding_mask():
    """A Gemma 3 config with bidirectional attention (EmbeddingGemma-style) is not causal: real tokens would
    see right pads, so capture keeps the padding mask there and stays exact (without it this fails)."""
    from transformers import AutoModelForCausalLM

    family = "gemma3_text"
    tok = char_tokenizer()
    torch.manual_seed(0)
    cfg = _config(family, len(tok))
    cfg.use_bidirectional_attention = True
    model = Model(hf=AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval(), tokenizer=tok,
                  spec=f"tiny-{family}", source="object")
    assert not model.causal and _windowed(family).causal
    _assert_padded_equals_alone(model, [TEXT[0], "Q:1+2=?\nA:3"], ["blocks.1.hook_resid_post"])


def test_right_padded_gpt2_capture_logs_no_missing_mask_warning(caplog):
    """GPT-2 warns when a padded batch comes without an attention mask; capture passes it an all-ones
    mask (HF skips it like none) so a checkpoint with a pad token id set logs nothing."""
    from transformers.utils import logging as hf_logging

    from lens.tiny import tiny_model

    model = tiny_model("gpt2", n_layers=2)
    model.hf.config.pad_token_id = model.tokenizer.pad_token_id
    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            got = capture(model, [TEXT[0], "ab"], "blocks.1.hook_resid_post", "all", batch_size=2, progress=False)
    finally:
        hf_logging.disable_propagation()
    assert not [r for r in caplog.records if r.name.startswith("transformers")], caplog.text
    alone = capture(model, ["ab"], "blocks.1.hook_resid_post", "all", progress=False)
    torch.testing.assert_close(got["blocks.1.hook_resid_post"][-len(alone):], alone["blocks.1.hook_resid_post"])


@pytest.mark.parametrize("family", FAMILIES)
def test_kv_cache_steering_equals_full_recompute_per_family(family):
    """Steering under HF generate's KV cache (padded batch) gives the logits of one full forward over the
    same sequence with the same interventions, at the same absolute positions, for every family."""
    from lens.interventions import Intervention, Where
    from tests.test_interventions import NEW, PROMPTS, _generate, _recompute

    model = _windowed(family)
    g = torch.Generator().manual_seed(0)
    vec = lambda: torch.randn(model.d_model, generator=g) * 2.0  # noqa: E731
    ivs = [Intervention("blocks.0.hook_resid_post", vec(), where=Where.first_step()),
           Intervention("blocks.1.hook_mlp_out", vec(), where=Where.generated(1, 4)),
           Intervention("blocks.1.hook_resid_pre", vec(), where=Where.prompt_last(2), scale=0.5)]
    enc, out, h = _generate(model, PROMPTS, ivs)
    width = enc["input_ids"].shape[1]
    mask = torch.cat([enc["attention_mask"], torch.ones(len(PROMPTS), NEW, dtype=torch.long)], dim=1)
    plen = enc["attention_mask"].sum(-1)
    ref, h2 = _recompute(model, out.sequences, mask, ivs, plen, width)
    torch.testing.assert_close(torch.stack(out.logits, dim=1), ref, atol=1e-4, rtol=1e-4)
    for row in range(len(PROMPTS)):
        last = int(plen[row]) + NEW - 1
        assert h.log.positions(row) == [p for p in h2.log.positions(row) if p < last] and h.log.positions(row)


@pytest.mark.parametrize("family", FAMILIES)
def test_final_norm_then_head_gives_the_models_logits(family):
    """Family.final_norm is the norm between the last resid_post and the unembedding."""
    from lens.families import family_of

    model = _windowed(family)
    ids = model.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    last = capture(model, [ids[0]], f"blocks.{model.n_layers - 1}.hook_resid_post", progress=False)
    norm = model.hf.get_submodule(family_of(family).final_norm)
    with torch.no_grad():
        logits = model.hf(input_ids=ids).logits[0]
        mine = model.hf.get_output_embeddings()(norm(last[f"blocks.{model.n_layers - 1}.hook_resid_post"]))
    torch.testing.assert_close(mine, logits, atol=1e-4, rtol=1e-4)


def test_gemma3_multimodal_is_causal_and_captures_padded_rows_exactly():
    """Gemma 3's multimodal wrapper: its vision encoder's bidirectional attention does not make the language
    model non-causal, and its padded capture gives the unpadded rows (text-only inputs)."""
    import transformers as T

    tok = char_tokenizer()
    torch.manual_seed(0)
    text = T.Gemma3TextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
                              sliding_window=8)
    vision = T.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                  image_size=28, patch_size=14)
    cfg = T.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4, image_token_index=len(tok) - 1)
    model = Model(hf=T.Gemma3ForConditionalGeneration(cfg).eval(), tokenizer=tok, spec="tiny-gemma3", source="object")
    assert model.family == "gemma3" and model.causal
    for side in ("left", "right"):
        _assert_padded_equals_alone(model, [TEXT[0], "Q:1+2=?\nA:3"], ["blocks.0.hook_attn_out",
                                                                       "blocks.1.hook_resid_post"], side)


@pytest.mark.parametrize("family", FAMILIES)
def test_kv_cached_hybrid_equals_full_recompute_per_family(family):
    """The hybrid's cache rollback (drop the newest position, re-run it steered) also works past a sliding
    window of 8 (Mistral, Gemma 2/3, OLMo 3 local layers), where HF's sliding caches refuse to crop. The KL
    gate at 0 and no guardrail steer every step (tiny tied-embedding models copy their input token, and
    both models of a pair agree on it)."""
    from lens.hybrid import HybridConfig, hybrid_generate, hybrid_generate_reference

    base, thinking = _windowed(family), _windowed(family, seed=1)
    g = torch.Generator().manual_seed(3)
    cfg = lambda: HybridConfig("blocks.1.hook_resid_post",  # noqa: E731
                               {f"c{i}": torch.randn(base.d_model, generator=g) * 4 for i in range(3)},
                               bias=torch.randn(base.d_model, generator=g), gate="kl", kl_threshold=0.0,
                               ablation="no_guardrail")
    prompts = ["Q:12+3=?", "hello there my friend", "ab"]
    fast = hybrid_generate(base, thinking, prompts, cfg(), max_new_tokens=12)
    g.manual_seed(3)
    ref = hybrid_generate_reference(base, thinking, prompts, cfg(), max_new_tokens=12)
    assert fast.tokens == ref.tokens and torch.equal(fast.steered, ref.steered) and fast.steered.any()


@pytest.mark.parametrize("family", FAMILIES)
def test_cot_decoding_equals_branch_by_branch_per_family(family):
    """CoT-decoding's one prefill, expanded cache and batched branches give the branch-by-branch reference's
    tokens and margins, also past a sliding window of 8."""
    from lens.decoding import cot_decode, cot_decode_reference
    from lens.evaluation.answers import Extracted

    def tail(text):
        return Extracted(text[-3:], len(text) - 3, len(text)) if len(text) >= 3 else None

    model = _windowed(family)
    prompts = ["Q: 12+7=?\nA:", "x"]
    fast = cot_decode(model, prompts, k=3, max_new_tokens=12, extractor=tail)
    slow = cot_decode_reference(model, prompts, k=3, max_new_tokens=12, extractor=tail)
    for f, s in zip(fast, slow, strict=True):
        for bf, bs in zip(f.branches, s.branches, strict=True):
            assert bf.token_ids == bs.token_ids and bf.first_token == bs.first_token
            torch.testing.assert_close(bf.margins, bs.margins, atol=1e-5, rtol=1e-5)
