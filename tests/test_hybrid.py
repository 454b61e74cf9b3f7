"""The KV-cached hybrid equals the full-recompute reference (both modes, every ablation, a separate read
site, the reasoning phase), the paper's rules hold, and it degenerates correctly."""

from types import SimpleNamespace

import pytest
import torch

from lens import LensError
from lens.hybrid import ALL_ABLATIONS, MODES, HybridConfig, hybrid_generate, hybrid_generate_reference
from lens.hybrid.config import Draws, draw_seed
from lens.hybrid.decide import choose, select_vectors
from lens.hybrid.region import Region
from lens.tiny import tiny_model

PROMPTS = ["Q:12+3=?", "hello there my friend", "ab"]
SITE = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def pair():
    return tiny_model("llama", seed=0), tiny_model("llama", seed=1)


def _cfg(model, ablation="none", scale=4.0, seed=3, mode="paper", **kw):
    g = torch.Generator().manual_seed(seed)
    cats = {f"c{i}": torch.randn(model.d_model, generator=g) * scale for i in range(3)}
    kw.setdefault("coefficients", (0.25, 0.5, 1.0))  # the paper's 10-point sweep is tested once, below
    return HybridConfig(SITE, cats, bias=torch.randn(model.d_model, generator=g), ablation=ablation, mode=mode, **kw)


@pytest.mark.parametrize(("mode", "ablation"), [(m, a) for m in MODES for a in ALL_ABLATIONS])
def test_kv_cached_hybrid_equals_full_recompute(pair, mode, ablation):
    """Every mode x every ablation: the cached loop's decisions (decide.py, region.py) against the reference's own."""
    base, thinking = pair
    fast = hybrid_generate(base, thinking, PROMPTS, _cfg(base, ablation, mode=mode), max_new_tokens=10)
    ref = hybrid_generate_reference(base, thinking, PROMPTS, _cfg(base, ablation, mode=mode), max_new_tokens=10)
    assert fast.tokens == ref.tokens
    assert torch.equal(fast.gated, ref.gated) and torch.equal(fast.steered, ref.steered)
    assert torch.equal(fast.category, ref.category) and torch.equal(fast.coefficient, ref.coefficient)
    assert fast.steered.any(), "the case must actually steer"
    if mode == "paper":  # the paper's rule: every gated step is steered
        assert torch.equal(fast.steered, fast.gated) and fast.fraction_steered() == fast.fraction_gated()
    else:
        assert not (fast.steered & ~fast.gated).any()


@pytest.mark.parametrize("ablation", ["none", "bias_only", "random_vector"])
def test_pick_without_a_vector_steers_with_nothing(pair, ablation):
    """A selector's -1 (the paper's argmax landing on a latent without a vector) steers with nothing, bias
    included: that row is gated and counted steered, yet decodes as the base alone (cached == reference)."""
    base, thinking = pair

    def cfg():
        return _cfg(base, ablation, selector=lambda h: torch.tensor([-1] + [1] * (len(h) - 1)))

    fast = hybrid_generate(base, thinking, PROMPTS, cfg(), max_new_tokens=8)
    ref = hybrid_generate_reference(base, thinking, PROMPTS, cfg(), max_new_tokens=8)
    assert fast.tokens == ref.tokens and torch.equal(fast.category, ref.category)
    assert torch.equal(fast.steered, ref.steered) and fast.steered[0].any() and fast.steered[1:].any()
    alone = hybrid_generate(base, base, PROMPTS[:1], cfg(), max_new_tokens=8)  # never gated: the base's greedy run
    assert fast.tokens[0] == alone.tokens[0] and set(fast.category[0][fast.steered[0]].tolist()) == {-2}
    use = fast.category_use()
    assert use["no_vector"] == int(fast.steered[0, : fast.lengths[0]].sum())
    if ablation == "bias_only":  # no category is used: one count, the bias
        assert set(use) == {"bias", "no_vector"} and use["bias"] + use["no_vector"] == fast.n_steered()
    else:
        assert set(use) == {*fast.names, "no_vector"} and sum(use.values()) == fast.n_steered()


