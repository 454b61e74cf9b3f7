"""Nothing lens reads is ever unpickled: a pickle that runs code, planted in every place lens reads
(organism and SAE training checkpoints, model folders and the hub cache, capture folders, directions,
SAE folders), either is ignored while the legitimate data loads, or gives a one-line LensError; the
code in the pickle never runs. Resuming from the safetensors + JSON checkpoints is bitwise exact."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import io  # noqa: E402
import json  # noqa: E402
import pickle  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from lens.errors import LensError  # noqa: E402


class _Payload:
    """Unpickling this creates the file `marker` (through the builtin `open`): proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class Evil:
    """A marker path and two pickles that create it when loaded: plain pickle and torch.save's zip format."""

    def __init__(self, marker: Path):
        self.marker = marker
        self.raw = pickle.dumps(_Payload(marker))
        buf = io.BytesIO()
        torch.save({"weight": _Payload(marker)}, buf)
        self.torch = buf.getvalue()

    def plant(self, path: Path, torch_format: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.torch if torch_format else self.raw)

    def refused(self, fn, match: str | None = None) -> str:
        """`fn()` raises a one-line LensError (no other exception type) and the payload did not run."""
        with pytest.raises(LensError) as err:
            fn()
        msg = str(err.value)
        assert msg and "\n" not in msg, msg
        if match:
            assert match in msg, msg
        assert not self.marker.exists()
        return msg


@pytest.fixture
def evil(tmp_path):
    return Evil(tmp_path / "MARKER")


def test_the_payloads_do_run_code_when_unpickled(evil):
    """The planted bytes are live: plain unpickling and torch.load(weights_only=False) both run them."""
    pickle.loads(evil.raw)
    assert evil.marker.exists()
    evil.marker.unlink()
    torch.load(io.BytesIO(evil.torch), weights_only=False)
    assert evil.marker.exists()


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- organism pretraining checkpoints (out_dir/.ckpt) ----------------------------------------------------------

def _pre():
    from lens.organism.train import PretrainConfig

    return PretrainConfig(n_docs=100, seq_len=32, batch_size=2, steps=3, warmup=1, ckpt_every=2, hidden_size=16,
                          n_layers=1, n_heads=2, intermediate_size=32, bf16_autocast=False)


def _pretrain(out: Path, logs: list | None = None):
    from lens.organism.train import pretrain

    model, _, _ = pretrain("base", out, _pre(), log=(logs.append if logs is not None else lambda *_: None))
    return model.state_dict()


class _Stop(Exception):
    pass


@pytest.fixture(scope="module")
def organism_run(tmp_path_factory):
    """(weights of an uninterrupted run, a folder whose checkpoint is at step 2 of 3)."""
    import lens.organism.train as T

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("organism")
    full = _pretrain(root / "full")
    save = T._save_checkpoint

    def save_then_stop(*args, **kwargs):
        save(*args, **kwargs)
        raise _Stop

    T._save_checkpoint = save_then_stop
    try:
        with pytest.raises(_Stop):
            _pretrain(root / "cut")
    finally:
        T._save_checkpoint = save
    return full, root / "cut"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_organism_resume_is_bitwise_and_checkpoint_holds_no_pickle(organism_run, tmp_path):
    full, cut = organism_run
    assert sorted(p.name for p in (cut / ".ckpt").iterdir()) == ["base-step-0000002.safetensors", "base.json"]
    out, logs = _copy(cut, tmp_path / "cut"), []
    assert _same(_pretrain(out, logs), full)
    assert any("resuming at step 2" in str(m) for m in logs)
    assert sorted(p.name for p in (out / ".ckpt").iterdir()) == ["base-step-0000003.safetensors", "base.json"]


def test_organism_old_pickle_checkpoint_is_ignored_with_a_warning(organism_run, evil, tmp_path):
    full, cut = organism_run
    evil.plant(tmp_path / "fresh" / ".ckpt" / "base.pt", torch_format=True)  # alone: training starts over
    with pytest.warns(UserWarning, match="never loads"):
        assert _same(_pretrain(tmp_path / "fresh"), full)
    out = _copy(cut, tmp_path / "cut")
    evil.plant(out / ".ckpt" / "base.pt", torch_format=True)  # next to a real checkpoint: that one is used
    with pytest.warns(UserWarning, match="never loads"):
        assert _same(_pretrain(out), full)
    assert not evil.marker.exists()


