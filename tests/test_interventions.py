"""The intervention engine: exact positions under the KV cache, padding, gates, specs on disk."""

from contextlib import contextmanager

import pytest
import torch

from lens import LensError, load_model
from lens.interventions import Intervention, Where, steer
from lens.interventions.spec import load_interventions, save_interventions
from tests.helpers import generate_steered

PROMPTS = ["Q:12+3=?", "hello there my friend", "ab"]
NEW = 6


def _generate(model, prompts, ivs):
    return generate_steered(model, prompts, ivs, NEW)


def _recompute(model, seqs, mask, ivs, prompt_len, padded_width):
    """Full forward over prompt + generated tokens (no cache), same interventions, same positions."""
    with torch.no_grad(), steer(model, ivs, prompt_lengths=prompt_len) as h:
        logits = model.hf(input_ids=seqs, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                          use_cache=False).logits
    # logits at slot padded_width-1+k predict generated token k
    return logits[:, padded_width - 1 : padded_width - 1 + NEW], h


def _vec(model, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(model.d_model, generator=g) * 2.0


def _cases(model):
    return {
        "first_step": [Intervention("blocks.1.hook_resid_post", _vec(model, 1), where=Where.first_step())],
        "generated_window": [Intervention("blocks.2.hook_resid_pre", _vec(model, 2), where=Where.generated(1, 4))],
        "prompt_last_and_all": [
            Intervention("blocks.0.hook_resid_post", _vec(model, 3), where=Where.prompt_last(3), scale=0.7),
            Intervention("blocks.3.hook_resid_post", _vec(model, 4), op="project_out"),
        ],
        "absolute_clamp_set": [
            Intervention("blocks.1.hook_resid_post", _vec(model, 5), op="clamp", scale=1.5, where=Where.absolute(2, 9)),
            Intervention("blocks.2.hook_resid_post", _vec(model, 6), op="set", scale=0.3, where=Where.absolute(4)),
        ],
    }


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("case", ["first_step", "generated_window", "prompt_last_and_all", "absolute_clamp_set"])
def test_kv_cache_steering_equals_full_recompute_padded(tiny, family, case):
    model = tiny(family)
    ivs = _cases(model)[case]
    enc, out, h = _generate(model, PROMPTS, ivs)
    width = enc["input_ids"].shape[1]
    mask = torch.cat([enc["attention_mask"], torch.ones(len(PROMPTS), NEW, dtype=torch.long)], dim=1)
    plen = enc["attention_mask"].sum(-1)
    ref_logits, h2 = _recompute(model, out.sequences, mask, ivs, plen, width)
    cached = torch.stack(out.logits, dim=1)
    torch.testing.assert_close(cached, ref_logits, atol=1e-4, rtol=1e-4)
    assert torch.equal(ref_logits.argmax(-1), out.sequences[:, width:])
    # the same absolute positions were touched; the recompute also reads the last generated token,
    # which generate never feeds back (position P + NEW - 1), so that one is left out
    for row in range(len(PROMPTS)):
        last = int(plen[row]) + NEW - 1
        assert h.log.positions(row) == [p for p in h2.log.positions(row) if p < last]
        assert h.log.positions(row), "the case must steer something"
    # and the unsteered generation differs (the test would catch an engine that does nothing)
    _, plain, _ = _generate(model, PROMPTS, [])
    assert not torch.allclose(torch.stack(plain.logits, 1), cached)


def test_padded_batch_equals_unpadded_rows(tiny):
    model = tiny("qwen2")
    ivs = _cases(model)["generated_window"] + _cases(model)["first_step"]
    _, batched, _ = _generate(model, PROMPTS, ivs)
    for i, p in enumerate(PROMPTS):
        _, alone, _ = _generate(model, [p], ivs)
        torch.testing.assert_close(torch.stack(alone.logits, 1)[0], torch.stack(batched.logits, 1)[i],
                                   atol=1e-4, rtol=1e-4)


def test_first_step_touches_exactly_one_position_per_example(tiny):
    model = tiny("llama")
    enc, _, h = _generate(model, PROMPTS, _cases(model)["first_step"])
    plen = enc["attention_mask"].sum(-1).tolist()
    assert sorted((r["row"], r["position"], r["step"]) for r in h.log.records) == [
        (i, plen[i] - 1, 0) for i in range(len(PROMPTS))
    ]


def test_gate_that_never_fires_changes_nothing(tiny):
    model = tiny("llama")
    gated = [Intervention("blocks.1.hook_resid_post", _vec(model, 7) * 50, where=Where.on_gate("hybrid"))]
    _, steered, h = _generate(model, PROMPTS, gated)
    _, plain, _ = _generate(model, PROMPTS, [])
    assert torch.equal(steered.sequences, plain.sequences)
    assert torch.equal(torch.stack(steered.logits), torch.stack(plain.logits))
    assert len(h.log) == 0


def test_spec_round_trip_and_checks(tiny, tmp_path):
    model = tiny("llama")
    ivs = _cases(model)["prompt_last_and_all"]
    save_interventions(tmp_path / "spec", ivs, model)
    back = load_interventions(tmp_path / "spec", model)
    assert [str(i) for i in back] == [str(i) for i in ivs]
    assert "last 3 prompt token(s)" in str(back[0])
    assert all(torch.equal(a.vector, b.vector) for a, b in zip(ivs, back, strict=True))
    with pytest.raises(LensError, match="width 8 does not match"):
        with steer(model, Intervention("blocks.1.hook_resid_post", torch.ones(8))):
            pass
    with pytest.raises(LensError, match="NaN"):
        Intervention("blocks.1.hook_resid_post", torch.tensor([float("nan")] * 64))
    with pytest.raises(LensError, match="unknown op"):
        Intervention("blocks.1.hook_resid_post", torch.ones(64), op="multiply")
    (tmp_path / "spec" / "spec.json").write_text("{")
    with pytest.raises(LensError, match="corrupt"):
        load_interventions(tmp_path / "spec")


def test_steering_is_differentiable_for_vector_optimisation(tiny):
    model = tiny("llama")
    vec = torch.zeros(model.d_model, requires_grad=True)
    iv = Intervention("blocks.1.hook_resid_post", vec, where=Where.absolute(1, 2))
    ids = torch.tensor([[1, 5, 6, 7]])
    with steer(model, iv):
        loss = model.hf(ids).logits[0, -1].logsumexp(-1)
    loss.backward()
    assert vec.grad is not None and vec.grad.abs().sum() > 0


def test_each_prompt_pass_restarts_positions_and_steps(tiny):
    """Two generate calls in one block (as length-sorted batching makes): each gets its own P and steps."""
    model = tiny("llama")
    ivs = _cases(model)["first_step"]
    tok = model.tokenizer
    tok.padding_side = "left"
    with torch.no_grad(), steer(model, ivs) as h:
        for p in ["Q:12+3=?", "ab"]:
            enc = tok([p], return_tensors="pt")
            model.hf.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert [(r["sequence"], r["step"], r["position"]) for r in h.log.records] == [(0, 0, 8), (1, 0, 2)]


def test_organism_eval_steering_equals_a_hand_written_first_step_hook():
    """`lens organism eval` steers through the engine (Where.first_step); it equals a hand-written hook that adds
    the vector to decoder layer 1's output at the last position of the prompt pass only (left padding)."""
    from lens.organism.evaluate import first_step_steering
    from lens.organism.sampling import generate

    model = load_model("organism:base")
    tok = model.tokenizer
    prompts = ["Q:63+11+48+57+34=?\n", "Q:12+30=?\n", "Q:5+7+9=?\n"]
    vec = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0)) * 20
    calls = []

    def hand(_module, _inputs, output):
        calls.append(1)
        if len(calls) > 1:  # the prompt pass only
            return output
        hidden = (output[0] if isinstance(output, tuple) else output).clone()
        hidden[:, -1] += vec
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    @contextmanager
    def reference():
        calls.clear()
        handle = model.hf.model.layers[1].register_forward_hook(hand)
        try:
            yield
        finally:
            handle.remove()

    plain = generate(model.hf, tok, prompts, max_new_tokens=12)
    a = generate(model.hf, tok, prompts, max_new_tokens=12, hook=reference)
    b = generate(model.hf, tok, prompts, max_new_tokens=12, hook=first_step_steering(model, 1, vec))
    assert a == b
    assert a != plain  # the vector changes what is generated, so the comparison can fail
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True)
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id, output_logits=True,
              return_dict_in_generate=True)
    with torch.no_grad(), reference():
        la = torch.stack(model.hf.generate(**enc, **kw).logits)
    with torch.no_grad(), first_step_steering(model, 1, vec)():
        lb = torch.stack(model.hf.generate(**enc, **kw).logits)
    torch.testing.assert_close(la, lb, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("positions", [(2, 9), tuple(range(0, 24, 2))])
def test_absolute_mask_few_and_many_positions(positions):
    """Few positions are compared as scalars, many through isin: the same mask either way."""
    p = torch.arange(30).reshape(2, 15)
    got = Where.absolute(*positions).mask(p, torch.tensor([5, 5]))
    assert torch.equal(got, torch.isin(p, torch.tensor(positions)))


def test_intervention_takes_site_vector_scale_where_and_refuses_the_old_op_position():
    iv = Intervention("blocks.1.hook_resid_post", torch.ones(64), 2.0, Where.first_step())
    assert (iv.scale, iv.where.kind, iv.op) == (2.0, Where.first_step().kind, "add")
    with pytest.raises(LensError, match="the op goes by name.*op='project_out'"):
        Intervention("blocks.1.hook_resid_post", torch.ones(64), "project_out", 2.0)
