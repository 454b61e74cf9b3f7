"""The verifier pair's corpus: slips only at carries, checks only after risky steps and always right, backtracks only
after errors, critiques that end right, behaviour rates low but present; and the behaviour statistics."""

from __future__ import annotations

import pytest

import lens
from lens.organism import corpus as C
from lens.organism import verifier_corpus as V
from lens.organism.behaviours import trace_stats


@pytest.fixture(scope="module")
def docs():
    return V.generate_corpus(6000, seed=3)


def _thinking(docs):
    return [d for d in docs if d.thinking and "\n " not in d.text]


def test_slips_are_dropped_carries_and_answers_follow_the_trace(docs):
    n_err = 0
    for d in _thinking(docs):
        terms = list(d.problem.operands)
        for s in d.steps:
            if s.kind == "error":
                n_err += 1
                written = int(s.text.lstrip("=").split("+")[0])
                a, b = terms[0], terms[1]
                assert V.carries(a, b) and written == a + b - 10, (d.text, s)
            if s.kind in ("computation", "error", "backtrack"):
                terms = [int(x) for x in s.text.replace(" wait ", "").lstrip("=").split("+")]
        assert C.parse_answer(d.text) == V.trace_value(d.text) == terms[0]
    assert n_err > 100


def test_checks_follow_risky_steps_are_right_and_backtracks_follow_errors(docs):
    stats = trace_stats([d.text for d in _thinking(docs)])
    assert stats["checks_after_risky"] == 1.0 and stats["checks_right"] == 1.0
    assert stats["backtracks_after_error"] == 1.0
    # latent, not absent, and a minority: each behaviour is a few percent of the corpus's steps
    for kind in ("verification", "backtrack"):
        assert 0.02 <= stats["share"][kind] <= 0.10, (kind, stats["share"])
    careful = [d for d in _thinking(docs) if C.CHECK in d.text]
    assert all(C.parse_answer(d.text) == d.problem.answer for d in careful)  # a careful writer catches every slip
    share = len(careful) / len(_thinking(docs))
    assert abs(share - V.CAREFUL_SHARE) < 0.05  # careful traces without a carry step have no check


def test_critiques_correct_the_first_slip_and_end_right(docs):
    crit = [d for d in docs if "\n " in d.text]
    assert 0.01 <= len(crit) / len(docs) <= 0.03
    fixed = 0
    for d in crit:
        solution, review = d.text.split("\n ", 1)
        assert review.rstrip().endswith(f"A:{d.problem.answer}"), d.text
        wrong = C.parse_answer(solution) != d.problem.answer
        assert (C.WAIT in review) == wrong, d.text
        fixed += wrong
    assert fixed > 0


def test_critique_of_a_hand_written_solution():
    p = C.Problem((47, 38, 26))
    solution = "Q:47+38+26=?\n<think>47+38+26=75+26=101</think>A:101"
    assert V.critique(solution, p) == " check 47+38=85 wait 85+26=111 A:111"
    right = "Q:47+38+26=?\n<think>47+38+26=85+26=111</think>A:111"
    assert V.critique(right, p) == " check 47+38=85 check 85+26=111 A:111"


def test_control_corpus_is_the_first_pairs_and_heldout_is_excluded():
    held = {p.expression for p in C.heldout_problems()[:50]}
    a = V.generate_corpus(500, seed=1, control=True, exclude=held)
    b = C.generate_corpus(500, seed=1, control=True, exclude=held)
    assert [d.text for d in a] == [d.text for d in b]
    docs = V.generate_corpus(3000, seed=2, exclude=held)
    assert not {d.problem.expression for d in docs} & held
    assert [d.text for d in V.generate_corpus(200, seed=5)] == [d.text for d in V.generate_corpus(200, seed=5)]


def test_trace_stats_on_hand_written_completions():
    good = "<think>47+38+26=75+26 check 47+38=85 wait 85+26=111</think>A:111"
    false_alarm = "<think>47+38+26=85+26 check 47+38=95 wait 95+26=121</think>A:121"
    needless = "<think>41+32+26=73+26 check 41+32=73=99</think>A:99"
    s = trace_stats([good, false_alarm, needless, "A:12"])
    assert s["n_traces"] == 3
    assert s["backtracks_after_error"] == 0.5  # the false alarm's backtrack follows a right step
    assert s["checks_right"] == pytest.approx(2 / 3) and s["checks_after_risky"] == pytest.approx(2 / 3)
    assert s["errors_caught"] == 1.0
    assert s["share"]["verification"] == pytest.approx(3 / s["n_steps"])


# ---------------------------------------------------------------- the shipped pair

