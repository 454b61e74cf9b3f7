"""lens's decoding loop gives Hugging Face generate's tokens: per family, padded, sampled, stopped, steered."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from lens.decoding import generate  # noqa: E402
from lens.decoding.loop import decode_loop  # noqa: E402
from lens.errors import LensError  # noqa: E402
from lens.interventions import Intervention, Where, steer  # noqa: E402
from lens.tiny import tiny_model  # noqa: E402

PROMPTS = ["Q: 12+7=?\nA:", "Q: 3+4=?\nA:", "x", "Q: 100+250+3=?\nA:"]
FAMILIES = ["llama", "qwen2", "gpt2"]


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    return tiny_model(request.param, n_layers=2, d_model=64, seed=3)


def _same(a, b, top2: bool = False) -> None:
    assert [s.token_ids for s in a.samples] == [s.token_ids for s in b.samples]
    assert [s.text for s in a.samples] == [s.text for s in b.samples]
    assert [s.finish_reason for s in a.samples] == [s.finish_reason for s in b.samples]
    if top2:
        for x, y in zip(a.samples, b.samples, strict=True):
            assert torch.allclose(x.top2, y.top2, atol=1e-6)


def test_greedy_padded_batch_equals_hf_generate(model):
    kw = dict(batch_size=4, return_top2=True, eos_token_id=None)
    _same(generate(model, PROMPTS, 14, **kw), generate(model, PROMPTS, 14, backend="hf", **kw), top2=True)


def test_seeded_sampling_equals_hf_generate(model):
    kw = dict(greedy=False, n=3, seed=11, batch_size=5, temperature=0.8, top_p=0.9)
    _same(generate(model, PROMPTS, 10, **kw), generate(model, PROMPTS, 10, backend="hf", **kw))


def test_eos_and_stop_strings_equal_hf_generate(model):
    free = generate(model, PROMPTS, 16, batch_size=4, eos_token_id=None)
    eos_id = free.samples[0].token_ids[2]
    longest = max((s.text.replace(" ", "") for s in free.samples), key=len)
    assert len(longest) >= 4
    stop_char = longest[len(longest) // 2]
    for kw in (dict(eos_token_id=eos_id), dict(stop_strings=[stop_char], eos_token_id=None),
               dict(eos_token_id=[eos_id, free.samples[1].token_ids[5]], stop_strings=[stop_char])):
        lens_gen = generate(model, PROMPTS, 16, batch_size=4, **kw)
        _same(lens_gen, generate(model, PROMPTS, 16, batch_size=4, backend="hf", **kw))
    assert generate(model, PROMPTS, 16, batch_size=4, eos_token_id=eos_id).samples[0].finish_reason == "eos"


def test_every_row_ended_stops_the_loop_early(model):
    ids = torch.tensor([[5, 6, 7], [0, 8, 9]])
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    with torch.no_grad():
        first = decode_loop(model.hf, ids, mask, 20, 0, [])[:, 0]
        out = decode_loop(model.hf, ids, mask, 20, 0, first.tolist())  # each row's first token is an EOS
    assert out.shape == (2, 1) and out[:, 0].tolist() == first.tolist()


def test_steered_generation_equals_hf_generate_under_the_same_steering(model):
    vec = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0)) * 3
    ivs = [Intervention("blocks.1.hook_resid_post", vec, where=Where.generated(2, 9)),
           Intervention("blocks.0.hook_resid_post", -vec, where=Where.first_step())]
    runs = {}
    for backend in ("lens", "hf"):
        with steer(model, ivs) as h:
            runs[backend] = generate(model, PROMPTS, 12, batch_size=4, eos_token_id=None, backend=backend)
        runs[backend + "_log"] = [(r["sequence"], r["step"], r["row"], r["position"], r["name"])
                                  for r in h.log.records]
    _same(runs["lens"], runs["hf"])
    assert runs["lens_log"] == runs["hf_log"] and runs["lens_log"]
    plain = generate(model, PROMPTS, 12, batch_size=4, eos_token_id=None)
    assert [s.token_ids for s in plain.samples] != [s.token_ids for s in runs["lens"].samples]


def test_unknown_backend_is_refused():
    m = tiny_model("llama", n_layers=1, d_model=32)
    with pytest.raises(LensError, match="backend"):
        generate(m, PROMPTS, 4, backend="vllm")


def test_no_eos_means_none_on_both_backends_even_when_the_model_config_has_one():
    """eos_token_id=None: neither backend ends at the model's generation_config EOS (HF would inherit it)."""
    m = tiny_model("llama", n_layers=2, d_model=64, seed=3)
    free = generate(m, PROMPTS, 12, eos_token_id=None)
    m.hf.generation_config.eos_token_id = free.samples[0].token_ids[3]  # a token the model does emit
    for backend in ("lens", "hf"):
        got = generate(m, PROMPTS, 12, eos_token_id=None, backend=backend)
        assert [s.token_ids for s in got.samples] == [s.token_ids for s in free.samples], backend


