"""Decoding: batched generation equals row-by-row, seeded sampling, CoT-decoding equals its sequential reference."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from lens.decoding import cot_decode, cot_decode_reference, generate  # noqa: E402
from lens.decoding.cot import aggregate_branches, confidence_by_reasoning  # noqa: E402
from lens.decoding.spans import token_char_spans, tokens_in_span  # noqa: E402
from lens.errors import LensError  # noqa: E402
from lens.evaluation.answers import Extracted  # noqa: E402
from lens.tiny import tiny_model  # noqa: E402

PROMPTS = ["Q: 12+7=?\nA:", "Q: 3+4=?\nA:", "x", "Q: 100+250+3=?\nA:"]


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", n_layers=2, d_model=64, seed=0)


@pytest.fixture(scope="module")
def gpt2():
    return tiny_model("gpt2", n_layers=2, d_model=64, seed=1)


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_greedy_padded_batch_equals_rows_alone(which, request):
    model = request.getfixturevalue(which)
    batch = generate(model, PROMPTS, 12, batch_size=4, return_top2=True)
    for i, p in enumerate(PROMPTS):
        alone = generate(model, [p], 12, batch_size=1, return_top2=True).samples[0]
        got = batch.samples[i]
        assert got.token_ids == alone.token_ids
        assert got.text == alone.text
        assert torch.allclose(got.top2, alone.top2, atol=1e-5)
    s = batch.samples[0]
    assert s.n_new_tokens == len(s.token_ids) == 12 and s.finish_reason == "length"
    assert s.top2.shape == (12, 2) and bool((s.top2[:, 0] >= s.top2[:, 1]).all())
    # greedy: the emitted token is the argmax, so its probability is p(top-1)
    assert bool((s.margins >= 0).all())


def test_seeded_sampling_reproducible_and_batch_independent(llama):
    a = generate(llama, PROMPTS, 10, greedy=False, n=3, seed=7, batch_size=5)
    b = generate(llama, PROMPTS, 10, greedy=False, n=3, seed=7, batch_size=2)
    c = generate(llama, list(reversed(PROMPTS)), 10, greedy=False, n=3, seed=7, batch_size=12)
    d = generate(llama, PROMPTS, 10, greedy=False, n=3, seed=8, batch_size=5)
    ids = [s.token_ids for s in a.samples]
    assert ids == [s.token_ids for s in b.samples]
    # prompt order changes prompt indices, hence seeds: compare prompt 0 of a with prompt 3 of c only by shape
    assert len(c.samples) == 12
    assert ids != [s.token_ids for s in d.samples]
    assert len({tuple(s.token_ids) for s in a.by_prompt()[0]}) > 1  # samples of one prompt differ
    assert a.texts()[1][0] == a.samples[3].text


def test_top_p_tiny_is_greedy(llama):
    greedy = generate(llama, PROMPTS[:2], 8)
    nucleus = generate(llama, PROMPTS[:2], 8, greedy=False, top_p=1e-6, seed=3)
    assert [s.token_ids for s in greedy.samples] == [s.token_ids for s in nucleus.samples]


def test_stop_strings_and_eos(llama):
    free = generate(llama, PROMPTS[:1], 16).samples[0]
    stop_char = free.text.replace(" ", "")[5]
    stopped = generate(llama, PROMPTS[:1], 16, stop_strings=[stop_char]).samples[0]
    assert stopped.finish_reason == "stop" and stopped.text.endswith(stop_char)
    assert free.token_ids[: stopped.n_new_tokens] == stopped.token_ids
    eos_id = free.token_ids[3]
    ended = generate(llama, PROMPTS[:1], 16, eos_token_id=eos_id).samples[0]
    assert ended.finish_reason == "eos" and ended.token_ids[-1] == eos_id and ended.n_new_tokens <= 4


def test_bad_input(llama):
    with pytest.raises(LensError):
        generate(llama, "one string", 4)
    with pytest.raises(LensError):
        generate(llama, PROMPTS, 0)
    with pytest.raises(LensError):
        cot_decode(llama, PROMPTS, k=3, max_new_tokens=1)


def test_token_char_spans_both_paths(llama):
    ids = llama.tokenizer("ab+12", add_special_tokens=False)["input_ids"]
    spans = token_char_spans(llama.tokenizer, ids)  # char tokenizer decodes with spaces: decode path
    text = llama.tokenizer.decode(ids, skip_special_tokens=True)
    assert [text[s:e] for s, e in spans] == ["a", " b", " +", " 1", " 2"] or all(
        text[s:e].strip() == ch for (s, e), ch in zip(spans, "ab+12", strict=True)
    )
    assert tokens_in_span(spans, text.index("1"), len(text)) == [3, 4]


def test_token_char_spans_offsets_path():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<think>": 1, **{c: i + 2 for i, c in enumerate("0123456789+=A:")}}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    raw.pre_tokenizer = pre_tokenizers.Split(Regex(r"<think>|[\s\S]"), behavior="isolated")
    raw.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>")
    text = "<think>1+2=3A:3"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    spans = token_char_spans(tok, ids)
    assert spans[0] == (0, 7) and [text[s:e] for s, e in spans[1:]] == list("1+2=3A:3")
    assert tokens_in_span(spans, len(text) - 1, len(text)) == [len(ids) - 1]


def _tail_extractor(text: str):
    """Test extractor: the last three characters as the 'answer' (exercises the span mapping)."""
    if len(text) < 3:
        return None
    return Extracted(text[-3:], len(text) - 3, len(text))


@pytest.mark.parametrize("extractor", [_tail_extractor, "last_number"])
def test_cot_batched_equals_sequential(llama, extractor):
    k = 4
    fast = cot_decode(llama, PROMPTS[:3], k=k, max_new_tokens=10, extractor=extractor, batch_size=8)
    slow = cot_decode_reference(llama, PROMPTS[:3], k=k, max_new_tokens=10, extractor=extractor)
    n_conf = 0
    for f, s in zip(fast, slow, strict=True):
        assert len(f.branches) == k
        assert f.answer == s.answer
        for bf, bs in zip(f.branches, s.branches, strict=True):
            assert bf.first_token == bs.first_token
            assert bf.token_ids == bs.token_ids
            assert bf.text == bs.text
            assert bf.answer == bs.answer and bf.answer_tokens == bs.answer_tokens
            assert torch.allclose(bf.margins, bs.margins, atol=1e-5)
            if bf.confidence is not None:
                n_conf += 1
                assert bf.confidence == pytest.approx(bs.confidence, abs=1e-5)
                assert bf.confidence == pytest.approx(float(bf.margins[bf.answer_tokens].mean()), abs=1e-7)
        # branches are the top-k first tokens, in order
        probs = [b.first_token_prob for b in f.branches]
        assert probs == sorted(probs, reverse=True)
        # rank 0 is plain greedy decoding
        greedy = generate(llama, [PROMPTS[f.prompt_index]], 10).samples[0]
        assert f.greedy.token_ids == greedy.token_ids
    if extractor is _tail_extractor:
        assert n_conf == 3 * k


def test_cot_gpt2_and_stop(gpt2):
    fast = cot_decode(gpt2, PROMPTS[:2], k=3, max_new_tokens=8, extractor=_tail_extractor, stop_strings=["R"])
    slow = cot_decode_reference(gpt2, PROMPTS[:2], k=3, max_new_tokens=8, extractor=_tail_extractor,
                                stop_strings=["R"])
    for f, s in zip(fast, slow, strict=True):
        for bf, bs in zip(f.branches, s.branches, strict=True):
            assert bf.token_ids == bs.token_ids and bf.finish_reason == bs.finish_reason


def test_aggregate_and_reasoning_summary(llama):
    res = cot_decode(llama, PROMPTS[:2], k=3, max_new_tokens=6, extractor=_tail_extractor,
                     is_reasoning=lambda t: "R" in t)
    for r in res:
        best = max((b for b in r.branches if b.confidence is not None), key=lambda b: b.confidence)
        assert r.answer == best.answer
    b0, b1, b2 = res[0].branches
    b0.answer, b1.answer, b2.answer = "x", "y", "y"
    b0.confidence, b1.confidence, b2.confidence = 0.5, 0.3, 0.3
    assert aggregate_branches([b0, b1, b2], "max")[0] == "x"
    assert aggregate_branches([b0, b1, b2], "sum") == ("y", {"x": 0.5, "y": 0.6})
    summary = confidence_by_reasoning(res)
    assert summary["reasoning"]["n"] + summary["non_reasoning"]["n"] == 6


def test_generated_sequences_capture_exactly_what_the_model_read(llama):
    from lens.capture import capture

    gen = generate(llama, PROMPTS, max_new_tokens=6, eos_token_id=-1)
    seqs = gen.sequences()
    last = f"blocks.{llama.n_layers - 1}.hook_resid_post"
    acts = capture(llama, seqs, [last], "all", batch_size=3, progress=False)
    for i, (seq, s) in enumerate(zip(seqs, gen.samples, strict=True)):
        rows = acts.example == i
        assert acts.token_id[rows].tolist() == seq["input_ids"] == gen.prompt_ids[i] + s.token_ids
        # greedy: the unembedded residual at each position predicts the token generated after it
        with torch.no_grad():
            logits = llama.hf.lm_head(llama.hf.model.norm(acts[last][rows]))
        p = seq["prompt_length"]
        assert logits[p - 1 : -1].argmax(-1).tolist() == s.token_ids


def test_cot_decoding_ignores_the_models_generation_config():
    """CoT-decoding calls HF generate: a model config full of decoding choices changes no branch; one
    that sets a cache implementation (HF refuses it next to CoT's own cache) is refused with the fix."""
    from lens.tiny import tiny_model

    m = tiny_model("llama", n_layers=2, d_model=64, seed=3)
    want = cot_decode(m, PROMPTS[:2], k=3, max_new_tokens=8, extractor=_tail_extractor)
    g = m.hf.generation_config
    g.min_length, g.max_length, g.repetition_penalty, g.do_sample, g.top_k = 30, 4096, 1.7, True, 2
    g.num_beams, g.suppress_tokens, g.return_dict_in_generate = 2, [want[0].branches[0].first_token], True
    got = cot_decode(m, PROMPTS[:2], k=3, max_new_tokens=8, extractor=_tail_extractor)
    for a, b in zip(got, want, strict=True):
        assert [x.token_ids for x in a.branches] == [x.token_ids for x in b.branches]
        assert [x.first_token_prob for x in a.branches] == pytest.approx([x.first_token_prob for x in b.branches])
    g.cache_implementation = "hybrid"  # Gemma 2/3 hub configs: HF drops it, so CoT runs
    assert [b.token_ids for b in cot_decode(m, PROMPTS[:1], k=3, max_new_tokens=8)[0].branches] == [
        b.token_ids for b in want[0].branches]
    g.cache_implementation = "static"
    with pytest.raises(LensError, match="cache_implementation = None"):
        cot_decode(m, PROMPTS[:2], k=3, max_new_tokens=8, extractor=_tail_extractor)