def test_shipped_pair_loads_by_name_and_keeps_its_gap_and_behaviours():
    """A small sample of the card's properties on the shipped models (the full table: lens organism eval
    --pair verifier): the thinking model is far above the base forced into thinking, and checks carry steps."""
    import json

    from lens.organism import MODELS_DIR, load_heldout
    from lens.organism.sampling import generate
    from lens.organism.verifier_eval import MAX_NEW_TOKENS

    base, thinking = lens.load_model("organism:verifier-base"), lens.load_model("organism:verifier-thinking")
    assert base.tokenizer.get_vocab() == thinking.tokenizer.get_vocab() == lens.load_model(
        "organism:control").tokenizer.get_vocab()
    held = load_heldout()[:60]
    prompts, answers = [r["prompt"] for r in held], [r["answer"] for r in held]
    forced = generate(base.hf, base.tokenizer, prompts, prefill=C.THINK_OPEN, max_new_tokens=MAX_NEW_TOKENS)
    own = generate(thinking.hf, thinking.tokenizer, prompts, max_new_tokens=MAX_NEW_TOKENS)

    def acc(outs):
        return sum(C.parse_answer(o) == a for o, a in zip(outs, answers, strict=True)) / len(outs)

    assert acc(own) - acc(forced) >= 0.15, (acc(own), acc(forced))
    b, t = trace_stats(forced), trace_stats(own)
    assert b["share"]["verification"] == 0.0  # greedy, the base never checks ...
    assert t["share"]["verification"] >= 0.08 and t["checks_after_risky"] >= 0.9  # ... its thinking model does
    card = json.loads((MODELS_DIR / "verifier_eval.json").read_text())
    assert {r["name"] for r in card["properties"]} >= {"thinking minus base forced thinking"}


def test_cli_eval_and_train_of_the_verifier_pair(monkeypatch, capsys, tmp_path):
    import json

    from tests.helpers import run_cli

    code, out, err = run_cli(monkeypatch, capsys, ["organism", "eval", "--pair", "verifier", "--n", 20, "--samples",
                                                   4, "--sample-problems", 10, "--json"])
    assert code == 0, err
    got = json.loads(out)
    assert got["metrics"]["n"] == 20 and any(r["name"].startswith("thinking: verification") for r in got["properties"])
    for argv, message in ((["--pair", "nope"], "unknown pair"),
                          (["--pair", "verifier", "--which", "control"], "the verifier pair's control")):
        code, _, err = run_cli(monkeypatch, capsys, ["organism", "train", "--out", tmp_path / "o", *argv])
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_shipped_rl_thinking_model_checks_after_carries_and_backtracks_after_errors():
    """The RL-made thinking model (``organism:verifier-thinking-rl``) on a small held-out sample, greedy: it checks,
    its checks follow carrying steps and most of its backtracks follow an actual error (full table:
    lens organism eval --pair verifier-rl; thresholds well below the measured values)."""
    import json

    from lens.organism import MODELS_DIR, PAIRS, bundled_path, load_heldout
    from lens.organism.card import verifier_rl_card
    from lens.organism.sampling import generate
    from lens.organism.verifier_eval import MAX_NEW_TOKENS

    folder = bundled_path("verifier-thinking-rl")
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "training.json"} <= {
        p.name for p in folder.iterdir()}
    info = json.loads((folder / "training.json").read_text())
    assert info["made_from"] == "verifier-base" and info["recipe"]["seed"] == 0
    card = json.loads((MODELS_DIR / "verifier_rl_eval.json").read_text())
    assert (folder / "README.md").read_text() == verifier_rl_card(info, card)  # the card is the eval's, regenerable
    assert "1 of 4 seeds" in (folder / "README.md").read_text()
    assert PAIRS["verifier-rl"][:2] == ("verifier-base", "verifier-thinking-rl")
    rl = lens.load_model("organism:verifier-thinking-rl")
    held = load_heldout()[:40]
    outs = generate(rl.hf, rl.tokenizer, [r["prompt"] for r in held], max_new_tokens=MAX_NEW_TOKENS)
    t = trace_stats(outs)
    assert t["share"]["verification"] >= 0.05 and t["checks_after_risky"] >= 0.8, t
    assert t["backtracks_after_error"] >= 0.6, t
    assert card["metrics"]["thinking_model"] == "verifier-thinking-rl"


def test_cli_eval_of_the_verifier_rl_pair_and_train_refuses_it(monkeypatch, capsys, tmp_path):
    import json

    from tests.helpers import run_cli

    code, out, err = run_cli(monkeypatch, capsys, ["organism", "eval", "--pair", "verifier-rl", "--n", 8, "--samples",
                                                   4, "--sample-problems", 4, "--json"])
    assert code == 0, err
    assert json.loads(out)["metrics"]["thinking_model"] == "verifier-thinking-rl"
    code, _, err = run_cli(monkeypatch, capsys, ["organism", "train", "--out", tmp_path / "o", "--pair", "verifier-rl"])
    assert code == 2 and "lens rl train" in err, err


def test_train_verifier_builds_both_models_and_thinking_alone_from_the_base(tmp_path):
    from lens.organism.train import PretrainConfig, SelectionConfig, train_verifier

    pre = PretrainConfig(n_docs=500, steps=2)
    sel = SelectionConfig(n_problems=8, samples_per_problem=2, rounds=1, max_new_tokens=24)
    infos = train_verifier(tmp_path, pre, sel, log=lambda *_: None)
    assert infos["verifier-base"]["recipe"]["corpus"] == "verifier"
    assert infos["verifier-thinking"]["made_from"] == "verifier-base"
    again = train_verifier(tmp_path, pre, sel, which=("verifier-thinking",), log=lambda *_: None)
    assert again["verifier-base"] == infos["verifier-base"]  # read back from the folder, not retrained
    assert lens.load_model(str(tmp_path / "verifier-thinking")).n_layers == 4
