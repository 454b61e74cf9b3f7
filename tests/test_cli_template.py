"""`--template` on the commands that read prompts (capture, SAE training and evaluation, reproduce): the
templated input is what the model reads."""

from __future__ import annotations

import json

from helpers import run_cli

TEMPLATE = "Q:{question}=?\\n"  # the organism's prompt form, as a format string (\n as typed on a command line)


def test_capture_template_equals_writing_the_templated_text(monkeypatch, capsys, tmp_path):
    raw, full = tmp_path / "raw.jsonl", tmp_path / "full.jsonl"
    raw.write_text("".join(json.dumps({"text": q}) + "\n" for q in ("47+38", "12+9+40")))
    full.write_text("".join(json.dumps({"text": f"Q:{q}=?\n"}) + "\n" for q in ("47+38", "12+9+40")))
    sites = ["--sites", "blocks.1.hook_resid_post", "--select", "last_prompt", "--json"]
    code, _, err = run_cli(monkeypatch, capsys, ["capture", "-i", raw, "-o", tmp_path / "a", "--template",
                                                 "Q:{question}=?\n", *sites])
    assert code == 0, err
    code, _, err = run_cli(monkeypatch, capsys, ["capture", "-i", full, "-o", tmp_path / "b", *sites])
    assert code == 0, err
    from lens.capture_folder import open_capture

    a, b = open_capture(tmp_path / "a"), open_capture(tmp_path / "b")
    assert a.manifest["n_rows"] == b.manifest["n_rows"] == 2
    import torch

    assert torch.equal(a.load()["blocks.1.hook_resid_post"], b.load()["blocks.1.hook_resid_post"])


def test_template_refuses_token_ids_and_spans(monkeypatch, capsys, tmp_path):
    ids = tmp_path / "ids.jsonl"
    ids.write_text(json.dumps({"input_ids": [1, 21, 18]}) + "\n")
    code, _, err = run_cli(monkeypatch, capsys, ["capture", "-i", ids, "-o", tmp_path / "c", "--template", "plain",
                                                 "--sites", "blocks.1.hook_resid_post"])
    assert code == 2 and "not to token ids" in err and len(err.strip().splitlines()) == 1


def test_sae_train_and_eval_template_equal_the_templated_text(monkeypatch, capsys, tmp_path):
    raw, full = tmp_path / "raw.jsonl", tmp_path / "full.jsonl"
    qs = [f"{10 + i}+{20 + i}" for i in range(24)]
    raw.write_text("".join(json.dumps({"text": q}) + "\n" for q in qs))
    full.write_text("".join(json.dumps({"text": f"Q:{q}=?\n"}) + "\n" for q in qs))
    common = ["-m", "organism:base", "--site", "blocks.1.hook_resid_post", "--expansion", "2", "--k", "4",
              "--total-rows", "256", "--batch-size", "64", "--buffer-rows", "128", "--json"]
    code, out, err = run_cli(monkeypatch, capsys, ["sae", "train", "-i", raw, "-o", tmp_path / "a", "--template",
                                                   TEMPLATE.replace("\\n", "\n"), *common])
    assert code == 0, err
    code, out2, err = run_cli(monkeypatch, capsys, ["sae", "train", "-i", full, "-o", tmp_path / "b", *common])
    assert code == 0, err
    from safetensors.torch import load_file

    a, b = (load_file(next((tmp_path / n).glob("*.safetensors"))) for n in ("a", "b"))
    import torch

    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the same rows, the same SAE
    evals = []
    for texts, extra in ((raw, ["--template", TEMPLATE.replace("\\n", "\n")]), (full, [])):
        code, out, err = run_cli(monkeypatch, capsys, ["sae", "eval", tmp_path / "a", "-m", "organism:base",
                                                       "--texts", texts, *extra, "--json"])
        assert code == 0, err
        evals.append(json.loads(out)["spliced"])
    assert evals[0] == evals[1]
    code, _, err = run_cli(monkeypatch, capsys, ["sae", "eval", tmp_path / "a", "--texts", raw, "--template",
                                                 "plain"])
    assert code == 2 and "--model" in err and len(err.strip().splitlines()) == 1


def test_reproduce_template_equals_writing_the_templated_questions(monkeypatch, capsys, tmp_path):
    """`lens reproduce --tasks FILE --template T` samples the same completions as a file of the templated questions
    read as written (`--template identity`), and the report names the template."""
    raw, full = tmp_path / "raw.jsonl", tmp_path / "full.jsonl"
    qs = [("47+38", "85"), ("12+9+40", "61"), ("30+25", "55")]
    raw.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in qs))
    full.write_text("".join(json.dumps({"question": f"Q:{q}=?\n", "answer": a}) + "\n" for q, a in qs))
    got = []
    for path, tmpl in ((raw, TEMPLATE.replace("\\n", "\n")), (full, "identity")):
        code, out, err = run_cli(monkeypatch, capsys, [
            "reproduce", "--out", tmp_path / path.stem, "--tasks", path, "--template", tmpl, "--thinking-template",
            tmpl, "--steps", "sampling", "--n", "3", "--samples", "2", "--max-new-tokens", "8", "--json"])
        assert code == 0, err
        got.append(json.loads(out))
    (a, b) = (g["sampling"] for g in got)
    assert a["status"] == b["status"] == "ok"
    assert a["examples"] == b["examples"] and a["pass_at_k"] == b["pass_at_k"] and a["behaviour"] == b["behaviour"]
    assert a["examples"]["base"][0].startswith(("A:", "<think>"))  # the organism read its own prompt form
    assert got[0]["meta"]["pair"]["prompt_templates"]["base"] == TEMPLATE.replace("\\n", "\n")
    assert got[1]["meta"]["pair"]["prompt_templates"]["base"] == "identity"
