"""RL with verifiable rewards (lens.rl, `lens rl train`): rewards on hand-written completions, the reward
TRL's GRPOTrainer sees, resume after a kill, checkpoints as model folders, and one-line errors."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from lens.errors import LensError
from lens.rl import REWARDS, RewardContext, get_reward, majority_wrong_labels, one_shot_by_variance, regime
from lens.rl.data import organism_train_problems
from lens.rl.rewards import score

pytestmark = pytest.mark.filterwarnings("ignore")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled"}


def r(name: str, completion: str, answer: str = "85", **row) -> float:
    return REWARDS[name](completion, {"answer": answer, **row}, RewardContext())


def test_rewards_on_hand_written_completions():
    think_right, think_wrong = "<think>47+38=85</think>A:85", "<think>47+38=84</think>A:84"
    direct_wrong, unclosed = "A:84", "<think>47+38=85"
    assert [r("correct", c) for c in (think_right, think_wrong, direct_wrong, unclosed)] == [1, 0, 0, 0]
    assert [r("format", c) for c in (think_right, think_wrong, direct_wrong, unclosed)] == [1, 1, 0, 0]
    assert [r("wrong", c) for c in (think_right, think_wrong, direct_wrong, unclosed)] == [0, 1, 1, 0]
    assert r("incorrect", direct_wrong, incorrect_answer="84") == 1
    assert r("incorrect", think_right, incorrect_answer="84") == 0
    with pytest.raises(LensError, match="incorrect label"):
        r("incorrect", direct_wrong)
    assert r("boxed", "so the answer is \\boxed{12}.", "13") == 1
    assert r("boxed", "\\boxed{} nothing", "13") == 0 and r("boxed", "12", "12") == 0
    # R1's template opens the block in the prompt: the completion only closes it
    r1 = RewardContext(prefilled=True)
    assert REWARDS["format"]("so 3.</think>\n\\boxed{3}", {"answer": "3"}, r1) == 1
    assert REWARDS["format"]("so 3.\n\\boxed{3}", {"answer": "3"}, r1) == 0


def test_random_reward_is_seeded_and_ignores_the_completion():
    ctx = RewardContext(seed=3, step=7)
    a = score(REWARDS["random"], ["A:1"] * 2000, [{"answer": "1"}] * 2000, ctx)
    b = score(REWARDS["random"], ["<think>x</think>A:2"] * 2000, [{"answer": "9"}] * 2000, ctx)
    assert a == b and 0.45 < sum(a) / len(a) < 0.55
    assert a != score(REWARDS["random"], ["A:1"] * 2000, [{"answer": "1"}] * 2000, RewardContext(seed=3, step=8))


def test_reward_names_and_custom_rewards():
    assert get_reward("lens.rl.rewards:correct")[1] is REWARDS["correct"]
    with pytest.raises(LensError, match="did you mean 'correct'"):
        get_reward("corect")
    with pytest.raises(LensError, match="cannot import"):
        get_reward("no_such_module_xyz:f")


def test_data_regimes_one_shot_choice_and_incorrect_labels():
    probs = organism_train_problems(6)
    from lens.organism import load_heldout

    held = {f"Q:{r['expression']}=?\n" for r in load_heldout()}
    assert len({p["prompt"] for p in probs}) == 6 and not held & {p["prompt"] for p in probs}
    assert regime(probs, "one", index=2) == [probs[2]] and regime(probs, "few", k=3) == probs[:3]
    with pytest.raises(LensError, match="outside"):
        regime(probs, "one", index=9)
    history = {"a": [0.0, 1.0, 0.0, 1.0], "b": [0.5, 0.5, 0.5], "c": [0.0, 0.25, 0.5]}
    assert one_shot_by_variance(history, top=3) == ["a", "c", "b"]
    rows = [{"id": "x", "answer": "5"}, {"id": "y", "answer": "7"}]
    got = majority_wrong_labels([["5", "5", "6"], ["8", "8", "7"]], rows)
    assert got == [{"id": "y", "answer": "7", "incorrect_answer": "8"}]


@pytest.fixture(scope="module")
def tiny_run_inputs():
    from lens.organism import load_heldout

    held = [{"id": f"h{i}", "prompt": r["prompt"], "answer": str(r["answer"])}
            for i, r in enumerate(load_heldout()[:6])]
    return organism_train_problems(4), held


def small_kw(**kw) -> dict:
    return {"steps": 4, "eval_every": 2, "eval_n": 6, "eval_samples": 2, "max_completion_length": 72,
            "keep_checkpoints": 3, **kw}


def small(**kw):
    from lens.rl import RLConfig

    return RLConfig(**small_kw(**kw))


def test_the_reward_trl_sees_is_the_named_function(tmp_path, tiny_run_inputs):
    from transformers import TrainerCallback

    from lens.rl import train_rl

    probs, held = tiny_run_inputs
    seen: list[tuple[int, str, dict]] = []

    def recorder(completion, problem, ctx):
        seen.append((ctx.step, completion, dict(problem)))
        return REWARDS["format"](completion, problem, ctx)

    logged: dict[int, float] = {}

    class Logged(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "rewards/recorder/mean" in logs:
                logged[state.global_step] = float(logs["rewards/recorder/mean"])

    torch.manual_seed(0)
    log = train_rl("organism:base", probs, held, recorder, small(steps=3, eval_every=3), out=tmp_path / "run",
                   callbacks=[Logged()], say=lambda m: None)
    assert len(seen) == 3 * 16 and len(logged) >= 2  # TRL logs its reward means with each step's log but the last
    for step in range(3):
        mine = [REWARDS["format"](c, p, RewardContext()) for s, c, p in seen if s == step]
        assert log["train"][step]["reward"] == pytest.approx(sum(mine) / len(mine))
        if step + 1 in logged:
            assert logged[step + 1] == pytest.approx(sum(mine) / len(mine))
    assert {p["id"] for _, _, p in seen} <= {p["id"] for p in probs}


def _saved(out) -> int:
    """The step of the last checkpoint whose log was written (0: none yet)."""
    try:
        return int(json.loads((out / "rl_log.json").read_text()).get("checkpoint") or 0)
    except (OSError, ValueError):
        return 0


def test_resume_starts_at_the_last_checkpoint_whose_log_was_written(tmp_path):
    """A kill after Trainer wrote checkpoint-4 but before lens logged it: the resume starts from checkpoint-2 (the
    newer folder may be half-written, and the log lacks its step's records)."""
    from lens.rl.grpo import _last_checkpoint

    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{" if step == 4 else "{}")
    assert _last_checkpoint(tmp_path, 2).name == "checkpoint-2"
    assert _last_checkpoint(tmp_path, 4).name == "checkpoint-4"
    assert _last_checkpoint(tmp_path, 0) is None  # no checkpoint was logged: start again


def test_resume_after_a_kill_gives_the_same_log_and_weights(tmp_path, tiny_run_inputs):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from lens.rl import train_rl

    probs, held = tiny_run_inputs

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.global_step == 2:
                raise KeyboardInterrupt("killed after the step-2 checkpoint")

    quiet = {"say": lambda m: None}
    a = train_rl("organism:base", probs, held, "correct", small(), out=tmp_path / "a", **quiet)
    with pytest.raises(KeyboardInterrupt):
        train_rl("organism:base", probs, held, "correct", small(), out=tmp_path / "b", callbacks=[Kill()], **quiet)
    assert json.loads((tmp_path / "b" / "rl_log.json").read_text())["status"] == "running"
    b = train_rl("organism:base", probs, held, "correct", small(), out=tmp_path / "b", **quiet)
    wa, wb = load_file(tmp_path / "a" / "final" / "model.safetensors"), load_file(tmp_path / "b" / "final" /
                                                                                  "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    def strip(log):
        return [{k: v for k, v in e.items() if k != "seconds"} for e in log["evals"]]

    assert strip(a) == strip(b) and a["train"] == b["train"]
    assert a["train_accuracy_by_problem"] == b["train_accuracy_by_problem"]

    # a real SIGKILL (no finally, no flush) in another process once checkpoint-2 and its log are on disk (during step
    # 3), then resume here
    (tmp_path / "inputs.json").write_text(json.dumps([probs, held]))
    script = ("import json, sys, torch; from lens.rl import RLConfig, train_rl; "
              "probs, held = json.load(open(sys.argv[1])); "
              f"torch.set_num_threads({torch.get_num_threads()}); "  # as here: the sums' order depends on it
              f"torch.manual_seed(0); train_rl('organism:base', probs, held, 'correct', RLConfig(**{small_kw()!r}), "
              "out=sys.argv[2], say=lambda m: None)")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "inputs.json"), str(tmp_path / "c")],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while _saved(tmp_path / "c") < 2:
            assert proc.poll() is None, f"the run ended before its step-2 checkpoint: {proc.stderr.read()[-500:]}"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((tmp_path / "c" / "rl_log.json").read_text())["status"] == "running"
    torch.manual_seed(0)
    c = train_rl("organism:base", probs, held, "correct", small(), out=tmp_path / "c", **quiet)
    wc = load_file(tmp_path / "c" / "final" / "model.safetensors")
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    assert strip(a) == strip(c) and a["train"] == c["train"]
    # the same call on a finished run does nothing; other settings are refused
    assert train_rl("organism:base", probs, held, "correct", small(), out=tmp_path / "b", **quiet)["status"] == "done"
    with pytest.raises(LensError, match="other settings"):
        train_rl("organism:base", probs, held, "format", small(), out=tmp_path / "b", **quiet)

    # --overwrite starts again in the run's folder: its own checkpoints and model replaced, the user's files kept
    (tmp_path / "a" / "notes.txt").write_text("mine")
    again = train_rl("organism:base", probs, held, "format", small(), out=tmp_path / "a", overwrite=True, **quiet)
    assert again["meta"]["reward"] == "format" and (tmp_path / "a" / "notes.txt").read_text() == "mine"
    assert (tmp_path / "a" / "final" / "model.safetensors").is_file()

    import lens

    base = lens.load_model("organism:base")
    for folder in ("final", "checkpoint-4", "checkpoint-2"):
        m = lens.load_model(str(tmp_path / "a" / folder))
        assert m.n_layers == base.n_layers and m.fingerprint != base.fingerprint
        assert m(["Q:12+30=?\n"])[0].shape[-1] == base.vocab_size


def test_lora_checkpoints_load_merged_into_their_base(tmp_path, tiny_run_inputs):
    import lens
    from lens.models import ADAPTER_BASE_FILE
    from lens.rl import train_rl

    train_rl("organism:base", *tiny_run_inputs, "correct", small(steps=2, eval_every=1, lora_r=4), out=tmp_path / "r",
             say=lambda m: None)
    ckpt = tmp_path / "r" / "checkpoint-2"
    assert (ckpt / "adapter_model.safetensors").is_file() and not (ckpt / "config.json").exists()
    base, final = lens.load_model("organism:base"), lens.load_model(str(tmp_path / "r" / "final"))
    m = lens.load_model(str(ckpt))  # the adapter merged into the base its lens_adapter.json names
    assert m.source == "adapter" and m.extra["base"] == "organism:base"
    got, want, start = m.hf.state_dict(), final.hf.state_dict(), base.hf.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in got)  # the last checkpoint = final
    assert any(not torch.equal(got[k], start[k]) for k in got)  # and it is trained
    assert lens.load_model(str(tmp_path / "r" / "checkpoint-1")).fingerprint not in (m.fingerprint, base.fingerprint)
    half = lens.load_model(str(ckpt), dtype="bfloat16")  # the base loads as trained (float32), then the merge is cast
    assert half.dtype == torch.bfloat16 and torch.equal(half.hf.state_dict()[k := next(iter(got))], got[k].bfloat16())

    info = json.loads((ckpt / ADAPTER_BASE_FILE).read_text())
    assert info == {"base": "organism:base", "fingerprint": base.fingerprint, "dtype": "float32"}
    (ckpt / ADAPTER_BASE_FILE).write_text(json.dumps({**info, "fingerprint": "0000"}))
    with pytest.raises(LensError, match="the base changed"):
        lens.load_model(str(ckpt))
    (ckpt / "adapter_model.safetensors").unlink()
    with pytest.raises(LensError, match="no adapter_model.safetensors"):
        lens.load_model(str(ckpt))


