"""The CLI: commands work on a local model folder, print JSON with --json, and fail with one line."""

import json

import pytest

from lens.tiny import tiny_model
from tests.helpers import run_cli


def run(capsys, monkeypatch, *args):
    return run_cli(monkeypatch, capsys, args)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny"
    m = tiny_model("llama", n_layers=2)
    m.hf.save_pretrained(path)
    m.tokenizer.save_pretrained(path)
    return path


def test_capture_info_json(capsys, monkeypatch, tmp_path, folder):
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"prompt": "Q:1+2=?\\n", "completion": "A:3"}\n"just text"\n{"input_ids": [1, 5, 7]}\n')
    code, out, _ = run(capsys, monkeypatch, "capture", "-m", folder, "-i", inputs, "-s", "blocks.1.hook_resid_post",
                       "--select", "last_prompt", "-o", tmp_path / "cap", "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["rows"] == 3 and summary["complete"] and summary["sites"] == ["blocks.1.hook_resid_post"]
    code, out, _ = run(capsys, monkeypatch, "info", tmp_path / "cap", "--json")
    assert code == 0 and json.loads(out)["examples"] == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "/nonexistent/folder"], "does not exist"),
        (["capture", "-m", "nobody/nothing", "-i", "IN", "-o", "OUT"], "hub is offline"),
        (["capture", "-m", "MODEL", "-i", "IN", "-s", "blocks.9.hook_resid_post", "-o", "OUT"], "out of range"),
        (["capture", "-m", "MODEL", "-i", "IN", "-s", "blocks.1.hook_resid", "-o", "OUT"], "unknown site"),
        (["capture", "-m", "MODEL", "-i", "EMPTY", "-o", "OUT"], "empty"),
        (["capture", "-m", "MODEL", "-i", "BAD", "-o", "OUT"], "not valid JSON"),
        (["hybrid", "--base", "MODEL", "--thinking", "MODEL"], "give --tasks"),
        (["--dtype", "float8", "capture", "-m", "MODEL", "-i", "IN", "-o", "OUT"], "unknown dtype 'float8'"),
        (["--device", "gpu0", "capture", "-m", "MODEL", "-i", "IN", "-o", "OUT"], "unknown device 'gpu0'"),
        (["--device", "cuda:99", "steer", "-m", "MODEL"], "cuda:99"),
        (["--device", "meta", "info", "OUT"], "unknown device 'meta'"),
        (["--device-map", "foo", "steer", "-m", "MODEL"], "unknown device map 'foo'"),
        (["--device", "cpu", "--device-map", "auto", "steer", "-m", "MODEL"], "not both"),
        (["--device", "cpu", "organism", "eval"], "on the CPU"),
    ],
)
def test_errors_are_one_line(capsys, monkeypatch, tmp_path, folder, args, message):
    (tmp_path / "in.jsonl").write_text('"hello"\n')
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    subs = {"IN": tmp_path / "in.jsonl", "EMPTY": tmp_path / "empty.jsonl", "BAD": tmp_path / "bad.jsonl",
            "OUT": tmp_path / "out", "MODEL": folder}
    code, out, err = run(capsys, monkeypatch, *[subs.get(a, a) for a in args])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lens: error:") and message in lines[0]
    assert "Traceback" not in err


