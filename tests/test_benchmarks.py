"""The benchmark entry points run end to end on tiny models (smoke tests; timings are not asserted)."""

import math

from benchmarks.capture import capture_rows
from benchmarks.steering import hybrid_rows, random_configs, steering_rows
from lens.tiny import tiny_model


def test_capture_rows_cover_lens_and_the_peers():
    rows = capture_rows(tiny_model("llama", d_model=64, n_layers=2), n_texts=4, batch_size=2, repeats=1)
    names = [r["method"] for r in rows]
    assert names[0] == "bare HF forward (token ids)" and rows[0]["time_vs_bare"] == 1.0
    for want in ("lens capture, token ids (memory)", "lens capture, token ids (to disk)",
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