@pytest.mark.parametrize("target", ["base.json", "base-step-0000002.safetensors"])
def test_organism_checkpoint_replaced_by_a_pickle_is_refused(organism_run, evil, tmp_path, target):
    out = _copy(organism_run[1], tmp_path / "cut")
    evil.plant(out / ".ckpt" / target)
    evil.refused(lambda: _pretrain(out))


def test_organism_pointer_to_a_pickle_is_refused(organism_run, evil, tmp_path):
    out = _copy(organism_run[1], tmp_path / "cut")
    pointer = out / ".ckpt" / "base.json"
    head = json.loads(pointer.read_text())
    pointer.write_text(json.dumps({**head, "tensors": "base.pt"}))
    evil.plant(out / ".ckpt" / "base.pt", torch_format=True)
    with pytest.warns(UserWarning):
        evil.refused(lambda: _pretrain(out), match="not a .safetensors file")


# ---- SAE training checkpoints (out/checkpoints/step-N) ---------------------------------------------------------

SMALL = dict(d_sae=48, k=3, total_rows=6144, batch_size=128, buffer_rows=1024, checkpoint_every=8, lr=1e-2)
CHECKPOINT_FILES = ["state.json", "trainer_state.json", "trainer_state.safetensors", "training_sae.safetensors"]


def _rows(n=4096, d=16, m=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(m, d, generator=g), dim=1)
    return ((torch.rand(n, m, generator=g) < 0.06).float() * (1 + torch.rand(n, m, generator=g))) @ dirs


def _weights(path: Path) -> dict:
    from saes.io import load_sae

    return load_sae(path).sae.state_dict()


@pytest.fixture(scope="module")
def sae_run(tmp_path_factory):
    """(rows, config, weights of an uninterrupted run, its folder, a folder stopped at step 10)."""
    from saes.config import TrainConfig
    from saes.train import train_sae

    root = tmp_path_factory.mktemp("sae")
    x, cfg = _rows(), TrainConfig(**SMALL)
    full = train_sae(x, root / "full", cfg, progress=False)
    train_sae(x, root / "cut", cfg, progress=False, stop_after=10)
    return x, cfg, _weights(full.path), full.path, root / "cut"


def _step_dir(out: Path) -> Path:
    (ck,) = (out / "checkpoints").glob("step-*")
    return ck


def test_sae_checkpoint_holds_no_pickle(sae_run):
    cut = sae_run[4]
    assert sorted(p.name for p in (cut / "checkpoints").iterdir()) == ["latest.json", "step-0000010"]
    assert sorted(p.name for p in _step_dir(cut).iterdir()) == CHECKPOINT_FILES


@pytest.mark.parametrize("architecture", ["standard", "topk"])
def test_sae_resume_restores_the_whole_trainer_state_bitwise(tmp_path, architecture):
    """Warm-up and decay LR schedules, the L1 coefficient scheduler, the normalisation factor, Adam and the
    sparsity counters all come back exactly: the resumed run ends with the same bits."""
    from saes.config import TrainConfig
    from saes.train import train_sae

    x = _rows(seed=1)
    cfg = TrainConfig(**{**SMALL, "architecture": architecture, "lr_warm_up_steps": 5, "lr_decay_steps": 10,
                         "lr_end": 2e-3, "normalize": "expected_average_only_in", "feature_sampling_window": 8,
                         "dead_feature_window": 4, "l1_coefficient": 0.05})
    full = train_sae(x, tmp_path / "full", cfg, progress=False)
    train_sae(x, tmp_path / "cut", cfg, progress=False, stop_after=13)
    done = train_sae(x, tmp_path / "cut", cfg, progress=False)
    assert done.resumed_from == 13
    assert _same(_weights(full.path), _weights(done.path))
    assert [e for e in done.log if e["step"] != 13] == full.log  # the stopped run also logged its last step


