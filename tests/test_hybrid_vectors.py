"""The hybrid's vectors: step pairs, optimised vectors that fit the thinking model's steps, saved and reused."""

import json

import pytest
import torch

from lens.errors import LensError
from lens.hybrid.vectors import load_vectors, optimised_vectors, save_vectors, step_pairs, vectors_folder
from lens.outputs import kind_of

TRACES = [{"prompt": "Q:1+2+3=?\n", "completion": "<think>1+2+3=3+3=6</think>A:6",
           "spans": [[17, 23, "restate"], [23, 27, "computation"], [27, 29, "computation"]]},
          {"prompt": "Q:4+5=?\n", "completion": "<think>4+5=9</think>A:9", "spans": [[15, 18, "restate"]]}]
SITE = "blocks.1.hook_resid_post"


def test_step_pairs_split_each_trace_at_its_steps():
    pairs = step_pairs(TRACES)
    full = TRACES[0]["prompt"] + TRACES[0]["completion"]
    assert pairs["computation"] == [(full[:23], full[23:27]), (full[:27], full[27:29])]
    assert [t for _, t in pairs["restate"]] == [full[17:23], "4+5"]
    relabelled = step_pairs(TRACES, ["a", "b", "a", "b"])
    assert sorted(relabelled) == ["a", "b"] and len(relabelled["a"]) == 2
    assert step_pairs(TRACES, max_pairs=1, seed=3) == step_pairs(TRACES, max_pairs=1, seed=3)
    assert all(len(v) == 1 for v in step_pairs(TRACES, max_pairs=1).values())
    with pytest.raises(LensError, match="3 step labels for 4"):
        step_pairs(TRACES, ["a", "b", "c"])


@pytest.fixture(scope="module")
def organism():
    from lens.models import load_model

    return load_model("organism:base")


def test_optimised_vectors_lower_the_loss_of_the_thinking_steps(organism):
    bias, cats, info = optimised_vectors(organism, TRACES * 2, SITE, steps=6, lr=0.1, batch_size=4)
    assert set(cats) == {"restate", "computation"} and bias.shape == (organism.d_model,)
    for name, (before, after) in info["loss"].items():
        assert after < before, name
    assert info["n_pairs"] == {"computation": 4, "restate": 4}


def test_hybrid_vectors_means_in_the_selectors_order_through_a_folder(organism, tmp_path):
    from lens.hybrid.vectors import hybrid_vectors

    think, direct = ["Q:1+2=?\nT:"] * 2, ["Q:1+2=?\nD:"] * 2
    labels = ["b", "a", "a", "b"]
    b1, c1, i1 = hybrid_vectors(organism, TRACES, SITE, think, direct, step_labels=labels, order=["b", "a"],
                                folder=tmp_path / "v")
    assert list(c1) == ["b", "a"] and i1["method"] == "means" and i1["vectors_folder"] == "saved"
    b2, c2, i2 = hybrid_vectors(organism, TRACES, SITE, think, direct, step_labels=labels, order=["b", "a"],
                                folder=tmp_path / "v")
    assert i2["vectors_folder"] == "loaded" and torch.equal(b1, b2) and list(c2) == ["b", "a"]
    assert all(torch.equal(c1[k], c2[k]) for k in c1)
    with pytest.raises(LensError, match="no labelled step"):
        hybrid_vectors(organism, TRACES, SITE, think, direct, step_labels=labels, order=["a", "b", "c"])


def test_vectors_are_saved_once_and_reused(organism, tmp_path):
    made = []

    def make():
        made.append(1)
        return torch.ones(organism.d_model), {"x": torch.full((organism.d_model,), 2.0)}, {"method": "means"}

    folder = tmp_path / "vec"
    b1, c1, i1 = vectors_folder(folder, organism, SITE, "means", ["x"], make)
    assert i1["vectors_folder"] == "saved" and kind_of(folder) == "vectors"
    b2, c2, i2 = vectors_folder(folder, organism, SITE, "means", ["x"], make)
    assert i2["vectors_folder"] == "loaded" and len(made) == 1
    assert torch.equal(b1, b2) and torch.equal(c1["x"], c2["x"])
    for method, site, names, what in (("optimised", SITE, ["x"], "method"), ("means", "blocks.0.hook_resid_post",
                                                                              ["x"], "site"),
                                      ("means", SITE, ["y"], "categories")):
        with pytest.raises(LensError, match=what):
            load_vectors(folder, organism, site, method, names)


