"""Real-pair tokenizers: tiny Qwen2.5 / R1-Distill-Qwen and Llama-3.1 / R1-Distill-Llama pairs load,
their token map is identity on ordinary ids and maps specials by role or text, a different BPE is
refused in one line, the hybrid runs on a mapped pair, and `lens reproduce` runs on the Qwen-style pair."""

import json

import pytest
import torch

from lens import LensError, load_pair
from lens.pairs import comparable, ordinary_vocab, token_map
from lens.tiny import tiny_pair


@pytest.fixture(scope="module")
def qwen_pair():
    return tiny_pair("qwen")


@pytest.fixture(scope="module")
def llama_pair():
    return tiny_pair("llama")


def test_real_style_pairs_load(qwen_pair, llama_pair):
    for base, thinking in (qwen_pair, llama_pair):
        assert base.tokenizer.get_vocab() != thinking.tokenizer.get_vocab()  # what the old check refused
        assert load_pair(base, thinking) == (base, thinking)
        assert thinking.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                                      add_generation_prompt=True).endswith("<｜Assistant｜><think>\n")


def test_different_bpe_is_refused_in_one_line():
    base, other = tiny_pair("qwen", other_bpe=True)
    with pytest.raises(LensError) as e:
        load_pair(base, other)
    msg = str(e.value)
    assert "\n" not in msg and "not comparable: different BPE: 40 ordinary tokens differ" in msg
    assert "456 vs 416" in msg and "only in the base, e.g." in msg


def test_width_and_depth_still_refused(qwen_pair):
    base, _ = qwen_pair
    deeper, _ = tiny_pair("qwen", n_layers=3)
    with pytest.raises(LensError, match="layers 2 vs 3"):
        load_pair(base, deeper)


def test_qwen_map_ordinary_identity_specials_by_role_and_text(qwen_pair):
    base, thinking = qwen_pair
    fwd, back = token_map(base, thinking), token_map(thinking, base)
    assert token_map(base, thinking) is fwd  # cached
    ordinary = sorted(ordinary_vocab(base.tokenizer).values())
    assert fwd.n_ordinary == len(ordinary) == 456
    assert fwd.map_ids(ordinary) == ordinary and back.map_ids(ordinary) == ordinary  # round trip by identity
    tb, tt = base.tokenizer, thinking.tokenizer
    eos = tb.convert_tokens_to_ids("<|endoftext|>")
    assert fwd.map_id(eos) == (tt.convert_tokens_to_ids("<｜end▁of▁sentence｜>"),) and fwd.how[eos] == "role:eos"
    im_start = tb.convert_tokens_to_ids("<|im_start|>")
    assert fwd.how[im_start] == "text" and tt.decode(list(fwd.map_id(im_start))) == "<|im_start|>"
    assert set(fwd.as_dict()["through_text"]) == {"<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
                                                  "<|object_ref_end|>", "<|box_start|>", "<|box_end|>"}
    think = tt.convert_tokens_to_ids("<think>")
    assert back.how[think] == "text" and tb.decode(list(back.map_id(think))) == "<think>"
    bos = tt.bos_token_id  # R1's bos: the Qwen base has none, so through text
    assert back.how[bos] == "text" and back.map_id(bos) == tuple(tb("<｜begin▁of▁sentence｜>",
                                                                     add_special_tokens=False)["input_ids"])
    # a thinking prompt with its specials, read by the base through the map: same text
    ids = tt.apply_chat_template([{"role": "user", "content": "What is 3 plus 4?"}], add_generation_prompt=True,
                                 tokenize=True, return_dict=True)["input_ids"]
    assert tb.decode(back.map_ids(ids)) == tt.decode(ids)
    table = fwd.step_table(base.vocab_size, thinking.vocab_size)
    assert table[:456].equal(torch.arange(456)) and int(table[eos]) == tt.eos_token_id
    json.dumps(fwd.as_dict(), ensure_ascii=False)