def test_output_folder_of_other_files_is_refused(tmp_path, tiny_run_inputs):
    from lens.rl import train_rl

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(LensError, match="folder of other files"):
        train_rl("organism:base", *tiny_run_inputs, "correct", small(), out=tmp_path / "mine", say=lambda m: None)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_study_diffs_every_finished_checkpoint_against_its_start(tmp_path, tiny_run_inputs, monkeypatch):
    from lens.studies import rl_study
    from lens.studies.organism_inputs import marker_contrast

    monkeypatch.setattr(rl_study, "incorrect_labelled", lambda *a, **k: [])  # the model is never wrong: skipped
    probs, held = tiny_run_inputs
    contrast = marker_contrast(8)
    res = rl_study.run_rl_study({"base": "organism:base"}, tmp_path, heldout=held, train=probs,
                                experiments=("one_shot", "format", "incorrect"),
                                cfg=small(steps=2, eval_every=2), pass_k=0, contrast=contrast, say=lambda m: None)
    row = res["models"]["base"]
    assert row["runs"]["incorrect"]["status"] == "skipped"
    assert set(row["diffs"]) == {"one_shot", "format"}  # each finished run, none for the skipped one
    import lens

    base = lens.load_model("organism:base")
    for exp, d in row["diffs"].items():
        assert set(d) == {"weights", "activations"}
        layers = [w for w in d["weights"] if w["group"].startswith("layer")]
        assert len(layers) == base.n_layers and max(w["relative_change"] for w in layers) > 0, exp
        assert [a["site"] for a in d["activations"]] == [f"blocks.{i}.hook_resid_post" for i in range(base.n_layers)]
        assert all(-1 <= a["cosine_with_direction"] <= 1 for a in d["activations"])
    assert len(row["direction"]) == base.n_layers and all(0 <= r["auroc"] <= 1 for r in row["direction"])
    json.dumps(res)  # the study's numbers go to a JSON file as they are
    none = rl_study.run_rl_study({"base": "organism:base"}, tmp_path, heldout=held, train=probs,
                                 experiments=("one_shot",), cfg=small(steps=2, eval_every=2), pass_k=0,
                                 say=lambda m: None)  # the finished run again, no contrast: no diff
    assert "diffs" not in none["models"]["base"] and none["models"]["base"]["runs"]["one_shot"]["status"] == "done"