def test_paper_sweep_and_separate_read_site_equal_reference(pair):
    """The default 10-point sweep, and the category read at another layer than the one steered."""
    base, thinking = pair
    cfg = lambda: _cfg(base, coefficients=HybridConfig.coefficients, read_site="blocks.0.hook_resid_post")  # noqa: E731
    assert cfg().coefficients == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0) and cfg().site == SITE
    fast = hybrid_generate(base, thinking, PROMPTS, cfg(), max_new_tokens=8)
    ref = hybrid_generate_reference(base, thinking, PROMPTS, cfg(), max_new_tokens=8)
    assert fast.tokens == ref.tokens and torch.equal(fast.category, ref.category) and fast.steered.any()
    seen = {}

    def selector(h):
        seen.setdefault("h", h)
        return torch.zeros(len(h), dtype=torch.long)

    hybrid_generate(base, thinking, PROMPTS[:1], _cfg(base, selector=selector, read_site="blocks.0.hook_resid_post",
                                                      gate="kl", kl_threshold=0.0), max_new_tokens=1)
    from lens.capture_memory import capture

    read = "blocks.0.hook_resid_post"
    want = capture(thinking, PROMPTS[:1], read, "last", progress=False)[read]
    torch.testing.assert_close(seen["h"].float().cpu(), want.float())


def test_choose_follows_the_modes_and_ablations():
    think = torch.log_softmax(torch.tensor([[0.0, 5.0, 1.0, 1.0], [3.0, 0.0, 2.0, 2.0]]), -1)
    unsteered, cands = torch.tensor([1, 0]), [torch.tensor([2, 2]), torch.tensor([3, 3])]
    gated = torch.tensor([True, True])
    cfg = lambda mode, ab="none": _cfg(tiny_model("llama", n_layers=2), ab, mode=mode)  # noqa: E731
    g = Draws.at(0, [0, 1], 0)
    tok, pick = choose(cfg("paper"), think, unsteered, cands, gated, g)
    assert tok.tolist() == [2, 2] and pick.tolist() == [0, 0]  # steered only; tie (rows 2 = 3) -> first coefficient
    tok, pick = choose(cfg("unsteered_allowed"), think, unsteered, cands, gated, g)
    assert tok.tolist() == [1, 0] and pick.tolist() == [-1, -1]  # the unsteered token wins where it is best
    tok, pick = choose(cfg("paper", "no_guardrail"), think, unsteered, cands, gated, g)
    assert pick.tolist() == [1, 1]  # no_guardrail_coefficient 0.5 is the sweep's (0.25, 0.5, 1.0) second
    with pytest.raises(LensError, match="not in the coefficient sweep"):
        cfg("paper", "no_guardrail").__class__(SITE, {"a": torch.ones(4)}, ablation="no_guardrail",
                                               coefficients=(0.1, 0.2))
    tok, pick = choose(cfg("unsteered_allowed", "no_guardrail"), think, unsteered, cands, gated, g)
    assert pick.tolist() == [1, 1]
    picks = {tuple(choose(cfg("paper", "random_guardrail"), think, unsteered, cands, gated,
                          Draws.at(0, [0, 1], step))[1].tolist()) for step in range(40)}
    assert all(p in (0, 1) for row in picks for p in row) and len(picks) > 1
    tok, pick = choose(cfg("paper"), think, unsteered, cands, torch.tensor([False, True]), g)
    assert tok[0] == 1 and pick[0] == -1  # ungated rows keep the base's token


def test_random_vector_is_fixed_per_category_with_equal_norm_and_bias_kept():
    model = tiny_model("llama", n_layers=2)
    cfg = _cfg(model, "random_vector")
    resid = torch.randn(6, model.d_model)
    idx, vec, _ = select_vectors(cfg, resid, Draws.at(0, range(6), 0))
    idx2, vec2, _ = select_vectors(_cfg(model, "random_vector"), resid, Draws.at(9, range(6), 5))
    assert torch.equal(idx, idx2) and torch.equal(vec, vec2)  # fixed by the config's seed, not drawn per step
    torch.testing.assert_close(vec - cfg.bias, cfg.random_matrix[idx])
    torch.testing.assert_close(cfg.random_matrix.norm(dim=-1), cfg.matrix.norm(dim=-1))
    cos = torch.nn.functional.cosine_similarity(cfg.random_matrix, cfg.matrix, dim=-1)
    assert cos.abs().max() < 0.5
    _, vb, _ = select_vectors(_cfg(model, "bias_only"), resid, Draws.at(0, range(6), 0))
    torch.testing.assert_close(vb, cfg.bias.expand_as(vb))


