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
    import pydoc

    shown = pydoc.render_doc(lens, renderer=pydoc.plaintext)  # what help(lens) prints
    for name in (*VERBS, "TrainConfig"):
        assert callable(getattr(lens, name)), name
        assert name in dir(lens) and name in shown, name
    assert lens.TrainConfig is __import__("saes.config", fromlist=["TrainConfig"]).TrainConfig
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lens.nope  # noqa: B018


def test_lens_hybrid_is_the_hybrid_package_after_one_import():
    code = "import lens; print(lens.hybrid.__name__, lens.hybrid.hybrid_generate is lens.hybrid_generate)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["lens.hybrid", "True"]
    assert "hybrid" in dir(lens) and "lens.hybrid" in lens.__doc__


def test_activations_by_kind_and_layer_and_stacked(organism):
    sites = ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post", "blocks.1.hook_resid_post",
             "blocks.1.hook_mlp_out"]
    acts = lens.capture(organism, TEXTS, sites, "last", progress=False)
    assert acts.layers() == [0, 1, 2] and acts.layers("hook_mlp_out") == [1]
    assert torch.equal(acts["resid_post", 2], acts["blocks.2.hook_resid_post"])
    assert torch.equal(acts["mlp_out", 1], acts["blocks.1.hook_mlp_out"])
    stacked = acts.stack("resid_post")
    assert stacked.shape == (3, len(TEXTS), organism.d_model)
    assert all(torch.equal(stacked[i], acts["resid_post", i]) for i in range(3))
    with pytest.raises(LensError, match="did you mean resid_post"):
        acts["resid_psot", 1]  # noqa: B018
    with pytest.raises(LensError, match="no hook_attn_out site was captured"):
        acts.stack("attn_out")
    with pytest.raises(LensError, match="a pair is \\(kind, layer\\)"):
        acts["resid_post", "1"]  # noqa: B018


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
    from lens.outliers import OutlierWarning

    m = organism
    with pytest.warns(OutlierWarning):  # rows far above the median norm, as capture warns of them
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
    # a capture folder, or its path, wherever activations go: the same direction as from memory
    other = lens.capture(organism, ["Q:12+3=?\n", "Q:40+41=?\n"], SITES, "all", progress=False)
    want = lens.diff_of_means(SITES[0], mem, other).vector
    for given in (folder, str(tmp_path / "c"), tmp_path / "c"):
        torch.testing.assert_close(lens.diff_of_means(SITES[0], given, other).vector, want)


def test_readme_example_runs_and_steering_opens_thinking(tmp_path):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "readme.py"
    script.write_text(block)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith("<think>")  # the direction, added at the last prompt token, opens a trace


def test_direction_arithmetic_and_apply_equal_the_interventions_they_stand_for(organism):
    m = organism
    a1, a3 = "blocks.1.hook_resid_post", "blocks.3.hook_resid_post"
    think, direct = ["Q:T:47+38+26=?\n", "Q:T:12+9+40+7=?\n"], ["Q:D:47+38+26=?\n", "Q:D:12+9+40+7=?\n"]
    pos, neg = (lens.capture(m, p, [a1, a3], "last_prompt", progress=False) for p in (think, direct))
    d1, d3 = lens.diff_of_means(a1, pos, neg), lens.diff_of_means(a3, pos, neg)
    g = torch.Generator().manual_seed(0)
    r1 = lens.Direction(a1, torch.randn(m.d_model, generator=g), m.facts(), "random")
    assert torch.equal((d1 + r1).vector, d1.vector + r1.vector) and torch.equal((d1 - r1).vector, d1.vector - r1.vector)
    assert torch.equal((2 * d1).vector, 2 * d1.vector) and torch.equal((-d1 / 2).vector, -0.5 * d1.vector)
    assert (d1 + r1).site == a1 and "+" in (d1 + r1).name
    with pytest.raises(LensError, match="must share site"):
        d1 + d3  # noqa: B018
    where = lens.Where.last_prompt_token()
    prompts = ["Q:47+38+26+19+53=?\n", "Q:12+9=?\n"]
    with (d1 - r1 * 0.1).apply(m, 1.5, where) as h:
        got = lens.generate(m, prompts, max_new_tokens=20).texts()
    with lens.steer(m, lens.Intervention(a1, 1.5 * (d1.vector - 0.1 * r1.vector), where=where)):
        want = lens.generate(m, prompts, max_new_tokens=20).texts()
    assert got == want and h.log.positions(0)
    both = lens.Directions([d1, d3])
    with both.apply(m, 0.5, where):
        got = lens.generate(m, prompts, max_new_tokens=20).texts()
    iv = d1.intervention(0.5, where, op="project_out")  # how much, then where, as Intervention and apply order them
    assert (iv.site, iv.scale, iv.where, iv.op) == (a1, 0.5, where, "project_out")
    with pytest.raises(TypeError):
        d1.intervention(0.5, where, "add")  # the op only by name
    with pytest.raises(LensError, match="where must be a lens.Where"):
        d1.intervention(0.5, "project_out")  # an op where the position goes: refused at once, not in a forward
    with lens.steer(m, [d1.intervention(0.5, where), d3.intervention(0.5, where)]):
        want = lens.generate(m, prompts, max_new_tokens=20).texts()
    assert got == want and both.sites == [a1, a3] and torch.equal((both * 2)[a3].vector, 2 * d3.vector)
    with pytest.raises(LensError, match="two directions at"):
        lens.Directions([d1, r1])


def test_every_module_of_lens_is_reachable_after_one_import():
    import lens

    assert lens.directions.one_vs_rest is lens.one_vs_rest if hasattr(lens, "one_vs_rest") else True
    assert callable(lens.decoding.generate) and callable(lens.interventions.steer)
    with pytest.raises(AttributeError, match="no attribute 'not_a_module'"):
        lens.not_a_module  # noqa: B018
