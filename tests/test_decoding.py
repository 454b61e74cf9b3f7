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
            assert bf.answer_source == bs.answer_source and bf.fallback_token_ids == bs.fallback_token_ids
            assert torch.allclose(bf.margins, bs.margins, atol=1e-5)
            if bf.confidence is not None:
                n_conf += 1
                assert bf.confidence == pytest.approx(bs.confidence, abs=1e-5)
                m = bf.fallback_margins if bf.answer_source == "answer_prompt" else bf.margins
                assert bf.confidence == pytest.approx(float(m[bf.answer_tokens].mean()), abs=1e-7)
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
    from lens.capture_memory import capture

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


def test_cot_answer_prompt_fallback(llama):
    """A branch without an answer gets one from "\\nSo the answer is" + a greedy continuation, as the paper does:
    the continuation is exactly greedy decoding of prompt + branch + answer prompt, up to a newline."""
    from lens.decoding.cot import ANSWER_PROMPT

    prompts = PROMPTS[:2]
    plain = cot_decode(llama, prompts, k=3, max_new_tokens=6, extractor=lambda t: None, answer_prompt=None)
    branch_texts = {b.text for r in plain for b in r.branches}
    assert all(b.answer is None and b.answer_source == "none" and b.fallback_margins is None
               for r in plain for b in r.branches)

    def after_prompt_only(text):  # no answer in any branch; the first two characters of a continuation
        return None if text in branch_texts or len(text) < 2 else Extracted(text[:2], 0, 2)

    fast = cot_decode(llama, prompts, k=3, max_new_tokens=6, extractor=after_prompt_only, batch_size=4)
    slow = cot_decode_reference(llama, prompts, k=3, max_new_tokens=6, extractor=after_prompt_only)
    tail = llama.tokenizer(ANSWER_PROMPT, add_special_tokens=False)["input_ids"]
    eos = llama.tokenizer.eos_token_id
    n_fallback = 0
    for i, (f, s, p) in enumerate(zip(fast, slow, plain, strict=True)):
        prompt_ids = llama.tokenizer(prompts[i])["input_ids"]
        for bf, bs, bp in zip(f.branches, s.branches, p.branches, strict=True):
            assert bf.token_ids == bp.token_ids  # the branch itself is unchanged
            ids = bf.token_ids[:-1] if bf.token_ids and bf.token_ids[-1] == eos else bf.token_ids
            want = generate(llama, [prompt_ids + ids + tail], 16, stop_strings=["\n"], return_top2=True).samples[0]
            assert bf.fallback_token_ids == want.token_ids == bs.fallback_token_ids
            assert bf.fallback_text == want.text
            if bf.answer is None:
                continue
            n_fallback += 1
            assert bf.answer_source == "answer_prompt" and bf.answer == want.text[:2] == bs.answer
            spans = token_char_spans(llama.tokenizer, want.token_ids, want.text)
            assert bf.answer_tokens == tokens_in_span(spans, 0, 2)
            margins = want.top2[:, 0] - want.top2[:, 1]
            assert bf.confidence == pytest.approx(float(margins[bf.answer_tokens].mean()), abs=1e-6)
            assert bf.confidence == pytest.approx(bs.confidence, abs=1e-5)
        assert f.answer == s.answer and f.answer is not None
    assert n_fallback >= 4
    with pytest.raises(LensError, match="cannot spell the answer prompt"):
        cot_decode(llama, prompts, k=2, max_new_tokens=4, answer_prompt="\u00e9\u00e9")


def _branch(rank: int, answer: str | None, confidence: float | None):
    from lens.decoding.cot import Branch

    return Branch(rank=rank, first_token=rank, first_token_prob=0.1, text="", token_ids=[], finish_reason="eos",
                  margins=torch.zeros(0), answer=answer, answer_span=None, answer_tokens=[], confidence=confidence,
                  reasoning=False)


