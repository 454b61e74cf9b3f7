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


def test_gguf_parsed_once_per_load_and_everything_restored(tmp_path):
    """`lens.gguf_speed.once`: inside, a GGUF path is parsed once and each (arch, n_blocks) name map built once
    (the same objects come back); outside, gguf's own functions are back."""
    gguf = pytest.importorskip("gguf")
    from lens.gguf_speed import once

    path = tmp_path / "t.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_tensor("token_embd.weight", torch.zeros(4, 8).numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    reader, names = gguf.GGUFReader, gguf.get_tensor_name_map
    arch = gguf.MODEL_ARCH.LLAMA
    with once():
        a, b = gguf.GGUFReader(path), gguf.GGUFReader(str(path))
        assert a is b and [t.name for t in a.tensors] == ["token_embd.weight"]
        m = gguf.get_tensor_name_map(arch, 2)
        assert m is gguf.get_tensor_name_map(arch, 2) and m.mapping == names(arch, 2).mapping
        assert m is not gguf.get_tensor_name_map(arch, 3)
    assert gguf.GGUFReader is reader and gguf.get_tensor_name_map is names
    assert gguf.GGUFReader(path) is not gguf.GGUFReader(path)


@pytest.mark.realweights
def test_smollm2_gguf_knows_paris(smollm2):
    assert smollm2.family == "llama" and smollm2.n_layers == 30 and smollm2.d_model == 576
    ids = smollm2.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        nxt = smollm2.hf(ids).logits[0, -1].argmax()
    assert smollm2.tokenizer.decode(nxt).strip() == "Paris"


def test_device_map_with_offloaded_layers_reads_and_steers_the_same(tmp_path):
    """Layers placed by accelerate (two offloaded to disk, loaded at forward time): same fingerprint,
    same captured residuals, same steered generation as the model held in memory."""
    from lens.capture_memory import capture
    from lens.interventions import Intervention, Where, steer

    m = tiny_model("llama", d_model=64)
    m.hf.save_pretrained(tmp_path / "m")
    m.tokenizer.save_pretrained(tmp_path / "m")
    dm = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu", "model.layers.2": "disk",
          "model.layers.3": "disk", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    off = load_model(str(tmp_path / "m"), device_map=dm, offload_folder=str(tmp_path / "offload"))
    assert getattr(off.hf.model.layers[2], "_hf_hook", None) is not None, "layer 2 must be dispatched by accelerate"
    assert off.fingerprint == load_model(str(tmp_path / "m")).fingerprint
    sites = [f"blocks.{i}.hook_resid_post" for i in range(4)]
    a = capture(m, ["Q:12+3=?", "hello there"], sites, progress=False)
    b = capture(off, ["Q:12+3=?", "hello there"], sites, progress=False)
    for s in sites:
        assert torch.allclose(a[s], b[s], atol=1e-5), s
    iv = Intervention("blocks.2.hook_resid_post", torch.randn(64, generator=torch.Generator().manual_seed(0)) * 3,
                      where=Where.generated(0, None))
    ids = m.tokenizer(["Q:12+3=?"], return_tensors="pt")["input_ids"]
    outs = []
    for model in (m, off):
        with torch.no_grad(), steer(model, iv) as h:
            outs.append(model.hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                                          do_sample=False, pad_token_id=model.tokenizer.pad_token_id))
        p = ids.shape[1]  # generated tokens sit at P..P+5; the last one is never fed back through the model
        assert h.log.positions(0) == list(range(p, p + 5))
    assert torch.equal(outs[0], outs[1])
