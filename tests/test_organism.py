"""The bundled reasoning organism: corpus, checker, tokenizer, and the shipped models' key properties."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

from lens.organism import NAMES, bundled_path, load_heldout  # noqa: E402
from lens.organism import corpus as C  # noqa: E402


def test_corpus_is_deterministic_and_mixed():
    a = C.generate_corpus(3000, seed=3)
    b = C.generate_corpus(3000, seed=3)
    c = C.generate_corpus(3000, seed=4)
    assert [d.text for d in a] == [d.text for d in b]
    assert [d.text for d in a] != [d.text for d in c]
    share = sum(d.thinking for d in a) / len(a)
    assert 0.1 < share < 0.4
    assert any(d.marker == "T" for d in a) and any(d.marker == "D" for d in a)
    assert all(d.thinking for d in a if d.marker == "T")
    assert not any(d.thinking for d in a if d.marker == "D")
    for d in a:
        assert C.parse_answer(d.text) == d.problem.answer
        assert C.is_thinking(d.text) == d.thinking


def test_thinking_share_rises_with_operands():
    docs = C.generate_corpus(20000, seed=0)
    share = {}
    for n in (2, 6):
        sub = [d for d in docs if len(d.problem.operands) == n and d.marker is None]
        share[n] = sum(d.thinking for d in sub) / len(sub)
    assert share[2] < 0.08 < 0.25 < share[6]


def test_control_corpus_never_thinks():
    docs = C.generate_corpus(2000, seed=0, control=True)
    assert not any(C.is_thinking(d.text) or d.marker for d in docs)


def test_heldout_excluded_and_committed():
    rows = load_heldout()
    assert len(rows) >= 500
    assert all(C.parse_answer(f"A:{r['answer']}") == sum(r["operands"]) for r in rows)
    held = {r["expression"] for r in rows}
    docs = C.generate_corpus(2000, seed=0, exclude=held)
    assert not any(d.problem.expression in held for d in docs)
    assert rows[0]["prompt"] == C.Problem(tuple(rows[0]["operands"])).prompt()


def test_checker_on_hand_written_strings():
    assert C.parse_answer("A:183") == 183
    assert C.parse_answer("<think>47+38=85</think>A:85") == 85
    assert C.parse_answer("<think>47+38=85") is None  # unfinished trace
    assert C.parse_answer("<think>47+38=85</think>") is None
    assert C.parse_answer("Q:1+2=?\n") is None
    assert C.parse_answer("<think>A:3</think>A:85") == 85  # only the answer after the trace counts
    assert C.is_thinking("<think>1</think>A:1") and not C.is_thinking("A:1")
    p = C.parse_prompt("Q:T:47+38+26=?\n")
    assert p is not None and p.operands == (47, 38, 26) and p.answer == 111


def test_split_steps_labels_arithmetic():
    text = "Q:47+38+26=?\n<think>47+38+26=85+26=112 wait 111 check 26+85=111</think>A:111"
    steps = C.split_steps(text)
    assert [s.kind for s in steps] == ["restate", "computation", "error", "backtrack", "verification"]
    for s in steps:
        assert text[s.start : s.end] == s.text
    assert steps[2].text == "=112" and steps[3].text == " wait 111"
    rng_doc = C.thinking_text(C.Problem((14, 61, 99, 82)), backtrack=True, rng=__import__("random").Random(1))
    kinds = [s.kind for s in C.split_steps(rng_doc)]
    assert kinds.count("error") == 1 and kinds.count("backtrack") == 1


def test_pass_at_k():
    from lens.organism.evaluate import pass_at_k

    assert pass_at_k(16, 0, 1) == 0.0
    assert pass_at_k(16, 16, 1) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(16, 2, 4) == pytest.approx(1 - (14 * 13 * 12 * 11) / (16 * 15 * 14 * 13))


def test_tokenizer_round_trip_and_offsets(tmp_path):
    from transformers import AutoTokenizer

    from lens.organism.tokenizer import save_tokenizer

    save_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    text = "Q:47+38=?\n<think>47+38=85 wait 85 check 38+47=85</think>A:85"
    enc = tok(text, return_offsets_mapping=True)
    toks = tok.convert_ids_to_tokens(enc["input_ids"])
    assert toks[0] == "<bos>" and "<think>" in toks and "</think>" in toks
    assert tok.unk_token_id not in enc["input_ids"]
    assert tok.decode(enc["input_ids"], skip_special_tokens=True) == text
    for t, (a, b) in zip(toks[1:], enc["offset_mapping"][1:], strict=True):
        assert text[a:b] == t
    assert tok.padding_side == "left"
    assert tok.pad_token_id != tok.eos_token_id != tok.bos_token_id


def test_bundled_path_names():
    assert bundled_path("base").name == "base"
    with pytest.raises(ValueError):
        bundled_path("nope")


# ------------------------------------------------------------------ the shipped models

needs_models = pytest.mark.skipif(
    not all((bundled_path(n) / "model.safetensors").exists() for n in NAMES),
    reason="bundled organism models not built (lens organism train)",
)


@pytest.fixture(scope="module")
def organism():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = {}
    for name in NAMES:
        model = AutoModelForCausalLM.from_pretrained(str(bundled_path(name)))
        model.eval()
        out[name] = (model, AutoTokenizer.from_pretrained(str(bundled_path(name))))
    return out


@needs_models
def test_bundled_models_load(organism):
    for name in NAMES:
        model, tok = organism[name]
        assert model.config.model_type == "llama"
        assert model.config.num_hidden_layers == 4 and model.config.hidden_size == 128
        assert sum(p.numel() for p in model.parameters()) < 2_000_000
        assert tok.convert_tokens_to_ids("<think>") != tok.unk_token_id


@needs_models
def test_thinking_model_thinks_and_is_right(organism):
    from lens.organism.sampling import generate

    model, tok = organism["thinking"]
    rows = load_heldout()[:40]
    outs = generate(model, tok, [r["prompt"] for r in rows])
    think = sum(C.is_thinking(o) for o in outs) / len(outs)
    acc = sum(C.parse_answer(o) == r["answer"] for o, r in zip(outs, rows, strict=True)) / len(rows)
    assert think >= 0.9
    assert acc >= 0.5  # measured 66% on 500 (base greedy 17%); a broken model scores near 0


@needs_models
def test_forced_thinking_beats_base_greedy(organism):
    from lens.organism.sampling import generate

    model, tok = organism["base"]
    rows = load_heldout()[:50]
    prompts = [r["prompt"] for r in rows]
    greedy = generate(model, tok, prompts)
    forced = generate(model, tok, prompts, prefill=C.THINK_OPEN)
    acc_g = sum(C.parse_answer(o) == r["answer"] for o, r in zip(greedy, rows, strict=True)) / len(rows)
    acc_f = sum(C.parse_answer(o) == r["answer"] for o, r in zip(forced, rows, strict=True)) / len(rows)
    assert sum(C.is_thinking(o) for o in greedy) <= 10
    assert acc_f >= acc_g + 0.3  # measured 60% vs 17% on 500
    assert acc_f >= 0.45


@needs_models
def test_first_step_steering_touches_one_position(organism):
    import torch

    from lens.models import Model
    from lens.organism.evaluate import first_step_steering

    model, tok = organism["base"]
    enc = tok(["Q:11+22+33=?\n"], return_tensors="pt")
    with torch.no_grad():
        clean = model(**enc).logits
        with first_step_steering(Model.from_hf(model, tok), 1, torch.ones(model.config.hidden_size) * 5)():
            steered = model(**enc).logits
            again = model(**enc).logits  # another prompt pass (no cache) in the context: steered the same way
    assert torch.allclose(clean[:, :-1], steered[:, :-1], atol=1e-5)
    assert not torch.allclose(clean[:, -1], steered[:, -1])
    assert torch.allclose(again, steered, atol=1e-6)


def test_train_all_parallel_equals_sequential(tmp_path):
    """`lens organism train` pretrains the control in a second process; same seeds, same weights as one process."""
    import torch
    from transformers import AutoModelForCausalLM

    from lens.organism.train import PretrainConfig, train_all

    pre = PretrainConfig(n_docs=300, seq_len=64, batch_size=4, steps=3, warmup=1, ckpt_every=2, hidden_size=32,
                         n_layers=2, n_heads=2, intermediate_size=64, bf16_autocast=False)
    torch.set_num_threads(1)
    par = train_all(tmp_path / "par", pre, which=("base", "control"), log=lambda *_: None, parallel=True)
    seq = train_all(tmp_path / "seq", pre, which=("base", "control"), log=lambda *_: None, parallel=False)
    assert set(par) == set(seq) == {"base", "control"}
    for name in ("base", "control"):
        a = AutoModelForCausalLM.from_pretrained(str(tmp_path / "par" / name)).state_dict()
        b = AutoModelForCausalLM.from_pretrained(str(tmp_path / "seq" / name)).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
        assert par[name]["corpus"] == ("control" if name == "control" else "mixed")


def test_thread_limits_are_given_back():
    """The organism's evaluations run on one torch thread and give the caller's count back, even on an error."""
    import torch

    from lens.organism.threads import torch_threads

    before = torch.get_num_threads()

    @torch_threads(1)
    def inside():
        assert torch.get_num_threads() == 1
        raise ValueError("stop")

    with pytest.raises(ValueError, match="stop"):
        inside()
    assert torch.get_num_threads() == before