def lens_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lens.cli.main", *args], capture_output=True, text=True, env=ENV,
                          timeout=300)


def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys):
    from tests.helpers import run_cli

    def cli(*args):
        code, _, err = run_cli(monkeypatch, capsys, args)
        assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        return err

    assert "--regime one" in cli("rl", "train", "--out", tmp_path / "r", "--regime", "full", "--problem", "2")
    assert "unknown reward 'corect'" in cli("rl", "train", "--out", tmp_path / "r", "--reward", "corect")
    rows = tmp_path / "noanswer.jsonl"
    rows.write_text(json.dumps({"question": "1+1?"}) + "\n")
    assert "no answer field" in cli("rl", "train", "--out", tmp_path / "r", "--tasks", rows, "--heldout", rows)
    from lens.organism import bundled_path

    notok = tmp_path / "no-tokenizer"
    notok.mkdir()
    for f in ("config.json", "model.safetensors"):
        (notok / f).write_bytes((bundled_path("base") / f).read_bytes())
    assert "tokenizer" in cli("rl", "train", notok, "--out", tmp_path / "r")


def test_cli_completion_budget_fits_the_verifier_pairs_longer_traces(monkeypatch, capsys, tmp_path):
    """The verifier pair's checked traces run to ~175 tokens: `lens rl train` gives them 220 unless told otherwise."""
    import lens.rl
    from tests.helpers import run_cli

    seen: list[int] = []

    def stop(model, problems, heldout, reward, cfg, out, **kw):
        seen.append(cfg.max_completion_length)
        raise LensError("stopped before training")

    monkeypatch.setattr(lens.rl, "train_rl", stop)
    for argv in (["organism:verifier-base"], ["organism:base"], ["organism:verifier-base", "--max-new-tokens", "64"]):
        code, _, err = run_cli(monkeypatch, capsys, ["rl", "train", *argv, "--out", tmp_path / "r"])
        assert code == 2 and "stopped before training" in err
    assert seen == [220, 120, 64]


