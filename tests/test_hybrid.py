"""The KV-cached hybrid equals the full-recompute reference, and degenerates correctly."""

import pytest
import torch

from lens import LensError
from lens.hybrid import HybridConfig, hybrid_generate, hybrid_generate_reference
from lens.tiny import tiny_model

PROMPTS = ["Q:12+3=?", "hello there my friend", "ab"]
SITE = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def pair():
    return tiny_model("llama", seed=0), tiny_model("llama", seed=1)


def _cfg(model, ablation="none", scale=4.0, seed=3):
    g = torch.Generator().manual_seed(seed)
    cats = {f"c{i}": torch.randn(model.d_model, generator=g) * scale for i in range(3)}
    return HybridConfig(SITE, cats, bias=torch.randn(model.d_model, generator=g), ablation=ablation)


@pytest.mark.parametrize("ablation", ["none", "no_guardrail", "random_vector"])
def test_kv_cached_hybrid_equals_full_recompute(pair, ablation):
    base, thinking = pair
    fast = hybrid_generate(base, thinking, PROMPTS, _cfg(base, ablation), max_new_tokens=10)
    ref = hybrid_generate_reference(base, thinking, PROMPTS, _cfg(base, ablation), max_new_tokens=10)
    assert fast.tokens == ref.tokens
    assert torch.equal(fast.gated, ref.gated) and torch.equal(fast.steered, ref.steered)
    assert torch.equal(fast.category, ref.category)
    assert fast.steered.any(), "the case must actually steer"


def test_cache_fallback_without_kv_access_equals_reference(pair, monkeypatch):
    """Caches that hide their tensors take the re-run path; it gives the same tokens."""
    import lens.hybrid.generate as G

    base, thinking = pair
    monkeypatch.setattr(G, "_last_kv", lambda cache: None)
    fast = hybrid_generate(base, thinking, PROMPTS, _cfg(base), max_new_tokens=10)
    ref = hybrid_generate_reference(base, thinking, PROMPTS, _cfg(base), max_new_tokens=10)
    assert fast.tokens == ref.tokens and fast.steered.any()


def test_padded_batch_equals_rows_alone(pair):
    base, thinking = pair
    together = hybrid_generate(base, thinking, PROMPTS, _cfg(base), max_new_tokens=8)
    for i, p in enumerate(PROMPTS):
        alone = hybrid_generate(base, thinking, [p], _cfg(base), max_new_tokens=8)
        assert alone.tokens[0] == together.tokens[i]


def test_same_model_never_steers_and_equals_greedy(pair):
    base, _ = pair
    res = hybrid_generate(base, base, PROMPTS, _cfg(base), max_new_tokens=8)
    assert not res.gated.any() and res.fraction_steered() == 0.0
    tok = base.tokenizer
    tok.padding_side = "left"
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        greedy = base.hf.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id,
                                  eos_token_id=tok.eos_token_id)
    width = enc["input_ids"].shape[1]
    for r in range(len(PROMPTS)):
        want = [t for t in greedy[r, width:].tolist() if t != tok.pad_token_id]
        assert res.tokens[r][: len(want)] == want[: len(res.tokens[r])]


def test_config_errors():
    with pytest.raises(LensError, match="at least one category"):
        HybridConfig(SITE, {})
    with pytest.raises(LensError, match="unknown ablation"):
        HybridConfig(SITE, {"a": torch.ones(4)}, ablation="nope")


def test_taxonomy_selector_on_the_organism():
    """The taxonomy SAE's argmax latent picks categories; the study runs with it end to end."""
    from lens.hybrid.study import category_vectors
    from lens.models import load_model
    from lens.studies import hybrid_organism as H
    from lens.studies import organism_inputs as O

    base, thinking = load_model("organism:base"), load_model("organism:thinking")
    site = "blocks.1.hook_resid_post"
    traces = O.labelled_traces(thinking, n=24)
    step_names, select, info = H.taxonomy_selector(thinking, traces, site)
    _, cats, _ = category_vectors(base, traces, site, ["Q:T:12+3=?\n"], ["Q:D:12+3=?\n"], step_labels=step_names)
    assert set(cats) == set(info["taxonomy"]["categories"]) and len(cats) >= 2
    assert all(v.shape == (base.d_model,) for v in cats.values())
    assert sum(info["taxonomy"]["categories"].values()) == info["taxonomy"]["n_sentences"]
    idx = select(torch.randn(7, base.d_model))
    assert idx.shape == (7,) and int(idx.min()) >= 0 and int(idx.max()) < len(cats)
    res = H.run(base, thinking, n=4, ablations=("none",), max_new_tokens=40, selector="taxonomy")
    assert res["vectors"]["selector"] == "taxonomy"
    assert set(res["runs"]["none"]["category_use"]) == set(res["vectors"]["categories"])
    assert all(name.split(":")[1] in ("restate", "computation", "error", "backtrack", "verification")
               for name in res["vectors"]["categories"])
    with pytest.raises(LensError, match="unknown selector"):
        H.run(base, thinking, n=4, selector="magic")