def _stub(ids: dict[str, list[int]]):
    return SimpleNamespace(tokenizer=SimpleNamespace(encode=lambda text, add_special_tokens=False: ids[text]))


def test_region_suppresses_eos_then_forces_the_answer_prompt():
    cfg = _cfg(tiny_model("llama", n_layers=2), think_close="</think>", answer_prompt="ANS")
    reg = Region(cfg, _stub({"ANS": [70, 71]}), _stub({"</think>": [99]}), n=2, eos=2)
    done = torch.zeros(2, dtype=torch.bool)
    assert reg.active and reg.allowed(torch.tensor([5, 99])).tolist() == [True, False]
    tok, feed = reg.apply(0, torch.tensor([2, 8]), torch.tensor([11, 12]), torch.tensor([5, 99]), done)
    assert tok.tolist() == [11, 70] and feed.tolist() == [-1, 99]  # EOS -> thinking token; close -> answer prompt
    assert reg.allowed(torch.tensor([5, 5])).tolist() == [True, False]  # giving the answer prompt: no steering
    tok, feed = reg.apply(1, torch.tensor([3, 8]), torch.tensor([11, 12]), torch.tensor([5, 5]), done)
    assert tok.tolist() == [3, 71] and reg.inside.tolist() == [True, False] and reg.closed_at == [-1, 0]
    tok, _ = reg.apply(2, torch.tensor([3, 2]), torch.tensor([11, 12]), torch.tensor([5, 5]), done)
    assert tok.tolist() == [3, 2]  # the answer phase: EOS allowed
    off = Region(_cfg(tiny_model("llama", n_layers=2), mode="unsteered_allowed"), _stub({}), _stub({}), 2, 2)
    assert not off.active and Region(cfg, _stub({"ANS": [1]}), _stub({"</think>": []}), 2, 2).active is False


def test_close_marker_of_several_pieces_is_matched_as_hybrid_eval_does():
    """hybrid_eval.py's BPE-suffix detection, on its own examples (Qwen ids: '</' 522, ' </' 690, '.</' 3918,
    'think' 26865, '>' 29): any opener, then the other pieces; a fresh opener restarts; anything else drops it."""
    from lens.hybrid.region import CloseMarker, close_marker
    from lens.tiny import bpe_tokenizer

    m = CloseMarker(None, frozenset({522, 690, 3918}), (26865, 29))

    def run(ids):
        state, seen = 0, []
        for t in ids:
            state, what = m.step(state, t)
            seen.append(what)
        return seen

    for opener in (522, 690, 3918):
        assert run([opener, 26865, 29]) == ["partial", "partial", "close"]
    assert run([522, 522, 26865, 29]) == ["partial"] * 3 + ["close"]  # back-to-back openers
    assert run([522, 26865, 690, 26865, 29]) == ["partial"] * 4 + ["close"]  # a new opener restarts
    assert run([522, 7, 26865, 29]) == ["partial", "", "", ""]  # dropped: the suffix alone is not the marker
    assert run([26865, 29, 11]) == ["", "", ""] and CloseMarker(5).step(0, 5) == (0, "close")
    tok = bpe_tokenizer("qwen2.5")  # a base tokenizer that writes </think> as text
    pieces = tok.encode("</think>", add_special_tokens=False)
    got = close_marker(SimpleNamespace(tokenizer=tok, extra={}), "</think>")
    assert got.single is None and got.suffix == tuple(pieces[1:]) and pieces[0] in got.openers
    head = tok.decode(pieces[:1])
    assert all(tok.decode([i]).endswith(head) for i in got.openers)
    reg = Region(_cfg(tiny_model("llama", n_layers=2), think_close="</think>", answer_prompt="ANS"),
                 _stub({"ANS": [70, 71]}), SimpleNamespace(tokenizer=tok, extra={}), n=1, eos=2)
    done, fed = torch.zeros(1, dtype=torch.bool), []
    for k, piece in enumerate(pieces):  # spelling the marker: steering allowed, the thinking model fed its own
        assert reg.allowed(torch.tensor([piece])).tolist() == [True]
        out, feed = reg.apply(k, torch.tensor([2]), torch.tensor([11]), torch.tensor([piece]), done)
        fed.append(int(feed[0]))
    assert fed == pieces and reg.closed_at == [len(pieces) - 1] and out.tolist() == [70]