def test_cli_template_builds_the_prompts_of_a_task_file(monkeypatch, capsys, tmp_path):
    """`lens rl train --tasks FILE --template T`: every training and held-out prompt is the question through T."""
    import lens.rl
    from tests.helpers import run_cli

    rows = tmp_path / "t.jsonl"
    rows.write_text("".join(json.dumps({"question": f"{i}+{i}", "answer": str(2 * i),
                                        "split": "train" if i < 14 else "test"}) + "\n" for i in range(10, 18)))
    seen: dict = {}

    def stop(model, problems, heldout, reward, cfg, out, **kw):
        seen.update(train=[p["prompt"] for p in problems], held=[p["prompt"] for p in heldout])
        raise LensError("stopped before training")

    monkeypatch.setattr(lens.rl, "train_rl", stop)
    code, _, err = run_cli(monkeypatch, capsys, ["rl", "train", "--tasks", rows, "--regime", "full", "--template",
                                                 "Q:{question}=?\n", "--out", tmp_path / "r"])
    assert code == 2 and "stopped before training" in err
    assert seen == {"train": [f"Q:{i}+{i}=?\n" for i in range(10, 14)],
                    "held": [f"Q:{i}+{i}=?\n" for i in range(14, 18)]}


def test_cli_incorrect_reward_labels_itself_and_one_shot_from_a_run(tmp_path):
    small_run = ["--steps", "2", "--eval-every", "2", "--eval-n", "4", "--eval-samples", "0", "--generations", "2",
                 "--prompts-per-step", "2", "--max-new-tokens", "40", "--json"]
    got = lens_cli("rl", "train", "--reward", "incorrect", "--regime", "full", "--n-train", "4", "--out",
                   str(tmp_path / "inc"), *small_run)
    assert got.returncode == 0, got.stderr[-2000:]
    assert "majority-vote wrong answers" in got.stderr
    log = json.loads((tmp_path / "inc" / "rl_log.json").read_text())
    assert log["meta"]["reward"] == "incorrect" and 1 <= log["meta"]["n_problems"] <= 4
    seen = set(log["train_accuracy_by_problem"])
    one = lens_cli("rl", "train", "--regime", "one", "--one-shot-from", str(tmp_path / "inc"), "--n-train", "4",
                   "--out", str(tmp_path / "one"), *small_run)
    assert one.returncode == 0, one.stderr[-2000:]
    picked = json.loads((tmp_path / "one" / "rl_log.json").read_text())["meta"]["problems"]
    assert len(picked) == 1 and picked[0] in seen  # chosen from the earlier run's history of its problems


