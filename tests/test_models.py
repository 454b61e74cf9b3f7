"""Loading: folders, GGUF, bundled names, offline hub ids, comparable pairs."""

import pytest
import torch

from lens import LensError, load_model, load_pair
from lens.tiny import tiny_model


def test_local_folder_round_trip_keeps_fingerprint(tmp_path):
    model = tiny_model("qwen2", n_layers=2)
    model.hf.save_pretrained(tmp_path / "m")
    model.tokenizer.save_pretrained(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"))
    assert loaded.source == "folder" and loaded.family == "qwen2"
    assert (loaded.n_layers, loaded.d_model) == (2, 64)
    assert loaded.fingerprint == model.fingerprint
    other = tiny_model("qwen2", n_layers=2, seed=1)
    assert other.fingerprint != model.fingerprint
    ids = torch.tensor([[1, 5, 6]])
    torch.testing.assert_close(loaded.hf(ids).logits, model.hf(ids).logits)


def test_unknown_hub_id_offline_says_how_to_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LensError, match="hub is offline.*local folder"):
        load_model("nobody-here/not-a-model-xyz")


def test_bad_paths_are_named(tmp_path):
    with pytest.raises(LensError, match="does not exist"):
        load_model(str(tmp_path / "missing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LensError, match="without config.json"):
        load_model(str(tmp_path / "empty"))


def test_load_pair_says_what_differs():
    a = tiny_model("llama", n_layers=2)
    b = tiny_model("llama", n_layers=3)
    with pytest.raises(LensError, match="layers 2 vs 3"):
        load_pair(a, b)
    c = tiny_model("llama", n_layers=2, seed=3)
    assert load_pair(a, c) == (a, c)


@pytest.mark.realweights
def test_smollm2_gguf_knows_paris(smollm2):
    assert smollm2.family == "llama" and smollm2.n_layers == 30 and smollm2.d_model == 576
    ids = smollm2.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        nxt = smollm2.hf(ids).logits[0, -1].argmax()
    assert smollm2.tokenizer.decode(nxt).strip() == "Paris"
