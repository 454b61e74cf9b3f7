"""Evaluation: answers, pass@k and intervals, behaviours, likelihood, tasks, templates."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lens.errors import LensError  # noqa: E402
from lens.evaluation import tasks as tasks_mod  # noqa: E402
from lens.evaluation.answers import (  # noqa: E402
    NumericChecker,
    auto_answer,
    boxed,
    check,
    extract_answer,
    get_extractor,
    gsm8k_answer,
    last_number,
    numbers_equal,
    organism_answer,
)
from lens.evaluation.behaviours import (  # noqa: E402
    OAT_ZERO_KEYWORDS,
    ReflectionDetector,
    ThinkingFormat,
    detector_for,
    looks_like_reasoning,
    oat_zero_group,
    reflection_at_k,
    reflection_detectors,
    reflection_precision_recall,
    reflection_vs_correctness,
)
from lens.evaluation.likelihood import continuation_logprobs  # noqa: E402
from lens.evaluation.metrics import (  # noqa: E402
    accuracy,
    gap_recovered,
    pass_at_k,
    pass_at_k_curve,
    tokens_summary,
    wilson_interval,
)
from lens.evaluation.tasks import load_jsonl, load_tasks, organism_task, parse_gsm8k_row, parse_math500_row  # noqa: E402
from lens.evaluation.templates import apply_template  # noqa: E402

# ---------------------------------------------------------------- answers


@pytest.mark.parametrize(
    "text, value",
    [
        ("<think>47+38+26=85+26=111</think>A:111", "111"),
        ("A:111", "111"),
        ("<think>47+38=A:85", None),  # unclosed think block: no answer yet
        ("<think>1+2=3 wait A:4</think>A:3<eos>", "3"),
        ("no answer", None),
    ],
)
def test_organism_answer(text, value):
    got = organism_answer(text)
    assert (got.value if got else None) == value
    if got:
        assert text[got.start : got.end] == value


def test_other_extractors_and_spans():
    t = "so 3 + 4 = 7, then 1,234 apples"
    got = last_number(t)
    assert got.value == "1234" and t[got.start : got.end] == "1,234"
    t = r"the answer is $\boxed{\frac{1}{2}}$ done"
    got = boxed(t)
    assert got.value == r"\frac{1}{2}" and t[got.start : got.end] == r"\frac{1}{2}"
    assert boxed(r"\boxed{ 42 }").value == "42"
    assert gsm8k_answer("blah\n#### 1,200").value == "1200"
    assert auto_answer("<think>2+2=4</think>A:4").value == "4"
    assert auto_answer(r"so \boxed{5} and 6").value == "5"
    assert auto_answer("<think>2+2=4") is None
    assert auto_answer("we get -3.5").value == "-3.5"
    assert extract_answer("x 3/4", "last_number") == "3/4"
    with pytest.raises(LensError, match="did you mean"):
        get_extractor("boxd")


def test_numeric_checking():
    assert numbers_equal("1,234", 1234)
    assert numbers_equal(r"\frac{1}{2}", "0.5")
    assert numbers_equal("0.3333333", "1/3", rel_tol=1e-6)
    assert not numbers_equal("0.33", "1/3")
    assert numbers_equal("50%", 50)
    assert not numbers_equal("abc", 1)
    chk = NumericChecker()
    assert chk("12.0", 12) and not chk(None, 12) and chk(r"\text{(A)}", "(A)")
    assert check("<think>..</think>A:111", 111)
    assert not check("<think>..</think>A:112", 111)
    assert check("x = 2", "2.0000001", checker=NumericChecker(rel_tol=1e-3))


# ---------------------------------------------------------------- metrics


def brute_pass_at_k(n, c, k):
    """Probability that a uniformly random k-subset of n samples contains a correct one (enumeration)."""
    items = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(items[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_brute_force():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)
                assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)
    # large n: product form stays finite and equals the exact value
    assert pass_at_k(1024, 3, 256) == pytest.approx(1 - math.comb(1021, 256) / math.comb(1024, 256), rel=1e-9)
    with pytest.raises(LensError):
        pass_at_k(4, 1, 5)


def test_pass_at_k_curve_and_intervals():
    rng = np.random.default_rng(0)
    correct = (rng.random((40, 16)) < rng.random((40, 1))).tolist()
    curve = pass_at_k_curve(correct, ks=[1, 4, 16], n_boot=300, seed=1)
    assert curve[1].value <= curve[4].value <= curve[16].value
    for est in curve.values():
        assert est.lo <= est.value <= est.hi and est.n == 40
    assert curve[1].value == pytest.approx(np.mean(correct))
    same = pass_at_k_curve(n=[len(r) for r in correct], c=[sum(r) for r in correct], ks=[1, 4, 16], n_boot=300,
                           seed=1)
    assert same == curve
    with pytest.raises(LensError):
        pass_at_k_curve(correct, ks=[17])


def test_accuracy_intervals():
    est = accuracy([True] * 30 + [False] * 70)
    assert est.value == 0.3 and est.method == "wilson"
    lo, hi = wilson_interval(30, 100)
    assert (est.lo, est.hi) == (lo, hi)
    assert lo == pytest.approx(0.2189, abs=1e-3) and hi == pytest.approx(0.3958, abs=1e-3)  # textbook values
    boot = accuracy([True] * 30 + [False] * 70, method="bootstrap", n_boot=500)
    assert boot.lo < 0.3 < boot.hi
    assert accuracy([True] * 5).hi == 1.0


def test_tokens_and_gap_recovered():
    s = tokens_summary([10, 20, 30])
    assert s["mean"] == 20 and s["total"] == 60 and s["max"] == 30
    base = [0] * 10 + [1] * 2 + [0] * 8
    thinking = [1] * 12 + [0] * 8
    hybrid = [1] * 6 + [0] * 4 + [1] * 2 + [0] * 8
    est = gap_recovered(base, hybrid, thinking, n_boot=400)
    assert est.value == pytest.approx((8 / 20 - 2 / 20) / (12 / 20 - 2 / 20))
    assert est.lo <= est.value <= est.hi
    worse = gap_recovered(base, [0] * 20, thinking)
    assert worse.value == 0.0  # floored
    assert math.isnan(gap_recovered(thinking, hybrid, base).value)  # thinking below base: undefined


# ---------------------------------------------------------------- behaviours


def test_reflection_and_format():
    det = ReflectionDetector.for_family("default")  # the "words" detector
    assert det("Hmm, wait. Let me check that.") and det.count("Wait, wait, recheck") == 3
    assert not det("awaiting the waiter")  # whole words only
    org = detector_for("organism")
    assert org("=85+26 wait 111") and org(" check 53+130=183") and not org("no reflection")
    fmt = ThinkingFormat()
    assert fmt.state("<think>a</think>A:1") == "closed" and fmt.state("<think>a") == "open"
    assert fmt.state("A:1") == "none" and fmt.thinking("<think>abc</think>x") == "abc"
    assert fmt.after("<think>abc</think>A:3") == "A:3" and fmt.state("abc</think>", prefilled=True) == "closed"
    custom = ThinkingFormat("<reason>", "</reason>")
    assert custom.uses("<reason>x</reason>") and not custom.uses("<think>")
    assert looks_like_reasoning("12+7=19 so A:19") and not looks_like_reasoning("A:19")


def test_thinking_format_opened_by_the_prompt():
    """R1's template opens <think> in the prompt: a completion that closes the block is thinking-format."""
    fmt = ThinkingFormat()
    r1 = "<｜begin▁of▁sentence｜><｜User｜>2+2?<｜Assistant｜><think>\n"
    assert fmt.opened_by(r1) and not fmt.opened_by("Q: 2+2?\nA:") and not fmt.opened_by("<think>a</think>Q:")
    done, cut = "First 2+2=4.\n</think>\n\nThe answer is 4.", "First 2+2 is"
    assert fmt.in_format(done, prefilled=True) and not fmt.in_format(cut, prefilled=True)
    assert not fmt.in_format(done) and fmt.in_format("<think>x</think>4")  # unprefilled: it must open one
    table = reflection_vs_correctness([done, cut, done], [True, False, True], prefilled=[True, True, False])
    assert table["thinking_rate"] == pytest.approx(1 / 3) and table["accuracy_if_thinking"] == 1.0
    assert reflection_vs_correctness([done], [True], prefilled=True)["thinking_rate"] == 1.0
    with pytest.raises(LensError, match="one per text"):
        reflection_vs_correctness([done], [True], prefilled=[True, False])