def test_llama_map_same_role_and_text(llama_pair):
    base, thinking = llama_pair
    fwd = comparable(base, thinking)
    tb, tt = base.tokenizer, thinking.tokenizer
    assert fwd.how[tb.bos_token_id] == "role:bos" and fwd.map_id(tb.bos_token_id) == (tt.bos_token_id,)
    assert fwd.how[tb.eos_token_id] == "role:eos" and fwd.map_id(tb.eos_token_id) == (tt.eos_token_id,)
    eot = tb.convert_tokens_to_ids("<|eot_id|>")
    assert fwd.how[eot] == "same" and fwd.map_id(eot) == (eot,)
    assert fwd.as_dict()["kinds"] == {"role:bos": 1, "role:eos": 1, "same": 5, "text": 4}
    assert tb("Q: 3 + 4").input_ids == tt("Q: 3 + 4").input_ids  # bos by role, ordinary by identity


def test_same_tokenizer_map_is_identity():
    from lens.tiny import tiny_model

    a, b = tiny_model("llama", n_layers=2), tiny_model("llama", n_layers=2, seed=1)
    assert token_map(a, b).is_identity and token_map(a, b).text_ids == []


def test_own_templates(qwen_pair):
    from lens.evaluation.templates import model_prompts, own_template

    base, thinking = qwen_pair
    assert own_template(thinking) == "chat" and own_template(thinking, "plain") == "plain"
    assert model_prompts(thinking, ["2+2?"]) == ["<｜begin▁of▁sentence｜><｜User｜>2+2?<｜Assistant｜><think>\n"]
    from lens.tiny import tiny_model

    assert own_template(tiny_model("llama", n_layers=2)) == "plain"  # a base without a chat template


def test_hybrid_runs_on_mapped_pair_and_matches_reference(qwen_pair):
    from lens.evaluation.templates import model_prompts
    from lens.hybrid import HybridConfig, hybrid_generate, hybrid_generate_reference

    base, thinking = qwen_pair
    qs = ["What is 3 plus 4?", "Natalia sold 48 clips"]
    b_prompts, t_prompts = [f"Q: {q}\nA:" for q in qs], model_prompts(thinking, qs)
    g = torch.Generator().manual_seed(0)
    cats = {f"c{i}": torch.randn(base.d_model, generator=g) * 4 for i in range(3)}
    bias = torch.randn(base.d_model, generator=g) * 2

    def cfg():
        return HybridConfig("blocks.1.hook_resid_post", cats, bias=bias, gate="kl", kl_threshold=0.0)

    fast = hybrid_generate(base, thinking, b_prompts, cfg(), max_new_tokens=8, thinking_prompts=t_prompts)
    ref = hybrid_generate_reference(base, thinking, b_prompts, cfg(), max_new_tokens=8, thinking_prompts=t_prompts)
    assert fast.tokens == ref.tokens and fast.gated.any()
    assert fast.gated.equal(ref.gated) and fast.steered.equal(ref.steered)


@pytest.mark.parametrize("style", ["qwen", "llama"])
def test_reproduce_runs_on_real_style_pairs(style, qwen_pair, llama_pair, tmp_path):
    from lens.studies.reproduce import Sizes, reproduce

    base, thinking = qwen_pair if style == "qwen" else llama_pair
    rows = tmp_path / "t.jsonl"
    rows.write_text("\n".join(json.dumps({"question": f"Sam has {i} apples and buys {i + 3} more. How many?",
                                          "answer": str(2 * i + 3)}) for i in range(40)))
    sizes = Sizes(n=8, samples=4, hybrid_n=16, cot_n=3, k=3, feature_n=4, n_contrast=8, max_new_tokens=32,
                  batch_size=16)
    res = reproduce(tmp_path / "r", base=base, thinking=thinking, tasks=str(rows), sizes=sizes, progress=False)
    for step in ("sampling", "hybrid", "cot", "diff"):
        assert res[step]["status"] == "ok", (step, res[step].get("reason"))
    # no SAE off the organism yet: the feature step says why (issue 15: train one automatically)
    assert res["feature"]["status"] == "skipped" and "--sae" in res["feature"]["reason"]
    pair = res["meta"]["pair"]
    assert pair["prompt_templates"] == {"base": "plain", "thinking": "chat"}
    assert pair["example_prompts"]["thinking"][0].endswith("<｜Assistant｜><think>\n")
    assert "<think>" in pair["token_map"]["thinking_to_base"]["through_text"]
    if style == "qwen":
        assert "<|im_start|>" in pair["token_map"]["base_to_thinking"]["through_text"]
    assert pair["templates"]["thinking"] and pair["templates"]["base"]
    assert json.loads((tmp_path / "r" / "results.json").read_text())["meta"]["pair"]["prompt_templates"]