def test_checking_every_8_steps_gives_the_same_tokens_and_positions(model):
    """The accelerator setting (check_every=8), forced on the CPU: same tokens; extra pad forwards only
    after every row ended, at the positions that follow."""
    ids = torch.tensor([[5, 6, 7], [0, 8, 9]])
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    first = decode_loop(model.hf, ids, mask, 20, 0, [])[:, 0]
    one = decode_loop(model.hf, ids, mask, 20, 0, first.tolist())
    eight = decode_loop(model.hf, ids, mask, 20, 0, first.tolist(), check_every=8)
    assert one.shape == (2, 1) and eight.shape == (2, 8)
    assert torch.equal(eight[:, :1], one) and bool((eight[:, 1:] == 0).all())


def test_the_models_generation_config_changes_no_token_on_either_backend(caplog):
    """HF fills every GenerationConfig field left None from the model's: lens pins each one that changes
    the tokens, the forward passes or the output's type, so a model config full of decoding choices
    changes no token, no top-2 probability and no stop, and makes HF log no warning."""
    from transformers.utils import logging as hf_logging

    m = tiny_model("llama", n_layers=2, d_model=64, seed=3)
    free = generate(m, PROMPTS, 12, eos_token_id=None)
    first, stop_at = free.samples[0].token_ids[0], free.samples[0].token_ids[2]
    want = generate(m, PROMPTS, 12, eos_token_id=[stop_at], return_top2=True)
    assert want.samples[0].finish_reason == "eos" and want.samples[0].n_new_tokens == 3
    sampled = dict(greedy=False, n=2, seed=1, temperature=0.8, top_p=0.9, eos_token_id=None)
    want_sampled = generate(m, PROMPTS, 8, **sampled)
    g = m.hf.generation_config
    g.min_length, g.max_length = 40, 4096  # common in hub configs
    g.repetition_penalty, g.no_repeat_ngram_size = 1.7, 2
    g.suppress_tokens, g.begin_suppress_tokens, g.renormalize_logits = [first], [first], True
    g.do_sample, g.temperature, g.top_k, g.typical_p, g.epsilon_cutoff = True, 0.3, 4, 0.5, 0.1
    g.num_beams, g.num_return_sequences, g.guidance_scale, g.penalty_alpha = 2, 3, 1.5, 0.6
    g.return_dict_in_generate, g.output_scores, g.remove_invalid_values = True, True, True
    g.is_assistant, g.token_healing, g.cache_implementation = True, True, "static"
    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            for backend in ("lens", "hf"):
                got = generate(m, PROMPTS, 12, eos_token_id=[stop_at], return_top2=True, backend=backend)
                _same(got, want, top2=True)
                _same(generate(m, PROMPTS, 8, backend=backend, **sampled), want_sampled)
    finally:
        hf_logging.disable_propagation()
    assert not [r for r in caplog.records if r.name.startswith("transformers")], caplog.text
    g.min_new_tokens, g.max_new_tokens = 5, 2  # these take precedence, so lens passes its own (HF warns)
    _same(generate(m, PROMPTS, 12, eos_token_id=[stop_at], return_top2=True, backend="hf"), want, top2=True)
    g.do_sample, g.num_beams, g.penalty_alpha = False, 1, 0.6  # contrastive search, were top_k inherited
    _same(generate(m, PROMPTS, 12, eos_token_id=[stop_at], return_top2=True, backend="hf"), want, top2=True)


def test_a_model_config_setting_that_cannot_be_pinned_is_refused_on_the_hf_backend_only():
    m = tiny_model("llama", n_layers=2, d_model=64, seed=3)
    free = generate(m, PROMPTS, 6, eos_token_id=None)
    m.hf.generation_config.bad_words_ids = [[free.samples[0].token_ids[0]]]
    with pytest.raises(LensError, match=r"bad_words_ids.*generation_config\.bad_words_ids = None"):
        generate(m, PROMPTS, 6, eos_token_id=None, backend="hf")
    got = generate(m, PROMPTS, 6, eos_token_id=None)  # lens's loop never reads it
    assert [s.token_ids for s in got.samples] == [s.token_ids for s in free.samples]
