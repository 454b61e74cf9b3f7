"""Sites resolve onto HF modules, agree with TransformerLens, and hooks are scoped."""

import copy

import pytest
import torch

from lens import LensError, Site, hooks
from lens.capture_memory import capture
from lens.families import FAMILIES, family_of
from lens.sites import resolve

TEXT = ["Q:12+34=?\n<think>12+34=46</think>A:46"]


def _bridge_resid_post(model, text):
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(
        "lens-parity", hf_model=copy.deepcopy(model.hf), tokenizer=model.tokenizer
    )
    ids = model.tokenizer(text, return_tensors="pt")["input_ids"]
    _, cache = bridge.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_resid_post"))
    return {n: cache[n][0] for n in cache.keys() if n.endswith("hook_resid_post")}


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_resid_post_matches_transformer_bridge(tiny, family):
    model = tiny(family)
    ref = _bridge_resid_post(model, TEXT)
    sites = [f"blocks.{i}.hook_resid_post" for i in range(model.n_layers)]
    got = capture(model, TEXT, sites, progress=False)
    assert set(ref) == set(sites)
    for s in sites:
        torch.testing.assert_close(got[s], ref[s], atol=1e-5, rtol=1e-5)


@pytest.mark.realweights
def test_smollm2_resid_post_matches_transformer_bridge(smollm2):
    text = ["The capital of France is Paris. Wait, let me check that again."]
    ref = _bridge_resid_post(smollm2, text)
    sites = [f"blocks.{i}.hook_resid_post" for i in range(0, smollm2.n_layers, 5)]
    got = capture(smollm2, text, sites, progress=False)
    for s in sites:
        scale = ref[s].abs().max()
        torch.testing.assert_close(got[s] / scale, ref[s] / scale, atol=1e-4, rtol=1e-4)


def test_resid_pre_of_next_layer_equals_resid_post(tiny):
    model = tiny("llama")
    got = capture(model, TEXT, ["blocks.1.hook_resid_post", "blocks.2.hook_resid_pre"], progress=False)
    torch.testing.assert_close(got["blocks.1.hook_resid_post"], got["blocks.2.hook_resid_pre"])


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_attn_and_mlp_out_sum_to_resid_delta(tiny, family):
    model = tiny(family)
    s = ["blocks.1.hook_resid_pre", "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"]
    got = capture(model, TEXT, s, progress=False)
    delta = got[s[3]] - got[s[0]]
    torch.testing.assert_close(got[s[1]] + got[s[2]], delta, atol=1e-5, rtol=1e-4)


def test_site_errors_name_the_fix(tiny):
    model = tiny("llama")
    with pytest.raises(LensError, match=r"out of range .*0\.\.3"):
        resolve(model, "blocks.9.hook_resid_post")
    with pytest.raises(LensError, match="did you mean hook_resid_post"):
        resolve(model, "blocks.1.hook_resid_pots")
    with pytest.raises(LensError, match="blocks.<layer>.<kind>"):
        Site.parse("layer two")
    assert Site.parse("resid_post.3") == Site(3, "hook_resid_post")


def test_unknown_family_lists_supported():
    with pytest.raises(LensError, match="supported: .*gpt2.*llama.*qwen2.*To add one"):
        family_of("mamba")
    for name in ["llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3", "gpt2", "gpt_neox"]:
        assert name in FAMILIES


def test_hooks_remove_only_their_own_even_on_error(tiny):
    model = tiny("llama")
    layer = model.hf.model.layers[1]
    calls = []
    user = layer.register_forward_hook(lambda m, a, o: calls.append("user"))
    ids = torch.tensor([[1, 5, 6, 7]])
    try:
        with pytest.raises(RuntimeError, match="boom"):
            with hooks(model, {"blocks.1.hook_resid_post": lambda h: calls.append("lens")}):
                model.hf(ids)
                assert calls == ["user", "lens"] or calls == ["lens", "user"]
                raise RuntimeError("boom")
        calls.clear()
        model.hf(ids)
        assert calls == ["user"]  # the user's hook survived, ours is gone
        assert len(layer._forward_hooks) == 1
    finally:
        user.remove()


def test_hook_can_modify_residual(tiny):
    model = tiny("qwen2")
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        clean = model.hf(ids).logits
        with hooks(model, {"blocks.3.hook_resid_post": lambda h: h * 0}):
            zeroed = model.hf(ids).logits
        again = model.hf(ids).logits
    assert not torch.allclose(clean, zeroed)
    torch.testing.assert_close(clean, again)
    # the final norm of a zero residual gives constant logits across positions
    torch.testing.assert_close(zeroed[0, 0], zeroed[0, -1])