def test_directions_steer_diff(capsys, monkeypatch, tmp_path, folder):
    pos, neg = tmp_path / "pos.jsonl", tmp_path / "neg.jsonl"
    pos.write_text("".join(json.dumps(f"Q:T:{i}+{i}=?\n") + "\n" for i in range(10, 20)))
    neg.write_text("".join(json.dumps(f"Q:D:{i}+{i}=?\n") + "\n" for i in range(10, 20)))
    code, out, _ = run(capsys, monkeypatch, "directions", "make", "-m", folder, "--pos", pos, "--neg", neg,
                       "--layer", 1, "-o", tmp_path / "dir", "--json")
    assert code == 0
    res = json.loads(out)
    assert [r["site"] for r in res["layers"]] == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert res["chosen_site"] == "blocks.1.hook_resid_post" and res["norm"] > 0
    code, out, _ = run(capsys, monkeypatch, "directions", "inspect", tmp_path / "dir", "--json")
    assert code == 0 and json.loads(out)["site"] == "blocks.1.hook_resid_post"
    code, out, _ = run(capsys, monkeypatch, "steer", "-m", folder, "--direction", tmp_path / "dir", "--scale", 30,
                       "--where", "first_step", "-p", "Q:12+3=?\\n", "-p", "ab", "--max-new-tokens", 5, "--json")
    assert code == 0
    res = json.loads(out)
    # first_step fires exactly once per prompt, at its last prompt position, at step 0
    assert sorted((f["row"], f["step"]) for f in res["fired"]) == [(0, 0), (1, 0)]
    assert [f["position"] for f in sorted(res["fired"], key=lambda f: f["row"])] == [9, 2]
    code, out, _ = run(capsys, monkeypatch, "steer", "-m", folder, "--direction", tmp_path / "dir", "--scale", 30,
                       "--where", "first_step", "-p", "12+3", "--template", "Q:{question}=?\n", "--max-new-tokens",
                       5, "--json")  # the template builds the first prompt: the same run as writing it out
    assert code == 0
    got = json.loads(out)
    assert got["results"][0] == res["results"][0] and got["fired"] == [f for f in res["fired"] if f["row"] == 0]
    code, out, _ = run(capsys, monkeypatch, "diff", folder, folder, "--json")
    assert code == 0
    assert all(r["relative_change"] == 0 for r in json.loads(out)["weights"])


def test_directions_make_from_capture_folders_equals_from_jsonl(capsys, monkeypatch, tmp_path, folder):
    sets = {name: tmp_path / f"{name}.jsonl" for name in ("pos", "neg")}
    for name, mark in (("pos", "T"), ("neg", "D")):
        sets[name].write_text("".join(json.dumps(f"Q:{mark}:{i}+{i}=?\n") + "\n" for i in range(10, 20)))
        code, _, _ = run(capsys, monkeypatch, "capture", "-m", folder, "-i", sets[name], "-s",
                         "blocks.0.hook_resid_post,blocks.1.hook_resid_post,blocks.1.hook_mlp_out", "--select",
                         "last_prompt", "-o", tmp_path / f"cap_{name}", "--json")
        assert code == 0
    code, out, _ = run(capsys, monkeypatch, "directions", "make", "-m", folder, "--pos", sets["pos"], "--neg",
                       sets["neg"], "--json")
    from_jsonl = json.loads(out)
    code, out, err = run(capsys, monkeypatch, "directions", "make", "--pos", tmp_path / "cap_pos", "--neg",
                         tmp_path / "cap_neg", "-o", tmp_path / "dir", "--json")
    assert code == 0, err
    from_folders = json.loads(out)
    assert from_folders["model"] == str(folder) and from_folders["chosen_site"] == from_jsonl["chosen_site"]
    assert [r["site"] for r in from_folders["layers"]] == [r["site"] for r in from_jsonl["layers"]]  # resid_post only
    for a, b in zip(from_folders["layers"], from_jsonl["layers"], strict=True):
        assert a["auroc"] == pytest.approx(b["auroc"]) and a["norm"] == pytest.approx(b["norm"], rel=1e-5)
    code, out, _ = run(capsys, monkeypatch, "directions", "inspect", tmp_path / "dir", "--json")
    assert json.loads(out)["model"]["spec"] == str(folder)  # the direction records the folders' model
    code, out, err = run(capsys, monkeypatch, "directions", "make", "--pos", tmp_path / "cap_pos", "--neg",
                         tmp_path / "cap_neg", "--select", "last_prompt_token", "-m", f"{folder}/.", "--json")
    assert code == 0, err  # the folders' selection and model, named another way
    assert json.loads(out)["chosen_site"] == from_jsonl["chosen_site"]
    for args, message in (
        (["--pos", tmp_path / "cap_pos", "--neg", sets["neg"]], "both as capture folders, or both as JSONL"),
        (["--pos", tmp_path / "cap_pos", "--neg", tmp_path / "cap_neg", "--template", "chat"], "drop --template"),
        (["--pos", tmp_path / "cap_pos", "--neg", tmp_path / "cap_neg", "--select", "all"], "drop --select"),
        (["--pos", tmp_path / "cap_pos", "--neg", tmp_path / "cap_neg", "--layer", 5], "layers 0, 1"),
        (["-m", "organism:base", "--pos", tmp_path / "cap_pos", "--neg", tmp_path / "cap_neg"], "drop --model"),
    ):
        code, _, err = run(capsys, monkeypatch, "directions", "make", *args)
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err


