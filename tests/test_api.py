"""The one-import facade: `import lens` gives the verbs, `lens.run` and `Model.__call__` agree with HF and capture."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import lens
from lens import LensError

SITES = ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]
TEXTS = ["Q:12+34=?\n", "Q:1+2+3=?\n<think>1+2", "Q:5+5=?\nA:10"]
VERBS = ["load_model", "load_pair", "capture", "capture_to_disk", "open_capture", "run", "Activations",
         "diff_of_means", "Direction", "Intervention", "Where", "steer", "generate", "hooks", "cot_decode",
         "hybrid_generate", "train_sae", "load_sae", "rank_features"]


@pytest.fixture(scope="module")
def organism():
    return lens.load_model("organism:base")


def test_every_verb_is_reachable_from_one_import_and_listed_in_help():
    for name in VERBS:
        assert callable(getattr(lens, name)), name
        assert name in dir(lens) and name in lens.__doc__, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lens.nope  # noqa: B018


def test_import_lens_does_not_import_saes_or_the_studies():
    code = "import sys, lens; print(sorted(m for m in sys.modules if m == 'saes' or m.startswith('lens.studies')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_model_call_gives_hf_logits_for_a_text_and_a_list(organism):
    m = organism
    one = m(TEXTS[1])
    ref = m.hf(**m.tokenizer(TEXTS[1], return_tensors="pt")).logits[0].detach()
    assert one.shape == ref.shape and torch.equal(one, ref)
    many = m(TEXTS)  # right-padded batch, absolute positions: each row as alone, up to float rounding
    assert [t.shape[0] for t in many] == [len(m.tokenizer(t)["input_ids"]) for t in TEXTS]
    for t, got in zip(TEXTS, many, strict=True):
        torch.testing.assert_close(got, m(t), rtol=1e-4, atol=1e-4)
    ids = m.tokenizer(TEXTS[0])["input_ids"]
    assert torch.equal(m(ids), m(TEXTS[0]))  # token ids read as given


def test_run_gives_logits_and_the_rows_capture_gives(organism):
    m = organism
    logits, acts = lens.run(m, TEXTS, SITES, "all", batch_size=2)
    ref = lens.capture(m, TEXTS, SITES, "all", batch_size=2, progress=False)
    for s in SITES:
        assert torch.equal(acts[s], ref[s])
    assert torch.equal(acts.example, ref.example) and torch.equal(acts.start, ref.start)
    for t, got in zip(TEXTS, logits, strict=True):
        torch.testing.assert_close(got, m(t), rtol=1e-4, atol=1e-4)
    _, last = lens.run(m, TEXTS, SITES[0], "last_prompt")
    assert torch.equal(last[SITES[0]], lens.capture(m, TEXTS, SITES[0], "last_prompt", progress=False)[SITES[0]])


def test_capture_to_disk_is_its_own_verb(organism, tmp_path):
    with pytest.raises(LensError, match="capture_to_disk"):
        lens.capture(organism, TEXTS, SITES, out=tmp_path / "c")
    folder = lens.capture_to_disk(organism, TEXTS, SITES, "all", out=tmp_path / "c", progress=False)
    assert isinstance(folder, lens.CaptureFolder)
    again = lens.open_capture(tmp_path / "c")
    mem = lens.capture(organism, TEXTS, SITES, "all", progress=False)
    assert again.n_rows == len(mem)


def test_readme_example_runs_and_steering_opens_thinking(tmp_path):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "readme.py"
    script.write_text(block)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith("<think>")  # the direction, added at the last prompt token, opens a trace