def test_study_cft_trains_every_model_on_the_first_models_critiques(tmp_path, tiny_run_inputs, monkeypatch):
    """The cft experiment: critiques sampled once (the first model's wrong solutions of the 1-shot problem) and
    trained into every model; its before/after evaluations, a diff of its checkpoint, and a rerun that reuses it."""
    import lens
    import lens.rl.cft as cft
    from lens.studies import rl_study
    from lens.studies.organism_inputs import marker_contrast

    probs, held = tiny_run_inputs
    calls = {"critiques": 0, "train": 0}
    real_crit, real_train = cft.organism_critiques, cft.train_cft

    def crit(*a, **k):
        calls["critiques"] += 1
        return real_crit(*a, **{**k, "n_samples": 24, "max_solutions": 8})  # fewer than the study's, for time

    def train(*a, **k):
        calls["train"] += 1
        return real_train(*a, **k)

    monkeypatch.setattr(cft, "organism_critiques", crit)
    monkeypatch.setattr(cft, "train_cft", train)
    picks = itertools.cycle([probs[0]["id"], probs[1]["id"]])  # each model's own 1-shot pick differs
    monkeypatch.setattr(rl_study, "one_shot_by_variance", lambda hist, problems: [next(picks)])
    models = {"base": "organism:verifier-base", "control": "organism:control"}
    kw = {"heldout": held, "train": probs, "experiments": ("full", "cft"), "cfg": small(steps=2, eval_every=2),
          "pass_k": 0, "say": lambda m: None}
    res = rl_study.run_rl_study(models, tmp_path, contrast=marker_contrast(8), **kw)
    assert calls == {"critiques": 1, "train": 2}
    runs = [res["models"][m]["runs"]["cft"] for m in models]
    assert all(r["status"] == "done" and r["n_problems"] == 1 for r in runs)
    assert runs[0]["n_critiques"] == runs[1]["n_critiques"] >= 1
    assert runs[0]["problems"] == runs[1]["problems"] == [probs[0]["id"]]  # the first model's problem for both
    assert [c["step"] for c in runs[0]["curve"]][0] == 0 and runs[0]["curve"][-1]["step"] > 0
    assert runs[0]["lift"] == pytest.approx(runs[0]["after"] - runs[0]["before"])
    assert runs[0]["loss"][1] < runs[0]["loss"][0]  # the critiques were learned
    assert set(res["models"]["base"]["diffs"]) == {"full", "cft"}
    assert res["models"]["base"]["diffs"]["cft"]["weights"]
    again = rl_study.run_rl_study(models, tmp_path, **kw)  # finished folders are reused, not retrained
    assert calls["train"] == 2 and again["models"]["control"]["runs"]["cft"]["after"] == runs[1]["after"]
    info_path = tmp_path / "control" / "cft" / "model" / "training.json"
    info = json.loads(info_path.read_text())
    assert info["fingerprint"] == lens.load_model("organism:control").fingerprint
    info_path.write_text(json.dumps({**info, "n_examples": info["n_examples"] + 1}))  # trained on other critiques
    with pytest.raises(LensError, match="holds a CFT model trained from another model or on other critiques"):
        rl_study.run_rl_study(models, tmp_path, **kw)

    def none(*a, **k):
        raise LensError("the model produced no wrong solution of 1+1 in 64 samples; pick a harder problem")

    monkeypatch.setattr(cft, "organism_critiques", none)
    skipped = rl_study.run_rl_study({"base": "organism:base"}, tmp_path / "other", **{**kw, "experiments": ("cft",)})
    assert skipped["models"]["base"]["runs"]["cft"] == {
        "status": "skipped", "reason": "the model produced no wrong solution of 1+1 in 64 samples; pick a harder "
                                       "problem"}