def test_hybrid_on_another_pair_with_a_task_file(capsys, monkeypatch, tmp_path, folder):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": str(2 * i)}) + "\n"
                             for i in range(40)))
    code, out, _ = run(capsys, monkeypatch, "hybrid", "--base", folder, "--thinking", folder, "--tasks", tasks,
                       "--n", 16, "--max-new-tokens", 12, "--categories", 3, "--calibrate", 2,
                       "--calibration-grid", "1", "--json")
    assert code == 0
    res = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert res["n"] == 16 and res["vectors"]["selector"] == "taxonomy" and 2 <= len(res["vectors"]["categories"]) <= 3
    assert res["hybrid"]["gap_recovered"] is None  # 0/0 (base = thinking) is written as null, not NaN
    assert res["hybrid"]["fraction_gated"] == 0.0  # one model as base and thinking never disagrees with itself
    assert res["hybrid"]["accuracy"]["value"] == res["base"]["value"]
    assert res["vectors"]["calibration"]["n"] == 2  # problems 32 and 33: after the evaluated and the traced
    assert res["settings"]["paper_pair"] is None  # not a pair of the hybrid paper: lens's defaults
    assert res["settings"]["from"] == {"steer_layer": "default", "read_layer": "steer layer", "categories": "given"}
    code, _, err = run(capsys, monkeypatch, "hybrid", "--base", folder, "--thinking", folder, "--tasks", tasks,
                       "--n", 16, "--calibrate", 9)
    assert code != 0 and "--calibrate 9 needs 9 problems" in err and len(err.strip().splitlines()) == 1, err


def test_a_pair_of_the_hybrid_paper_runs_with_the_papers_layers_and_categories(capsys, monkeypatch, tmp_path,
                                                                               folder):
    """--paper-pair NAME loads the paper's two hub ids and takes its steer layer, SAE layer and categories
    (`lens.hybrid.paper_pairs`), unless a flag gives one; a layer the model lacks is refused in one line."""
    import dataclasses

    import lens.cli.common as common
    from lens.hybrid import paper_pairs

    real = common.load
    monkeypatch.setattr(common, "load", lambda ctx, spec: dataclasses.replace(real(ctx, str(folder)), spec=spec))
    row = paper_pairs.PaperPair("tiny", "Test/Base", "test/thinking", steer_layer=1, sae_layer=0, categories=3)
    monkeypatch.setattr(paper_pairs, "PAPER_PAIRS", (row, *paper_pairs.PAPER_PAIRS))
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": str(2 * i)}) + "\n"
                             for i in range(40)))
    args = ["hybrid", "--tasks", tasks, "--n", 16, "--max-new-tokens", 12, "--json"]
    code, out, err = run(capsys, monkeypatch, *args, "--paper-pair", "tiny")
    assert code == 0, err
    res = json.loads(out)
    st = res["settings"]
    assert (st["steer_layer"], st["read_layer"], st["categories"]) == (1, 0, 3)
    assert st["from"] == {"steer_layer": "paper", "read_layer": "paper", "categories": "paper"}
    assert st["paper_pair"]["name"] == "tiny" and "configs.sh" in st["paper_pair"]["source"]
    assert res["site"] == "blocks.1.hook_resid_post" and res["read_site"] == "blocks.0.hook_resid_post"
    assert len(res["vectors"]["categories"]) <= 3
    code, out, err = run(capsys, monkeypatch, *args, "--base", "test/base", "--thinking", "TEST/Thinking",
                         "--read-layer", 1)  # the ids in any case name the pair; a flag overrides the paper's
    assert code == 0, err
    st = json.loads(out)["settings"]
    assert st["paper_pair"]["name"] == "tiny" and (st["read_layer"], st["from"]["read_layer"]) == (1, "given")
    assert (st["steer_layer"], st["from"]["steer_layer"]) == (1, "paper")
    code, _, err = run(capsys, monkeypatch, *args, "--paper-pair", "r1-math1.5b")  # steer layer 10 of 2
    assert code != 0 and "steer layer 10 (paper) is not a layer of a 2-layer model" in err, err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, monkeypatch, *args, "--paper-pair", "r1-math-1.5b")
    assert code != 0 and "no paper pair 'r1-math-1.5b'" in err and "r1-math1.5b" in err, err
    code, _, err = run(capsys, monkeypatch, *args, "--paper-pair", "tiny", "--base", folder)
    assert code != 0 and "--paper-pair names both models" in err, err