def test_sampling_study_counts_thinking_format_of_a_prefilled_prompt(monkeypatch):
    """The sampling study reads each model's own prompts: R1-style ones count completions closing <think>."""
    from lens.studies import sampling_study

    class Gen:
        tokens_used = [[3, 3]]

        def texts(self):
            return [["reasoning </think> A: 4", "still thinking"]]

    monkeypatch.setattr(sampling_study, "generate", lambda *a, **k: Gen())
    prompts = {"base": ["Q: 2+2?\nA:"], "thinking": ["<｜User｜>2+2?<｜Assistant｜><think>\n"]}
    res = sampling_study.run({"base": None, "thinking": None}, prompts, lambda i, t: "4" in t, samples=2)
    assert res["behaviour"]["base"]["thinking_rate"] == 0.0 and res["behaviour"]["base"]["prompt_opens_thinking"] == 0
    assert res["behaviour"]["thinking"]["thinking_rate"] == 0.5
    assert res["behaviour"]["thinking"]["prompt_opens_thinking"] == 1.0


def test_reflection_at_k_and_table():
    samples = [["wait no", "plain", "plain", "plain"], ["plain"] * 4]
    words = detector_for("default", "words")
    r = reflection_at_k(samples, [1, 4], words)
    assert r[1] == pytest.approx(0.125) and r[4] == pytest.approx(0.5)
    texts = ["wait A:1", "A:2", "<think>x</think>A:3", "recheck A:4"]
    table = reflection_vs_correctness(texts, [True, False, True, False], words)
    assert table["reflective_correct"] == 1 and table["reflective_wrong"] == 1
    assert table["plain_correct"] == 1 and table["plain_wrong"] == 1
    assert table["reflection_rate"] == 0.5 and table["accuracy_if_thinking"] == 1.0
    assert table["keyword_counts"] == {"wait": 1, "recheck": 1}