def test_sae_old_pickle_trainer_state_is_never_read(sae_run, evil, tmp_path):
    from saes.train import train_sae

    x, cfg, full, _, cut = sae_run
    out = _copy(cut, tmp_path / "cut")
    evil.plant(_step_dir(out) / "trainer_state.pt", torch_format=True)  # beside the real state: ignored
    assert _same(_weights(train_sae(x, out, cfg, progress=False).path), full)
    assert not evil.marker.exists()
    out = _copy(cut, tmp_path / "old")
    (_step_dir(out) / "trainer_state.json").unlink()  # a checkpoint of the pickle era: refused
    evil.plant(_step_dir(out) / "trainer_state.pt", torch_format=True)
    evil.refused(lambda: train_sae(x, out, cfg, progress=False), match="never loads")


@pytest.mark.parametrize("target", ["latest.json", *CHECKPOINT_FILES])
def test_sae_checkpoint_file_replaced_by_a_pickle_is_refused(sae_run, evil, tmp_path, target):
    from saes.train import train_sae

    x, cfg, _, _, cut = sae_run
    out = _copy(cut, tmp_path / "cut")
    evil.plant(out / "checkpoints" / target if target == "latest.json" else _step_dir(out) / target)
    evil.refused(lambda: train_sae(x, out, cfg, progress=False))


def test_sae_checkpoint_pointer_outside_the_checkpoints_is_refused(sae_run, evil, tmp_path):
    from saes.train import train_sae

    x, cfg, _, _, cut = sae_run
    out = _copy(cut, tmp_path / "cut")
    (out / "checkpoints" / "latest.json").write_text(json.dumps({"checkpoint": "../elsewhere", "step": 10}))
    evil.refused(lambda: train_sae(x, out, cfg, progress=False), match="folder of other files")


def test_saved_sae_folder_file_replaced_by_a_pickle(sae_run, evil, tmp_path):
    """Every file of a saved SAE folder: the SAE still loads with its own weights, or a LensError."""
    from saes.io import load_sae

    _, _, full, path, _ = sae_run
    names = sorted(p.name for p in path.iterdir() if p.is_file())
    assert "sae_weights.safetensors" in names and "cfg.json" in names
    for name in names:
        out = _copy(path, tmp_path / name)
        evil.plant(out / name)
        try:
            loaded = load_sae(out).sae.state_dict()
        except LensError as e:
            assert "\n" not in str(e), str(e)
        else:
            assert _same(loaded, full), name
        assert not evil.marker.exists(), name


# ---- model folders and the hub cache -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A saved tiny model (safetensors + tokenizer) and its fingerprint."""
    from lens.tiny import tiny_model

    m = tiny_model("llama", n_layers=1, d_model=16)
    folder = tmp_path_factory.mktemp("model")
    m.hf.save_pretrained(folder)
    m.tokenizer.save_pretrained(folder)
    return folder, m.fingerprint


def _config_only(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / name, dst / name)
    return dst


@pytest.mark.parametrize("weights", ["pytorch_model.bin", "model.pt", "model.pth", "model.ckpt"])
def test_model_folder_with_only_pickle_weights_is_refused(model_folder, evil, tmp_path, weights):
    from lens import load_model

    folder = _config_only(model_folder[0], tmp_path / "m")
    evil.plant(folder / weights, torch_format=True)
    msg = evil.refused(lambda: load_model(str(folder)), match="only pickle weights")
    assert "safetensors" in msg


def test_model_folder_pickle_next_to_safetensors_is_never_read(model_folder, evil, tmp_path):
    from lens import load_model

    folder = _copy(model_folder[0], tmp_path / "m")
    evil.plant(folder / "pytorch_model.bin", torch_format=True)
    assert load_model(str(folder)).fingerprint == model_folder[1]
    assert not evil.marker.exists()
    evil.refused(lambda: load_model(str(folder), use_safetensors=False), match="use_safetensors")


def test_model_folder_safetensors_replaced_by_a_pickle_is_refused(model_folder, evil, tmp_path):
    from lens import load_model

    folder = _copy(model_folder[0], tmp_path / "m")
    evil.plant(folder / "model.safetensors")
    evil.refused(lambda: load_model(str(folder)), match="damaged or not safetensors")