def _always_gated(model, **kw):
    """A config factory with two random categories and a gate that always fires, the organism's answer marker."""
    g = torch.Generator().manual_seed(0)
    cats = {f"c{i}": torch.randn(model.d_model, generator=g) for i in range(2)}
    return lambda: HybridConfig(SITE, cats, coefficients=(0.5, 1.0), gate="kl", kl_threshold=-1.0,
                                answer_prompt="</think>A:", **kw)


def test_paper_mode_on_the_organism_equals_reference_with_its_reasoning_phase():
    """The organism's thinking model closes with its one-token `</think>`: steering stops there, the base
    is given the organism's answer marker, and the KV-cached loop equals the full-recompute port. (The
    thinking model on both sides with a gate that always fires, so every step of the trace is steered.)"""
    from lens.models import load_model
    from lens.studies import organism_inputs as O

    thinking = load_model("organism:thinking")
    prompts, answers = O.heldout(3)
    cfg = _always_gated(thinking)

    fast = hybrid_generate(thinking, thinking, prompts, cfg(), max_new_tokens=60)
    ref = hybrid_generate_reference(thinking, thinking, prompts, cfg(), max_new_tokens=60)
    assert fast.think_region and fast.tokens == ref.tokens and torch.equal(fast.steered, ref.steered)
    close = thinking.tokenizer.encode("</think>", add_special_tokens=False)[0]
    for r, toks in enumerate(fast.tokens):
        at = toks.index(close)  # the step the thinking model closed: not steered, nor anything after it
        assert fast.steered[r, :at].all() and not fast.steered[r, at:].any()
        assert thinking.tokenizer.decode(toks[at:]).startswith(f"</think>A:{answers[r]}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kv_access", [True, False])
def test_sequential_sweep_fallback_equals_reference(pair, monkeypatch, mode, kv_access):
    """Caches whose layers cannot be copied take the one-coefficient-at-a-time sweep on the base's own cache
    (kept variants written back, or re-run when the cache hides its tensors too); same tokens."""
    import lens.hybrid.generate as G

    base, thinking = pair
    monkeypatch.setattr(G, "plain_layers", lambda cache: False)
    if not kv_access:
        monkeypatch.setattr(G, "_last_kv", lambda cache: None)
    fast = hybrid_generate(base, thinking, PROMPTS, _cfg(base, mode=mode), max_new_tokens=10)
    ref = hybrid_generate_reference(base, thinking, PROMPTS, _cfg(base, mode=mode), max_new_tokens=10)
    assert fast.tokens == ref.tokens and fast.steered.any() and torch.equal(fast.coefficient, ref.coefficient)


@pytest.mark.parametrize(("mode", "positions"), [("paper", "newest"), ("unsteered_allowed", "newest"),
                                                 ("paper", "all")])