def _diff_files(tmp_path) -> dict:
    """JSONL files for `lens diff`: organism-style reasoning (T) and direct (D) prompts, and prompts to measure at."""
    files = {}
    for name, mark in (("pos", "T"), ("neg", "D")):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(f"{mark}:{a}+{a + 7}") + "\n" for a in range(10, 26)))
    files["at"] = tmp_path / "at.jsonl"
    files["at"].write_text("".join(json.dumps({"prompt": f"{a}+{a + 3}"}) + "\n" for a in range(30, 42)))
    return files


def test_diff_reads_the_bases_direction_from_capture_folders(capsys, monkeypatch, tmp_path):
    """`lens diff --pos DIR --neg DIR --prompts F`: the base's direction from its captured last-prompt rows gives
    what the same prompts as JSONL give; folders of other weights, another selection or layers are refused."""
    files = _diff_files(tmp_path)
    fmt = "Q:{question}=?\n"
    for name in ("pos", "neg"):
        for model, select, tag in (("organism:base", "last_prompt", ""), ("organism:thinking", "last_prompt", "_t"),
                                   ("organism:base", "all", "_all")):
            code, out, _ = run(capsys, monkeypatch, "capture", "-m", model, "-i", files[name], "--template", fmt, "-s",
                               "blocks.1.hook_resid_post,blocks.2.hook_resid_post", "--select", select,
                               "-o", tmp_path / f"cap_{name}{tag}", "--json")
            assert code == 0, out
    code, out, _ = run(capsys, monkeypatch, "diff", "--layer", "1", "--pos", files["pos"], "--neg", files["neg"],
                       "--prompts", files["at"], "--template", fmt, "--json")
    assert code == 0, out
    want = json.loads(out)["activations"]
    args = ["diff", "--prompts", files["at"], "--template", fmt, "--json"]
    code, out, err = run(capsys, monkeypatch, *args, "--pos", tmp_path / "cap_pos", "--neg", tmp_path / "cap_neg")
    assert code == 0, err
    got = json.loads(out)["activations"]
    assert [r["site"] for r in got] == ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]  # the layers held
    assert got[0]["cosine_with_direction"] == pytest.approx(want[0]["cosine_with_direction"], abs=1e-5)
    assert got[0]["mean_diff_norm"] == pytest.approx(want[0]["mean_diff_norm"], rel=1e-6)
    for extra, message in (
        (["--pos", tmp_path / "cap_pos_t", "--neg", tmp_path / "cap_neg_t"], "not from the base organism:base"),
        (["--pos", tmp_path / "cap_pos_all", "--neg", tmp_path / "cap_neg_all"], "capture with --select last_prompt"),
        (["--pos", tmp_path / "cap_pos", "--neg", tmp_path / "cap_neg", "--layer", "0"], "resid_post at layers 1, 2"),
        (["--pos", tmp_path / "cap_pos", "--neg", files["neg"]], "both as capture folders, or both as JSONL"),
    ):
        code, _, err = run(capsys, monkeypatch, *args, *extra)
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run(capsys, monkeypatch, "diff", "--pos", tmp_path / "cap_pos", "--neg", tmp_path / "cap_neg")
    assert code != 0 and "give --prompts" in err, err
    code, _, err = run(capsys, monkeypatch, "--dtype", "bfloat16", *args, "--pos", tmp_path / "cap_pos", "--neg",
                       tmp_path / "cap_neg")
    assert code != 0 and "in float32 and the base is loaded in bfloat16: load it as captured" in err, err
    code, _, err = run(capsys, monkeypatch, "--dtype", "bfloat16", *args, "--pos", tmp_path / "cap_pos_t", "--neg",
                       tmp_path / "cap_neg_t")  # other weights in another dtype: the dtype is not the fix
    assert code != 0 and "not from the base organism:base" in err and "load it as captured" not in err, err