def test_oat_zero_detector_counts_substrings():
    """oat-zero's rule: lower-cased substrings, reflections = sum over keywords of text.count(kw)."""
    qwen = detector_for("Qwen/Qwen2.5-Math-1.5B")
    assert qwen.name == "oat_zero" and qwen.match == "substring"
    assert set(qwen.keywords) == {"recheck", "rethink", "try again"}
    assert qwen("Let me start RECHECKING the sum") and qwen("unrethinkable")  # substrings count
    assert not qwen("Wait, let me check again.")  # not in Qwen's set
    words = detector_for("qwen2", "words")
    assert not words("Let me start rechecking the sum") and words("Wait, let me check again.")  # whole words
    llama = detector_for("meta-llama/Llama-3.1-8B")
    assert llama("Wait, let me check again.")
    assert llama.count("I recheck again and Recheck") == 3 and qwen.count("I recheck again and Recheck") == 2
    assert [w for w, _, _ in llama.find("recheck again")] == ["recheck", "check again"]
    assert ReflectionDetector().describe()["keywords"] == sorted(OAT_ZERO_KEYWORDS["unified"])
    assert detector_for("organism")("=85+26 wait 111") and detector_for("organism", "words")(" check 53")
    with pytest.raises(LensError, match="unknown reflection detector"):
        detector_for("qwen2", "oatzero")
    with pytest.raises(LensError):
        ReflectionDetector(["x"], match="regex")