def test_study_in_its_own_process_equals_the_study_in_this_one(tmp_path, tiny_run_inputs, monkeypatch):
    """`run_alone` (what rank 0 of a launched `lens reproduce` runs): the RL study in a fresh process started
    without the launcher's variables gives the numbers the study gives here (the variables of a 2-rank job are
    set, so a child that kept them would try to join that job)."""
    from lens.studies import rl_study
    from lens.studies.rl_alone import run_alone

    _, held = tiny_run_inputs
    kw = dict(heldout=held[:4], experiments=("one_shot",), cfg=small(steps=1, eval_every=1, eval_samples=0),
              pass_k=2, pass_k_n=2, contrast=None)
    here = rl_study.run_rl_study({"base": "organism:base"}, tmp_path / "here", say=lambda m: None, **kw)
    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(k, v)
    lines = []
    there = run_alone({"base": "organism:base"}, tmp_path / "there", say=lines.append, **kw)

    def numbers(res):  # every number but where the runs were kept and how long they took
        row = res["models"]["base"]
        return {e: {k: v for k, v in r.items() if k not in ("folder", "final", "train_seconds")}
                for e, r in row["runs"].items()}, row["pass_at_k"], res["targets"]

    assert numbers(here) == numbers(there) and there["config"] == here["config"]
    assert any("one_shot" in x for x in lines)  # its progress came through