def test_candidate_batch_changes_calls_not_tokens(pair, mode, positions):
    """Every (gated row, coefficient) candidate of a step runs in one base forward when candidate_batch allows
    (else in chunks): the tokens, choices and coefficients are those of one candidate per forward, and a step
    whose gate fires costs one more base forward instead of one per coefficient."""
    base, thinking = pair
    runs = {}
    for size in (1, 4, 64):
        calls: list[int] = []
        h = base.hf.register_forward_pre_hook(lambda m, a, kw, calls=calls: calls.append(kw["input_ids"].shape[0]),
                                              with_kwargs=True)
        try:
            cfg = _cfg(base, mode=mode, steer_positions=positions, candidate_batch=size)
            runs[size] = hybrid_generate(base, thinking, PROMPTS, cfg, max_new_tokens=10), calls
        finally:
            h.remove()
    (one, c1), (four, c4), (all_, c64) = runs[1], runs[4], runs[64]
    for other in (four, all_):
        assert other.tokens == one.tokens and torch.equal(other.steered, one.steered)
        assert torch.equal(other.coefficient, one.coefficient) and torch.equal(other.category, one.category)
    per_step = [int(g) for g in one.gated.sum(0) if g]  # gated rows at each step whose gate fired
    n_cand = 3 * sum(per_step)  # three coefficients in _cfg
    assert per_step and n_cand > len(per_step)
    steps = len(c1) - n_cand  # one unsteered base forward per step, besides one call per candidate at size 1
    assert set(c1) == {len(PROMPTS), 1}
    assert len(c64) == steps + len(per_step) and sorted(c64).count(len(PROMPTS)) >= steps
    assert len(c4) == steps + sum(-(-3 * g // 4) for g in per_step)


def test_padded_batch_equals_rows_alone(pair):
    base, thinking = pair
    together = hybrid_generate(base, thinking, PROMPTS, _cfg(base), max_new_tokens=8)
    for i, p in enumerate(PROMPTS):
        alone = hybrid_generate(base, thinking, [p], _cfg(base), max_new_tokens=8)
        assert alone.tokens[0] == together.tokens[i]


def test_draws_are_per_row_and_step_never_per_batch():
    """Each row draws from its own generator, seeded by (seed, row, step, kind): the same draw in any batch."""
    d = Draws.at(5, [3, 0, 7], 2)
    for kind, draw in (("random_category", lambda x: x.ints("random_category", 1000)),
                       ("random_guardrail", lambda x: x.ints("random_guardrail", 1000)),
                       ("random_vector_per_step", lambda x: x.normal("random_vector_per_step", 8))):
        got = draw(d)
        for i, row in enumerate((3, 0, 7)):
            assert torch.equal(draw(Draws.at(5, [row], 2))[0], got[i]), kind
    assert len({draw_seed(5, r, s, k) for r in range(4) for s in range(4) for k in ("random_category",
                                                                                   "random_guardrail")}) == 32
    assert Draws.at(5, [], 0).normal("random_vector_per_step", 8).shape == (0, 8)
    assert not torch.equal(d.ints("random_category", 1000), Draws.at(5, [3, 0, 7], 3).ints("random_category", 1000))


@pytest.mark.parametrize("ablation", ["random_category", "random_guardrail", "random_vector_per_step"])
def test_random_ablations_give_each_prompt_the_same_run_in_any_batch(pair, ablation):
    """A prompt's random draws follow its index (``rows``), not its batch: the prompts split over two calls
    (as two processes or another batch size would) run as in one call, and the reference draws the same."""
    base, thinking = pair
    together = hybrid_generate(base, thinking, PROMPTS, _cfg(base, ablation), max_new_tokens=10)
    first = hybrid_generate(base, thinking, PROMPTS[:1], _cfg(base, ablation), max_new_tokens=10)
    rest = hybrid_generate(base, thinking, PROMPTS[1:], _cfg(base, ablation), max_new_tokens=10, rows=[1, 2])
    assert together.steered.any()
    assert first.tokens + rest.tokens == together.tokens
    for part, at in ((first, slice(0, 1)), (rest, slice(1, 3))):
        steps = part.category.shape[1]
        assert torch.equal(part.category, together.category[at, :steps])
        assert torch.equal(part.coefficient, together.coefficient[at, :steps])
    ref = hybrid_generate_reference(base, thinking, PROMPTS[1:], _cfg(base, ablation), max_new_tokens=10, rows=[1, 2])
    assert ref.tokens == rest.tokens and torch.equal(ref.category, rest.category)
    with pytest.raises(LensError, match="2 row indices for 3 prompts"):
        hybrid_generate(base, thinking, PROMPTS, _cfg(base, ablation), max_new_tokens=2, rows=[0, 1])


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
    with pytest.raises(LensError, match="unknown mode"):
        HybridConfig(SITE, {"a": torch.ones(4)}, mode="nope")


def test_taxonomy_selector_on_the_organism():
    """The taxonomy SAE's argmax latent picks categories; the study runs with it end to end."""
    from lens.hybrid import selectors
    from lens.hybrid.study import category_vectors
    from lens.models import load_model
    from lens.studies import hybrid_organism as H
    from lens.studies import organism_inputs as O

    assert (H.taxonomy_selector, H.TaxonomySelector, H.raw_latents) == (
        selectors.taxonomy_selector, selectors.TaxonomySelector, selectors.raw_latents)  # still importable there
    base, thinking = load_model("organism:base"), load_model("organism:thinking")
    site = "blocks.1.hook_resid_post"
    traces = O.labelled_traces(thinking, n=24)
    step_names, select, info = selectors.taxonomy_selector(thinking, traces, site)
    _, cats, _ = category_vectors(base, traces, site, ["Q:T:12+3=?\n"], ["Q:D:12+3=?\n"], step_labels=step_names)
    assert set(cats) == set(info["taxonomy"]["categories"]) and len(cats) >= 2
    assert all(v.shape == (base.d_model,) for v in cats.values())
    assert sum(info["taxonomy"]["categories"].values()) == info["taxonomy"]["n_sentences"]
    resid = torch.randn(7, base.d_model)
    idx, live = select(resid), select.variant(live_only=True)(resid)
    assert idx.shape == live.shape == (7,) and int(idx.min()) >= -1 and int(idx.max()) < len(cats)
    assert int(live.min()) >= 0 and int(live.max()) < len(cats)
    assert ((idx == live) | (idx == -1)).all()  # the paper's argmax over all latents differs only on dead ones
    assert info["taxonomy"]["argmax"] == "all latents" and len(info["taxonomy"]["dead_latents"]) == 5 - len(cats)
    res = H.run(base, thinking, n=4, ablations=("none",), max_new_tokens=40, selector="taxonomy", n_categories=7)
    assert res["vectors"]["selector"] == "taxonomy" and set(res["runs"]) == {"none", "live_only", "unsteered_allowed"}
    tax = res["vectors"]["taxonomy"]
    assert tax["n_categories"] == 7 and len(tax["categories"]) + len(tax["dead_latents"]) == 7
    assert set(res["runs"]["live_only"]["category_use"]) == set(res["vectors"]["categories"])
    assert set(res["runs"]["none"]["category_use"]) - {"no_vector"} == set(res["vectors"]["categories"])
    assert all(name.split(":")[1] in ("restate", "computation", "error", "backtrack", "verification")
               for name in res["vectors"]["categories"])
    with pytest.raises(LensError, match="unknown selector"):
        H.run(base, thinking, n=4, selector="magic")
    with pytest.raises(LensError, match="the nearest selector has none"):
        H.run(base, thinking, n=4, selector="nearest", n_categories=7)


@pytest.mark.parametrize("ablation", ["none", "random_category", "random_guardrail"])
def test_all_positions_candidates_equal_full_recompute(pair, ablation):
    """steer_positions="all" (hybrid_token.py): each candidate is a full forward steered at every position; the
    KV-cached loop (base cache untouched by the sweep) equals the reference, on a padded batch, and differs from
    the newest-position nudge."""
    base, thinking = pair
    fast = hybrid_generate(base, thinking, PROMPTS, _cfg(base, ablation, 0.5, steer_positions="all"),
                           max_new_tokens=10)
    ref = hybrid_generate_reference(base, thinking, PROMPTS, _cfg(base, ablation, 0.5, steer_positions="all"),
                                    max_new_tokens=10)
    assert fast.tokens == ref.tokens
    assert torch.equal(fast.gated, ref.gated) and torch.equal(fast.steered, ref.steered)
    assert torch.equal(fast.category, ref.category) and torch.equal(fast.coefficient, ref.coefficient)
    assert fast.steered.any() and torch.equal(fast.steered, fast.gated)
    if ablation == "none":
        newest = hybrid_generate(base, thinking, PROMPTS, _cfg(base, ablation, 0.5), max_new_tokens=10)
        assert newest.tokens != fast.tokens


def test_all_positions_with_the_organisms_reasoning_phase_equals_reference():
    from lens.models import load_model
    from lens.studies import organism_inputs as O

    thinking = load_model("organism:thinking")
    prompts, _ = O.heldout(3)
    cfg = _always_gated(thinking, steer_positions="all")

    fast = hybrid_generate(thinking, thinking, prompts, cfg(), max_new_tokens=40)
    ref = hybrid_generate_reference(thinking, thinking, prompts, cfg(), max_new_tokens=40)
    assert fast.think_region and fast.tokens == ref.tokens and torch.equal(fast.steered, ref.steered)


def test_steer_positions_are_checked(pair):
    base, _ = pair
    with pytest.raises(LensError, match="unknown steer_positions"):
        _cfg(base, steer_positions="every")
    with pytest.raises(LensError, match="mode paper only"):
        _cfg(base, mode="unsteered_allowed", steer_positions="all")


OTHER_SITES = {"c1": "blocks.0.hook_resid_post", "c2": "blocks.2.hook_resid_post"}


def _sited_cfg(model, ablation="none", mode="paper", **kw):
    """_cfg's categories (scale 8), c1 and c2 steered at layers 0 and 2 (each with its own bias), c0 at SITE."""
    one = _cfg(model, ablation, 8.0, mode=mode, **kw)
    g = torch.Generator().manual_seed(5)
    biases = {s: torch.randn(model.d_model, generator=g) for s in OTHER_SITES.values()}
    return HybridConfig(SITE, one.categories, bias=one.bias, ablation=ablation, mode=mode,
                        coefficients=one.coefficients, category_sites=OTHER_SITES, site_biases=biases, **kw)


@pytest.mark.parametrize(("mode", "ablation", "positions"), [
    ("paper", "none", "newest"), ("paper", "bias_only", "newest"), ("paper", "random_vector", "newest"),
    ("paper", "random_category", "newest"), ("unsteered_allowed", "none", "newest"), ("paper", "none", "all")])
def test_per_category_steer_sites_equal_full_recompute(pair, mode, ablation, positions):
    """Each category steered at its own layer with that layer's bias (the paper's best layer per category): the
    KV-cached loop equals the reference on a padded batch, and the sites matter."""
    base, thinking = pair
    fast = hybrid_generate(base, thinking, PROMPTS, _sited_cfg(base, ablation, mode, steer_positions=positions),
                           max_new_tokens=10)
    ref = hybrid_generate_reference(base, thinking, PROMPTS, _sited_cfg(base, ablation, mode,
                                                                        steer_positions=positions), max_new_tokens=10)
    assert fast.tokens == ref.tokens and fast.steered.any()
    assert torch.equal(fast.steered, ref.steered) and torch.equal(fast.coefficient, ref.coefficient)
    assert torch.equal(fast.category, ref.category)
    if ablation == "none":
        used = set(fast.category[fast.steered].tolist())
        assert used & {1, 2}, "the case must steer a category at another site"
        same_site = hybrid_generate(base, thinking, PROMPTS, _cfg(base, ablation, 8.0, mode=mode,
                                                                  steer_positions=positions), max_new_tokens=10)
        assert same_site.tokens != fast.tokens or not torch.equal(same_site.coefficient, fast.coefficient)


def test_per_category_sites_are_checked(pair):
    base, _ = pair
    one = _cfg(base)
    with pytest.raises(LensError, match="does not have"):
        HybridConfig(SITE, one.categories, bias=one.bias, category_sites={"c9": SITE})
    with pytest.raises(LensError, match="site_biases"):
        HybridConfig(SITE, one.categories, bias=one.bias, category_sites=OTHER_SITES)
    cfg = HybridConfig(SITE, one.categories, category_sites=OTHER_SITES)  # no bias: no site biases needed
    assert cfg.sites == [SITE, *sorted(OTHER_SITES.values())] and cfg.site_index.tolist() == [0, 1, 2]