def test_oat_zero_family_choice():
    """The keyword group follows oat-zero's tests of the model name, in its order (Qwen first)."""
    assert oat_zero_group("Qwen/Qwen2.5-Math-1.5B") == "qwen"
    assert oat_zero_group("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B") == "qwen"
    assert oat_zero_group("deepseek-ai/deepseek-math-7b-base") == "deepseek"
    assert oat_zero_group("meta-llama/Llama-3.1-8B") == "llama"
    assert oat_zero_group("microsoft/rho-math-7b-v0.1") == "microsoft"
    assert oat_zero_group("HuggingFaceTB/SmolLM2-135M") == "unified"
    assert set(detector_for("deepseek-ai/deepseek-math-7b-base").keywords) >= {"reevaluation", "re-examine"}
    assert set(detector_for("gpt2").keywords) == set(OAT_ZERO_KEYWORDS["unified"])
    assert set(detector_for("Qwen/Qwen2.5-7B", "oat_zero_unified").keywords) == set(OAT_ZERO_KEYWORDS["unified"])
    # lens reproduce: the name decides when it names a family, else the model type
    dets = reflection_detectors("qwen2", "/models/local-checkpoint")
    assert set(dets["oat_zero"].keywords) == set(OAT_ZERO_KEYWORDS["qwen"]) and dets["words"].match == "word"
    assert set(reflection_detectors("llama", "deepseek-ai/deepseek-math-7b-base")["oat_zero"].keywords) == set(
        OAT_ZERO_KEYWORDS["deepseek"])
    assert reflection_detectors("organism")["oat_zero"].keywords == ("wait", "check")


def test_reflection_precision_recall_by_hand():
    """Question level, as oat-zero: solved = some sample correct, reflective = some sample reflects."""
    texts = [["recheck: 5", "5"], ["rethink, then recheck", "x"], ["7", "7"], ["try again", "y"], ["z", "z"]]
    correct = [[True, False], [False, False], [True, True], [False, True], [True, False]]
    got = reflection_precision_recall(texts, correct, detector_for("qwen2"))
    # solved: q0 q2 q3 q4 (4); reflective: q0 q1 q3 (3); both: q0 q3 (2; q3 by different samples)
    assert (got["questions"], got["samples"], got["solved"], got["reflective"], got["solved_and_reflective"]) == (
        5, 10, 4, 3, 2)
    assert got["precision"] == pytest.approx(2 / 3) and got["recall"] == pytest.approx(2 / 4)
    assert got["pass_at_n"] == pytest.approx(4 / 5) and got["reflection_at_n"] == pytest.approx(3 / 5)
    assert got["reflections_per_sample"] == pytest.approx(4 / 10)  # 1 + 2 + 1 keyword hits in 10 samples
    assert reflection_at_k(texts, [2], detector_for("qwen2"))[2] == pytest.approx(got["reflection_at_n"])
    none = reflection_precision_recall([["a"]], [[False]])
    assert math.isnan(none["precision"]) and math.isnan(none["recall"])
    with pytest.raises(LensError):
        reflection_precision_recall([["a", "b"]], [[True]])


# ---------------------------------------------------------------- likelihood


@pytest.fixture(scope="module")
def tiny():
    from lens.tiny import tiny_model

    return tiny_model("qwen2", n_layers=2, d_model=64, seed=2)