def test_aggregate_numerically_equal_answers_together():
    from lens.decoding.cot import answer_key

    assert answer_key("18") == answer_key("18.0") == answer_key("18.00")
    assert answer_key("1,800") == answer_key("1800")
    assert answer_key("1/2") == answer_key("0.5") and answer_key("-0") == answer_key("0")
    assert answer_key("18") != answer_key("18.5") and answer_key("x") == answer_key(" x ")
    branches = [_branch(0, "20", 0.5), _branch(1, "18.0", 0.2), _branch(2, "18", 0.2), _branch(3, "18.00", 0.2),
                _branch(4, None, None), _branch(5, "x", 0.1)]
    answer, scores = aggregate_branches(branches, "sum")
    assert answer == "18.0" and scores == pytest.approx({"20": 0.5, "18.0": 0.6, "x": 0.1})  # lowest rank names it
    assert aggregate_branches(branches, "max") == ("20", {"20": 0.5, "18.0": 0.2, "x": 0.1})
    tie = [_branch(0, "7", 0.3), _branch(1, "3.5", 0.15), _branch(2, "7/2", 0.15)]
    assert aggregate_branches(tie, "sum") == ("7", {"7": 0.3, "3.5": 0.3})  # a tie goes to the lower rank


def test_top_p_sampling_seeded_and_top_p_one_is_plain_sampling(llama):
    """Nucleus sampling is reproducible per seed and independent of batching; top_p=1 is plain sampling,
    and top_p<1 draws exactly what a hand-written nucleus sampler draws from the same generator."""
    from lens.decoding.generate import sample_seed, top_p_filter

    kw = dict(greedy=False, temperature=0.6, top_p=0.95, n=3, seed=5)
    a = generate(llama, PROMPTS, 8, batch_size=12, **kw)
    b = generate(llama, PROMPTS, 8, batch_size=2, **kw)
    assert [s.token_ids for s in a.samples] == [s.token_ids for s in b.samples]
    assert a.settings["top_p"] == 0.95 and a.settings["temperature"] == 0.6
    assert [s.token_ids for s in generate(llama, PROMPTS, 8, batch_size=12, **{**kw, "seed": 6}).samples] != [
        s.token_ids for s in a.samples]
    logits = torch.randn(3, 50)
    assert torch.equal(top_p_filter(logits, 1.0), logits)

    def by_hand(prompt: str, top_p: float, temperature: float, seed: int, j: int) -> list[int]:
        ids = llama.tokenizer(prompt)["input_ids"]
        g = torch.Generator().manual_seed(sample_seed(seed, 0, j))
        out = []
        for _ in range(8):
            with torch.no_grad():
                logit = llama.hf(input_ids=torch.tensor([ids + out])).logits[0, -1].float()
            probs = torch.softmax(logit / temperature, -1)
            if top_p < 1:
                order = probs.argsort(descending=True)
                keep = (probs[order].cumsum(0) - probs[order]) < top_p
                mask = torch.zeros_like(probs, dtype=torch.bool)
                mask[order[keep]] = True
                probs = torch.where(mask, probs, torch.zeros_like(probs))
                probs = probs / probs.sum()
            out.append(int(torch.multinomial(probs, 1, generator=g)))
        return out

    for top_p, temperature in ((1.0, 1.0), (0.6, 0.7)):
        got = generate(llama, PROMPTS[:1], 8, greedy=False, temperature=temperature, top_p=top_p, n=2, seed=9,
                       eos_token_id=None)
        assert [s.token_ids for s in got.samples] == [by_hand(PROMPTS[0], top_p, temperature, 9, j) for j in range(2)]
    plain = generate(llama, PROMPTS[:2], 8, greedy=False, n=2, seed=9)
    assert [s.token_ids for s in plain.samples] == [
        s.token_ids for s in generate(llama, PROMPTS[:2], 8, greedy=False, top_p=1.0, n=2, seed=9).samples]


def test_sampling_presets():
    from lens.decoding import SAMPLING_PRESETS, sampling_preset
    from lens.studies.reproduce import Sizes

    yue = sampling_preset("yue")
    assert (yue.temperature, yue.top_p) == (0.6, 0.95) and "2504.13837" in yue.source
    assert (SAMPLING_PRESETS["default"].temperature, SAMPLING_PRESETS["default"].top_p) == (1.0, 1.0)
    sizes = Sizes().use_sampling("yue")
    assert (sizes.sampling, sizes.temperature, sizes.top_p) == ("yue", 0.6, 0.95)
    assert (Sizes().temperature, Sizes().top_p, Sizes().sampling) == (1.0, 1.0, "default")
    with pytest.raises(LensError, match="unknown sampling preset"):
        sampling_preset("nucleus")