def test_model_config_naming_a_pickle_weights_file_is_refused(model_folder, evil, tmp_path):
    from lens import load_model

    folder = _copy(model_folder[0], tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "transformers_weights": "adapter_model.bin"}))
    evil.plant(folder / "adapter_model.bin", torch_format=True)
    evil.refused(lambda: load_model(str(folder)), match="not safetensors")


def test_hub_snapshot_with_only_pickle_weights_is_refused(model_folder, evil, tmp_path):
    """A hub id whose cached snapshot holds only pytorch_model.bin (offline: the cache is all there is)."""
    from lens import load_model

    repo = tmp_path / "hub" / "models--someone--tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots").mkdir()
    _config_only(model_folder[0], repo / "snapshots" / commit)
    evil.plant(repo / "snapshots" / commit / "pytorch_model.bin", torch_format=True)
    evil.refused(lambda: load_model("someone/tiny", cache_dir=str(tmp_path / "hub")), match="never unpickles")


def test_bundled_organism_still_loads():
    from lens import load_model

    m = load_model("organism:base")
    assert m.source == "bundled" and m.n_layers == 4


# ---- capture folders and directions --------------------------------------------------------------------------

def test_capture_folder_files_replaced_by_a_pickle_are_refused(tiny, evil, tmp_path):
    from lens.capture_folder import capture_to_disk, open_capture

    site = "blocks.1.hook_resid_post"
    folder = capture_to_disk(tiny("llama"), ["a short text", "another one"], [site], out=tmp_path / "c", progress=False)
    shard = tmp_path / "c" / folder.manifest["shards"][0]["file"]
    evil.plant(shard)
    evil.refused(lambda: open_capture(tmp_path / "c").load())
    evil.refused(lambda: open_capture(tmp_path / "c")[site])
    evil.plant(tmp_path / "c" / "manifest.json")
    evil.refused(lambda: open_capture(tmp_path / "c"))


@pytest.mark.parametrize("target", ["direction.safetensors", "direction.json"])
def test_direction_files_replaced_by_a_pickle_are_refused(evil, tmp_path, target):
    from lens.directions import load_direction
    from lens.directions.artifact import Direction

    d = Direction("blocks.0.hook_resid_post", torch.randn(16), {"spec": "tiny"}, "diff_of_means")
    d.save(tmp_path / "d")
    assert torch.equal(load_direction(tmp_path / "d").vector, d.vector)
    evil.plant(tmp_path / "d" / target)
    evil.refused(lambda: load_direction(tmp_path / "d"))


# ---- the state codec itself --------------------------------------------------------------------------------

def test_state_round_trip_is_exact(tmp_path):
    from lens.statefile import read_state, write_state

    w = torch.randn(3, 4)
    state = {"a": w, "tied": w, "view": w[1], "n": 3, "x": 0.1 + 0.2, "t": (0.9, 0.95), "none": None,
             "flags": [True, False], "nan": float("nan"), "inf": -float("inf"), 7: {"__odd": "key"},
             "step": torch.tensor(5.0), "empty": torch.zeros(0), "half": torch.randn(2, dtype=torch.bfloat16)}
    write_state(tmp_path / "s.json", state, "s.safetensors")
    back = read_state(tmp_path / "s.json")
    assert set(back) == set(state)
    assert back["tied"] is back["a"] and torch.equal(back["a"], w) and torch.equal(back["view"], w[1])
    assert back["n"] == 3 and back["x"] == 0.1 + 0.2 and back["t"] == (0.9, 0.95) and back["none"] is None
    assert back["flags"] == [True, False] and back["inf"] == -float("inf") and back["nan"] != back["nan"]
    assert back[7] == {"__odd": "key"} and back["step"].shape == () and back["step"].item() == 5.0
    assert back["empty"].shape == (0,) and torch.equal(back["half"], state["half"])
    with pytest.raises(TypeError):
        write_state(tmp_path / "bad.json", {"x": object()}, "bad.safetensors")