def test_likelihood_padded_batch_equals_rows(tiny):
    contexts = ["Q: 1+2=?\nA:", "Q: 100+200+300=?\nA:", "x"]
    conts = [" 3", " 600 because 100+200=300", " hello world"]
    batch = continuation_logprobs(tiny, contexts, conts, batch_size=3)
    for c, x, b in zip(contexts, conts, batch, strict=True):
        alone = continuation_logprobs(tiny, [c], [x], batch_size=1)[0]
        assert b.n_tokens == alone.n_tokens == len(x)
        assert torch.allclose(b.token_logprobs, alone.token_logprobs, atol=1e-5)
        assert b.sum == pytest.approx(alone.sum, abs=1e-4) and b.mean == pytest.approx(b.sum / b.n_tokens)
    # matches a direct forward pass of the whole unpadded sequence
    ids = tiny.tokenizer(contexts[0] + conts[0])["input_ids"]
    with torch.no_grad():
        logits = tiny.hf(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
    n = len(conts[0])
    direct = sum(float(logits[len(ids) - n - 1 + j, ids[len(ids) - n + j]]) for j in range(n))
    assert batch[0].sum == pytest.approx(direct, abs=1e-4)
    # token ids are accepted too
    cont_ids = tiny.tokenizer(conts[0], add_special_tokens=False)["input_ids"]
    by_ids = continuation_logprobs(tiny, [contexts[0]], [cont_ids])
    assert by_ids[0].sum == pytest.approx(batch[0].sum, abs=1e-5)
    with pytest.raises(LensError):
        continuation_logprobs(tiny, ["a"], ["b", "c"])


# ---------------------------------------------------------------- tasks and templates


def test_parse_hub_rows():
    g = parse_gsm8k_row({"question": "Natalia sold 48 clips...", "answer": "48/2 = <<48/2=24>>24\n48+24 = 72\n#### 72"})
    assert g.answer == "72" and g.question.startswith("Natalia") and "solution" in g.meta
    g = parse_gsm8k_row({"question": "q", "answer": "... #### 1,250"})
    assert g.answer == "1250"
    row = {"problem": "Compute $\\frac{1}{2}+\\frac{1}{4}$.", "solution": "... $\\boxed{\\frac{3}{4}}$",
           "answer": "\\frac{3}{4}", "subject": "Algebra", "level": 2, "unique_id": "test/algebra/1.json"}
    m = parse_math500_row(row)
    assert m.answer == "\\frac{3}{4}" and m.meta["level"] == 2 and m.id == "test/algebra/1.json"
    del row["answer"]
    assert parse_math500_row(row).answer == "\\frac{3}{4}"
    with pytest.raises(LensError):
        parse_gsm8k_row({"question": "q", "answer": "no marker"})


def test_jsonl_and_organism(tmp_path, monkeypatch):
    p = tmp_path / "t.jsonl"
    rows = [json.dumps({"question": "2+2?", "answer": 4}), "", json.dumps({"problem": "x", "target": "7"})]
    p.write_text("\n".join(rows) + "\n")
    ts = load_tasks(str(p))
    assert [(t.question, t.answer) for t in ts] == [("2+2?", "4"), ("x", "7")]
    assert len(load_jsonl(p, limit=1)) == 1
    (tmp_path / "bad.jsonl").write_text(json.dumps({"q": 1}) + "\n")
    with pytest.raises(LensError, match="no question field"):
        load_jsonl(tmp_path / "bad.jsonl")
    missing = tmp_path / "none" / "heldout.jsonl"
    monkeypatch.setattr(tasks_mod, "ORGANISM_HELDOUT", missing)
    with pytest.raises(LensError, match="does not exist"):
        load_tasks("organism")
    missing.parent.mkdir()
    missing.write_text(
        json.dumps({"prompt": "Q:47+38+26=?\n", "answer": 111}) + "\n"
        + json.dumps({"question": "10+20", "answer": 30, "n_operands": 2}) + "\n"
        + json.dumps({"operands": [10, 11]}) + "\n"
    )
    ts = load_tasks("organism")
    assert [t.question for t in ts] == ["Q:47+38+26=?\n", "Q:10+20=?\n", "Q:10+11=?\n"]
    assert [t.answer for t in ts] == ["111", "30", "21"] and ts[1].meta["template"] == "identity"
    assert organism_task({"question": "Q:1+2=?", "answer": 3}).question == "Q:1+2=?\n"
    with pytest.raises(LensError, match="did you mean"):
        load_tasks("gsm8")


def test_templates():
    assert apply_template("plain", ["What is 2+2?"]) == ["Q: What is 2+2?\nA:"]
    assert apply_template("organism", ["Q:1+2=?\n"]) == ["Q:1+2=?\n"]
    r1 = apply_template("r1_zero", ["2+2?"])[0]
    assert "User: 2+2?" in r1 and r1.endswith("Assistant: <think>")
    assert apply_template("Problem: {question}\nSolution:", ["x"]) == ["Problem: x\nSolution:"]
    assert apply_template(str.upper, ["x"]) == ["X"]

    class Tok:
        chat_template = "{% for m in messages %}<{{m.role}}>{{m.content}}{% endfor %}"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt, **kw):
            return "".join(f"<{m['role']}>{m['content']}" for m in messages) + f"<assistant>{kw}"

    assert apply_template("chat", ["hi"], Tok()) == ["<user>hi<assistant>{}"]
    no_think = apply_template("chat", ["hi"], Tok(), no_think=True)
    assert no_think == ["<user>hi /no_think<assistant>{'enable_thinking': False}"]
    with pytest.raises(LensError):
        apply_template("chat", ["hi"], None)
    with pytest.raises(LensError, match="did you mean"):
        apply_template("plian", ["x"])
