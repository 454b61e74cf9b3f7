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


def _bump(at: tuple[int, ...], seen: list | None = None):
    """A position-aware hook: adds a fixed vector at the given absolute positions (recording what it saw)."""

    def fn(h, site, positions):
        if seen is not None:
            seen.append((site, positions.clone()))
        v = torch.linspace(-2, 2, h.shape[-1], dtype=h.dtype)
        hit = torch.zeros_like(positions, dtype=torch.bool)
        for p in at:
            hit |= positions == p
        return h + hit[..., None].to(h.dtype) * v

    return fn


def test_position_aware_hook_on_a_padded_batch_equals_each_row_alone(tiny):
    from lens.batching import pad

    model = tiny("llama")
    texts = ["Q:12+34=?\n", "Q:1+2+3+4+5=?\n", "Q:9=?\n"]  # different lengths
    site = "blocks.1.hook_resid_post"
    alone, seen_alone = [], []
    for t in texts:
        with hooks(model, {"resid_post.1": _bump((2, 5), seen_alone)}):
            alone.append(model(t))
    for _, p in seen_alone:
        assert p.tolist() == [list(range(p.shape[1]))]
    assert {s for s, _ in seen_alone} == {site}  # the site's name, shorthands resolved
    seen = []
    with hooks(model, {site: _bump((2, 5), seen)}):
        right = model(texts)  # right-padded, one batch
    for g, w in zip(right, alone, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
    ids = [model.tokenizer(t)["input_ids"] for t in texts]
    b = pad(model, ids, [[] for _ in ids], "left")
    seen.clear()
    with torch.no_grad(), hooks(model, {site: _bump((2, 5), seen)}):
        logits = model.hf(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids).logits
    (_, p), = seen
    for r, n in enumerate(b.lengths):
        assert p[r].tolist() == [-1] * b.pads[r] + list(range(n))  # pads at -1, real tokens at 0..n-1
        torch.testing.assert_close(logits[r, b.pads[r]:], alone[r], rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        plain = model(texts[0])
    assert (plain - alone[0]).abs().max() > 1e-3  # the hook changed something


@pytest.mark.parametrize("backend", ["lens", "hf"])
def test_position_aware_hook_under_the_kv_cache_sees_the_positions_of_a_full_recompute(tiny, backend):
    import lens

    model = tiny("llama")
    prompts = ["Q:12+34=?\n", "Q:1+2+3=?\n", "Q:9=?\n"]
    new = 6
    site = "blocks.1.hook_resid_post"
    at = (9, 11, 13)  # generated tokens of some rows, prompt tokens of others
    seen = []
    with hooks(model, {site: _bump(at, seen)}):
        gen = lens.generate(model, prompts, max_new_tokens=new, batch_size=3, eos_token_id=None, backend=backend)
    seqs = gen.sequences()
    # per row of the cached run: the real positions of every call, in order
    rows = [sum((p[r][p[r] >= 0].tolist() for _, p in seen), []) for r in range(len(prompts))]
    assert seen[0][1].shape[1] > 1 and all(p.shape[1] == 1 for _, p in seen[1:])  # a prefill, then one token a call
    full = []
    for s in seqs:
        ids = s["input_ids"]
        assert len(ids) == s["prompt_length"] + new
        once = []
        with hooks(model, {site: _bump(at, once)}):
            logits = model([ids])[0]
        (_, p), = once
        full.append(p[0].tolist())
        assert p[0].tolist() == list(range(len(ids)))
        plen = s["prompt_length"]
        assert logits[plen - 1 : len(ids) - 1].argmax(-1).tolist() == ids[plen:]  # the same tokens
    # every row saw its sequence's positions except the last token's (never fed back)
    assert sorted(rows) == sorted(f[:-1] for f in full)
    plain = lens.generate(model, prompts, max_new_tokens=new, batch_size=3, eos_token_id=None, backend=backend)
    assert [s["input_ids"] for s in plain.sequences()] != [s["input_ids"] for s in seqs]  # the hook mattered


def test_one_argument_hooks_still_work_and_other_signatures_are_refused(tiny):
    model = tiny("llama")
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        clean = model.hf(ids).logits
        with hooks(model, {"blocks.1.hook_resid_post": lambda h: h * 0}):
            old = model.hf(ids).logits
        with hooks(model, {"blocks.1.hook_resid_post": lambda h, site, positions: h * 0}):
            new = model.hf(ids).logits
        with hooks(model, {"blocks.1.hook_resid_post": lambda h, site=None, positions=None: h * 0}):
            default = model.hf(ids).logits  # one required parameter: fn(h)
    torch.testing.assert_close(old, new)
    torch.testing.assert_close(old, default)
    assert not torch.allclose(clean, old)
    for bad in (lambda h, site: h, lambda: None, lambda h, site, positions, extra: h):
        with pytest.raises(LensError, match=r"takes \(h\) or \(h, site, positions\)"):
            with hooks(model, {"blocks.1.hook_resid_post": bad}):
                pass
    layer = model.hf.model.layers[1]
    assert not layer._forward_hooks and not model.hf._forward_pre_hooks  # nothing left behind
    with hooks(model, {"blocks.1.hook_resid_pre": lambda h, site, positions: None}):
        with pytest.raises(LensError, match="does not match the tokens"):
            layer(torch.zeros(1, 3, model.d_model))  # a call not through the model: no positions
