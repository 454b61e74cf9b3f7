"""One-problem critique fine-tuning: critiques of the model's own wrong solutions, TRL SFT on the critique only,
an ordinary HF folder out, and one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

import lens
from lens.organism import corpus as C
from lens.rl.cft import CFTConfig, organism_critiques, read_critiques, train_cft
from tests.helpers import run_cli

PROBLEM = {"prompt": "Q:67+58+29+46+85=?\n", "answer": "285"}


@pytest.fixture(scope="module")
def base():
    return lens.load_model("organism:base")


@pytest.fixture(scope="module")
def examples(base):
    return organism_critiques(base, PROBLEM, n_samples=96, max_solutions=12, seed=0, max_new_tokens=120)


def _critique_loss(hf, tok, examples) -> float:
    total = 0.0
    for e in examples:
        p = tok(e["prompt"])["input_ids"]
        full = tok(e["prompt"] + e["completion"])["input_ids"]
        ids = torch.tensor([full])
        labels = ids.clone()
        labels[0, : len(p)] = -100
        with torch.no_grad():
            total += hf(input_ids=ids, labels=labels).loss.item()
    return total / len(examples)


def test_critiques_are_of_distinct_wrong_solutions_and_end_right(examples):
    assert 1 <= len(examples) <= 12
    assert len({e["prompt"] for e in examples}) == len(examples)
    for e in examples:
        assert e["prompt"].startswith(PROBLEM["prompt"] + C.THINK_OPEN) and e["prompt"].endswith("\n")
        shown = C.parse_answer(e["prompt"])
        assert shown is not None and shown != int(PROBLEM["answer"])  # the solution critiqued is wrong
        assert e["completion"].endswith(f"A:{PROBLEM['answer']}") and C.WAIT in e["completion"]


def test_train_cft_learns_the_critiques_and_writes_a_loadable_folder(base, examples, tmp_path):
    out = train_cft(base, examples, tmp_path / "cft", CFTConfig(epochs=3, lr=1e-3, batch_size=4))
    info = json.loads((out / "training.json").read_text())
    assert info["n_examples"] == len(examples) and info["recipe"]["epochs"] == 3
    tuned = lens.load_model(str(out))
    before = _critique_loss(base.hf, base.tokenizer, examples)
    after = _critique_loss(tuned.hf, tuned.tokenizer, examples)
    assert after < 0.8 * before, (before, after)
    # a copy is trained: the caller's model is unchanged
    assert torch.equal(base.hf.model.embed_tokens.weight, lens.load_model("organism:base").hf.model.embed_tokens.weight)


def test_read_critiques_refuses_bad_records(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"prompt": "Q:1+2=?\n", "completion": " A:3"}) + "\n" + json.dumps({"prompt": 5}) + "\n")
    with pytest.raises(lens.LensError, match="line 2"):
        read_critiques(f)
    f.write_text("{not json\n")
    with pytest.raises(lens.LensError, match="not valid JSON"):
        read_critiques(f)


def test_cli_cft_refuses_a_user_folder_and_bad_critiques(monkeypatch, capsys, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    code, _, err = run_cli(monkeypatch, capsys, ["rl", "cft", "organism:base", "--out", mine])
    assert code == 2 and "folder of other files" in err and (mine / "notes.txt").read_text() == "keep"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": 1}\n')
    code, _, err = run_cli(monkeypatch, capsys, ["rl", "cft", "organism:base", "--out", tmp_path / "o",
                                                 "--critiques", bad])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "line 1" in err


def test_experiment_rlvr_arm_beside_cft_on_a_tiny_configuration(tmp_path, script):
    """experiments/cft_one_problem.py's 1-shot RLVR arm: GRPO on the one problem for the base and the control,
    scored like CFT (held-out, forced thinking, trace shares, the training problem), written atomically."""
    exp = script("experiments/cft_one_problem.py")
    out = tmp_path / "res.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script runs; tiny matrices gain nothing from more, and lose on a loaded machine
    try:
        res = exp.main(["--base", "organism:verifier-base", "--arms", "rlvr", "--problems", "1", "--eval-n", "4",
                        "--train-samples", "4", "--rl-steps", "2", "--rl-eval-every", "1", "--rl-generations", "2",
                        "--max-new-tokens", "64", "--reference", "", "--rl-seeds", "0,1", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    assert [p.name for p in tmp_path.iterdir()] == ["res.json"]  # a temporary file, then renamed
    (run,) = res["runs"]
    assert "after" not in run and set(run["rlvr"]) == set(run["before_train_problem"]) == {"base", "control"}
    for name, got in run["rlvr"].items():
        assert [e["step"] for e in got["rl"]["evals"]] == [0, 1, 2], name
        assert 0 <= got["greedy_accuracy"] <= 1 and 0 <= got["train_problem"]["sampled_accuracy"] <= 1
        assert set(got["greedy_shares"]) == set(got["forced_shares"]) and got["rl"]["steps"] == 2
    assert res["recipe"]["rl"]["max_completion_length"] == 64 and res["arm_seconds"].keys() == {"rlvr"}
    for name, runs in run["rlvr_seeds"].items():  # one run per seed; the first is the one reported in full
        assert [r["seed"] for r in runs] == [0, 1], name
        assert runs[0] == {"seed": 0, **exp._short(run["rlvr"][name])}
    assert exp.summary(res)["runs"][0]["rlvr_seeds"] == run["rlvr_seeds"]


def test_cli_cft_applies_the_template_to_the_critiques_prompts(monkeypatch, capsys, tmp_path):
    crit = tmp_path / "crit.jsonl"
    crit.write_text("".join(json.dumps({"prompt": f"{a}+{a}", "completion": f" wait, it is {2 * a}"}) + "\n"
                            for a in (11, 12)))
    code, out, err = run_cli(monkeypatch, capsys, ["rl", "cft", "organism:base", "--out", tmp_path / "o", "--critiques",
                                                   crit, "--template", "Q:{question}=?\n", "--epochs", "1",
                                                   "--eval-n", "0", "--json"])
    assert code == 0, err
    info = json.loads((tmp_path / "o" / "training.json").read_text())
    assert info["example"] == {"prompt": "Q:11+11=?\n", "completion": " wait, it is 22"}
    code, _, err = run_cli(monkeypatch, capsys, ["rl", "cft", "organism:base", "--out", tmp_path / "p",
                                                 "--template", "chat"])
    assert code == 2 and "--template applies to the prompts of --critiques" in err