def test_vectors_of_another_model_or_a_users_folder_are_refused(organism, tmp_path):
    from lens.tiny import tiny_model

    other = tiny_model("llama", n_layers=2, d_model=organism.d_model)
    folder = tmp_path / "vec"
    save_vectors(folder, other, SITE, "means", torch.ones(organism.d_model), {"x": torch.ones(organism.d_model)}, {})
    with pytest.raises(LensError, match="not on"):
        load_vectors(folder, organism, SITE, "means", ["x"])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(LensError):
        save_vectors(mine, organism, SITE, "means", torch.ones(organism.d_model), {}, {})
    assert (mine / "notes.txt").read_text() == "keep" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    with pytest.raises(LensError, match="unknown vector method"):
        vectors_folder(None, organism, SITE, "pca", [], lambda: None)


def test_lens_hybrid_optimised_vectors_are_kept_and_reused(capsys, monkeypatch, tmp_path):
    import json

    from tests.helpers import run_cli

    args = ["hybrid", "--n", "3", "--max-new-tokens", "40", "--vectors", "optimised", "--vector-steps", "2",
            "--vectors-dir", tmp_path / "vec", "--json"]
    code, out, err = run_cli(monkeypatch, capsys, args)
    assert code == 0, err
    first = json.loads(out)
    assert first["vectors"]["method"] == "optimised" and first["vectors"]["vectors_folder"] == "saved"
    assert kind_of(tmp_path / "vec") == "vectors"
    code, out, err = run_cli(monkeypatch, capsys, args)
    second = json.loads(out)
    assert code == 0 and second["vectors"]["vectors_folder"] == "loaded"
    assert second["runs"] == first["runs"]  # the same vectors give the same study
    (tmp_path / "file").write_text("mine")
    code, _, err = run_cli(monkeypatch, capsys, [*args[:-3], "--vectors-dir", tmp_path / "file", "--json"])
    assert code != 0 and "--vectors-dir" in err and "Traceback" not in err
    assert (tmp_path / "file").read_text() == "mine"
    code, _, err = run_cli(monkeypatch, capsys, ["reproduce", "--out", tmp_path / "r", "--steps", "hybrid",
                                                 "--hybrid-vectors-dir", tmp_path / "file"])
    assert code != 0 and "--hybrid-vectors-dir" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "file").read_text() == "mine" and not (tmp_path / "r").exists()


def test_hybrid_steerable_experiment_counts_disagreements(tmp_path, script):
    """experiments/hybrid_steerable.py on a few traces: every disagreement is counted once per kind, each share is
    a count of those positions, and the JSON is written."""
    exp = script("experiments/hybrid_steerable.py")
    out = tmp_path / "s.json"
    res = exp.main(["--n", "2", "--vectors", "means", "--scales", "1,3", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    kinds = res["methods"]["means"]
    assert kinds and "<think>" in kinds  # the verifier base never opens the reasoning on its own
    assert kinds["<think>"]["positions"] == 2
    for k in kinds.values():
        n = k["positions"]
        assert sum(v for key, v in k.items() if key.startswith("selected:")) == n
        assert all(0 <= k.get(f"{w} x{s}", 0) <= n for w in ("selected", "any", "bias") for s in ("1", "3"))
        assert k.get("selected x1", 0) <= k.get("any x1", 0) + k.get("bias x1", 0)  # selected: a category or none
    by_layer = exp.main(["--n", "2", "--vectors", "means", "--scales", "1,3", "--layers", "2,1"])
    assert [r["site"] for r in by_layer["layers"]] == ["blocks.2.hook_resid_post", "blocks.1.hook_resid_post"]
    assert by_layer["layers"][1] == {k: v for k, v in res.items() if k != "seconds"}  # each layer as --layer gives it