def test_placement_options_reach_every_loaded_model(capsys, monkeypatch, tmp_path, folder):
    """`lens --dtype bfloat16 capture ...` loads the model in bfloat16 (recorded in the manifest)."""
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('"Q:1+2=?"\n')
    code, out, _ = run(capsys, monkeypatch, "--device", "cpu", "--dtype", "bfloat16", "capture", "-m", folder,
                       "-i", inputs, "-s", "blocks.1.hook_resid_post", "-o", tmp_path / "cap", "--json")
    assert code == 0, out
    manifest = json.loads((tmp_path / "cap" / "manifest.json").read_text())
    assert manifest["model"]["dtype"] == "bfloat16"
    code, out, _ = run(capsys, monkeypatch, "--dtype", "bfloat16", "diff", folder, folder, "--json")
    assert code == 0, out


def test_diff_takes_its_own_contrast_prompts_template_and_one_layer(capsys, monkeypatch, tmp_path):
    files = _diff_files(tmp_path)
    args = ["diff", "organism:base", "organism:thinking", "--layer", "1", "--prompts", files["at"],
            "--template", "Q:{question}=?\n", "--json"]
    code, out, _ = run(capsys, monkeypatch, *args, "--pos", files["pos"], "--neg", files["neg"])
    assert code == 0, out
    got = json.loads(out)["activations"]
    assert [r["site"] for r in got] == ["blocks.1.hook_resid_post"]  # --layer: that layer only
    code, out, _ = run(capsys, monkeypatch, *args, "--pos", files["neg"], "--neg", files["pos"])
    flipped = json.loads(out)["activations"][0]
    # the template made the organism's prompts ("T:10+17" -> "Q:T:10+17=?\n"): the direction is the user's
    # reasoning minus direct prompts, so swapping the files flips the cosine, not the shift
    assert flipped["cosine_with_direction"] == pytest.approx(-got[0]["cosine_with_direction"], abs=1e-5)
    assert flipped["mean_diff_norm"] == pytest.approx(got[0]["mean_diff_norm"], rel=1e-6)
    assert abs(got[0]["cosine_with_direction"]) > 0.05
    code, out, _ = run(capsys, monkeypatch, *args)  # the organism's own T/D contrast, the same measured prompts
    own = json.loads(out)["activations"][0]
    assert own["mean_diff_norm"] == pytest.approx(got[0]["mean_diff_norm"], rel=1e-6)
    assert own["cosine_with_direction"] * got[0]["cosine_with_direction"] > 0  # the same direction, up to sampling
    code, out, err = run(capsys, monkeypatch, "diff", "--pos", files["pos"])
    assert code != 0 and "--pos and --neg together" in out + err
    code, out, err = run(capsys, monkeypatch, "diff", "--template", "chat")
    assert code != 0 and "--template applies to --pos, --neg and --prompts" in out + err
    code, out, err = run(capsys, monkeypatch, "diff", "--pos", tmp_path / "missing.jsonl", "--neg", files["neg"])
    assert code != 0 and "missing.jsonl" in out + err
