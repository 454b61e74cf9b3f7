"""Directions: contrastive means find a planted direction; artifacts check width and source."""

import pytest
import torch

from lens import LensError
from lens.capture_memory import capture
from lens.directions import auroc, diff_of_means, load_direction, one_vs_rest, pca_of_differences
from lens.directions.separability import separability_by_layer

SITE = "blocks.1.hook_resid_post"


def _planted(n=200, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    true = torch.randn(d, generator=g)
    true /= true.norm()
    neg = torch.randn(n, d, generator=g)
    pos = torch.randn(n, d, generator=g) + 2.0 * true
    return true, {SITE: pos}, {SITE: neg}


def test_diff_of_means_recovers_planted_direction():
    true, pos, neg = _planted()
    d = diff_of_means(SITE, pos, neg, normalize=True)
    assert float(d.vector @ true) > 0.9
    assert d.info["n_pos"] == 200 and abs(d.norm - 1) < 1e-5
    pcs = pca_of_differences(SITE, pos, neg)
    assert pcs[0].vector.shape == (32,)


def test_one_vs_rest_and_auroc():
    g = torch.Generator().manual_seed(1)
    centres = torch.eye(8)[:3] * 4
    x = torch.cat([torch.randn(50, 8, generator=g) + c for c in centres])
    labels = ["a"] * 50 + ["b"] * 50 + ["c"] * 50
    dirs = one_vs_rest(SITE, {SITE: x}, labels, normalize=True)
    assert sorted(dirs) == ["a", "b", "c"]
    assert int(dirs["b"].vector.argmax()) == 1
    assert auroc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert auroc(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])) == 0.5
    with pytest.raises(LensError, match="two labels"):
        one_vs_rest(SITE, {SITE: x}, ["a"] * 150)


def test_separability_per_layer_on_a_model(tiny):
    model = tiny("llama")
    pos = capture(model, ["<think>12+34=46</think>"] * 6 + ["<think>5+5=10</think>"] * 6,
                  [SITE, "blocks.3.hook_resid_post"], "all", progress=False)
    neg = capture(model, ["A:46 is it"] * 6 + ["A:10 done"] * 6, [SITE, "blocks.3.hook_resid_post"], "all",
                  progress=False)
    rows = separability_by_layer([SITE, "blocks.3.hook_resid_post"], pos, neg)
    assert [r["site"] for r in rows] == [SITE, "blocks.3.hook_resid_post"]
    assert all(0.0 <= r["auroc"] <= 1.0 for r in rows)


def test_direction_artifact_round_trip_and_checks(tiny, tmp_path):
    model = tiny("llama")
    acts = capture(model, ["Q:1+2=?", "hello"], SITE, "last_prompt", progress=False)
    d = diff_of_means(SITE, acts[SITE][:1], acts[SITE][1:], name="toy")
    d.model = model.facts()
    d.save(tmp_path / "d")
    back = load_direction(tmp_path / "d", model)
    assert torch.equal(back.vector, d.vector) and back.site == SITE and back.name == "toy"
    other = tiny("gpt2")  # same width (64), other weights: a warning
    with pytest.warns(UserWarning, match="was made on"):
        load_direction(tmp_path / "d", other)
    from lens.tiny import tiny_model

    wide = tiny_model("llama", d_model=128)
    with pytest.raises(LensError, match="width 64 .* d_model 128"):
        load_direction(tmp_path / "d", wide)
    (tmp_path / "d" / "direction.safetensors").write_bytes(b"garbage")
    with pytest.raises(LensError, match="corrupt or truncated"):
        load_direction(tmp_path / "d")


def test_optimised_vector_lowers_target_cross_entropy(tiny):
    from lens.directions.optimise import optimise_category_vectors

    model = tiny("llama")
    pairs = {"wait": [("Q:12+34=?\n<think>12+34=47", " wait 46"), ("Q:5+6=?\n<think>5+6=12", " wait 11")],
             "done": [("Q:1+2=?\n<think>1+2=3", "</think>A:3")]}
    bias, cats = optimise_category_vectors(model, pairs, SITE, steps=30, lr=0.1)
    assert bias.info["loss_after"] < bias.info["loss_before"] - 0.2
    assert cats["wait"].info["with_bias"] and cats["wait"].info["loss_after"] < cats["wait"].info["loss_before"]
    assert all(p.requires_grad for p in model.hf.parameters())  # the user's flags are restored


def test_pair_diff_weights_and_activations():
    from lens.pair_diff import activation_diff, weight_diff
    from lens.tiny import tiny_model

    base = tiny_model("llama", n_layers=2)
    tuned = tiny_model("llama", n_layers=2)
    with torch.no_grad():
        w = tuned.hf.model.layers[1].mlp.down_proj.weight
        w[:4] += 0.5  # change 4 rows of one matrix in layer 1 only
    rows = {r["group"]: r for r in weight_diff(base, tuned)}
    assert rows["layer 00"]["relative_change"] == 0 and rows["layer 00"]["fraction_changed"] == 0
    changed = 4 * w.shape[1]
    assert rows["layer 01"]["fraction_changed"] == pytest.approx(changed / rows["layer 01"]["parameters"])
    site = "blocks.1.hook_resid_post"
    d = {site: torch.ones(base.d_model)}
    acts = activation_diff(base, tuned, ["Q:1+2=?", "hello"], ["blocks.0.hook_resid_post", site], directions=d)
    assert acts[0]["mean_diff_norm"] == 0 and acts[1]["mean_diff_norm"] > 0
    assert -1 <= acts[1]["cosine_with_direction"] <= 1


def test_the_site_comes_first_and_the_old_order_is_refused_in_one_line():
    from lens.directions import Direction
    from lens.errors import LensError

    pos, neg = torch.randn(6, 8) + 1, torch.randn(6, 8)
    d = diff_of_means(SITE, pos, neg)
    assert d.site == SITE and torch.allclose(d.vector, pos.mean(0) - neg.mean(0))
    for call, usage in ((lambda: diff_of_means(pos, neg, SITE), "diff_of_means(site, pos, neg)"),
                        (lambda: pca_of_differences(pos, neg, SITE), "pca_of_differences(site, pos, neg)"),
                        (lambda: one_vs_rest(pos, ["a", "b"] * 3, SITE), "one_vs_rest(site, acts, labels)"),
                        (lambda: separability_by_layer({SITE: pos}, {SITE: neg}, [SITE]), "separability_by_layer"),
                        (lambda: Direction(d.vector, SITE, {}, "m"), "Direction(site, vector, model, method)")):
        with pytest.raises(LensError) as e:
            call()
        assert usage in str(e.value) and "comes first" in str(e.value) and "\n" not in str(e.value)
