"""Nothing a user owns is lost: output-path checks, one writer per folder, artifacts replaced in one step,
damaged captures found and recaptured, file modes from the umask, no temporary folders left behind."""

import os
import stat
import tempfile

import pytest
import torch

from lens import LensError
from lens.capture_folder import capture_to_disk, open_capture
from lens.capture_memory import capture
from lens.directions import Direction, load_direction
from lens.outputs import atomic_folder, check_output, writer_lock
from saes.config import TrainConfig
from saes.train import train_sae

SITE = "blocks.1.hook_resid_post"
TEXTS = [f"example {i}: some words to read" for i in range(24)]
CFG = TrainConfig(architecture="topk", d_sae=32, k=4, total_rows=2048, batch_size=128, buffer_rows=512,
                  checkpoint_every=0)


def _tree(root):
    """{relative path: (size, mtime_ns, mode)} of every file under root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            st = os.stat(p)
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))
    return out


@pytest.fixture
def cap(tiny, tmp_path):
    return capture_to_disk(tiny("llama"), TEXTS, [SITE], "all", out=tmp_path / "cap", progress=False)


def test_sae_train_refuses_paths_it_would_destroy(cap, tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("my notes")
    plain = tmp_path / "file.bin"
    plain.write_bytes(b"data")
    before = _tree(tmp_path)
    for out, msg in [(user, "folder of other files"), (plain, "not a folder"), (cap.path, "is the input"),
                     (cap.path / "sub", "is the input")]:
        with pytest.raises(LensError, match=msg):
            train_sae(cap, out, CFG, progress=False)
    assert _tree(tmp_path) == before  # nothing changed, nothing created


def test_sae_overwrite_keeps_the_users_other_files(cap, tmp_path):
    out = tmp_path / "sae"
    first = train_sae(cap, out, CFG, progress=False)
    (out / "README.txt").write_text("mine")
    assert train_sae(cap, out, CFG, progress=False).resumed_from == first.steps  # same settings: returned
    other = TrainConfig(**{**CFG.to_json(), "seed": 1})
    with pytest.raises(LensError, match="--overwrite"):
        train_sae(cap, out, other, progress=False)
    w0 = (out / "sae_weights.safetensors").read_bytes()
    train_sae(cap, out, other, progress=False, overwrite=True)
    assert (out / "README.txt").read_text() == "mine"
    assert (out / "sae_weights.safetensors").read_bytes() != w0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no debris beside it
    assert not (out / "checkpoints").exists()


def test_second_writer_is_refused_with_the_holder(tiny, cap, tmp_path):
    out = tmp_path / "busy"
    with writer_lock(out, "capture"):
        with pytest.raises(LensError, match=f"pid {os.getpid()}"):
            capture_to_disk(tiny("llama"), TEXTS, [SITE], "all", out=out, progress=False)
        with pytest.raises(LensError, match="another lens process"):
            train_sae(cap, out, CFG, progress=False)
    assert not out.exists()  # the lock's folder goes when nothing was written


def test_capture_of_other_inputs_needs_overwrite_and_keeps_user_files(tiny, cap, tmp_path):
    model = tiny("llama")
    (cap.path / "mine.txt").write_text("keep")
    with pytest.raises(LensError, match="--overwrite"):
        capture_to_disk(model, TEXTS[::-1], [SITE], "all", out=cap.path, progress=False)
    new = capture_to_disk(model, TEXTS[::-1], [SITE], "all", out=cap.path, progress=False, overwrite=True)
    ref = capture(model, TEXTS[::-1], [SITE], "all", progress=False)
    assert torch.equal(new[SITE], ref[SITE])
    assert (cap.path / "mine.txt").read_text() == "keep"
    user = tmp_path / "user"
    user.mkdir()
    (user / "a.txt").write_text("x")
    with pytest.raises(LensError, match="folder of other files"):
        capture_to_disk(model, TEXTS, [SITE], "all", out=user, progress=False, overwrite=True)


def test_damaged_shards_are_found_and_recaptured(tiny, tmp_path):
    model = tiny("llama")
    kw = dict(batch_size=4, shard_rows=16, progress=False)
    ref = capture_to_disk(model, TEXTS, [SITE], "last:2", out=tmp_path / "ref", **kw)
    for damage in ("delete", "truncate", "flip"):
        out = tmp_path / damage
        folder = capture_to_disk(model, TEXTS, [SITE], "last:2", out=out, **kw)
        assert len(folder.manifest["shards"]) >= 3
        f = out / folder.manifest["shards"][1]["file"]
        data = f.read_bytes()
        if damage == "delete":
            f.unlink()
        elif damage == "truncate":
            f.write_bytes(data[:-10])
        else:
            f.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        with pytest.raises(LensError, match="damaged"):
            open_capture(out).summary(verify=True)
        again = capture_to_disk(model, TEXTS, [SITE], "last:2", out=out, **kw)  # resume re-checks and recaptures
        assert again.complete and again.summary(verify=True)["rows"] == ref.n_rows
        assert torch.equal(again[SITE], ref[SITE]) and torch.equal(again.load().example, ref.load().example)


def test_edited_manifest_provenance_is_refused(cap):
    import json

    m = json.loads((cap.path / "manifest.json").read_text())
    m["model"]["fingerprint"] = "0" * 16
    (cap.path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(LensError, match="manifest was edited"):
        open_capture(cap.path)[SITE]
    del m["sites"]
    (cap.path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(LensError, match="'sites' is missing"):
        open_capture(cap.path)


def test_direction_is_one_atomic_step_and_refuses_overwrite(tmp_path):
    d = Direction(SITE, torch.randn(8), {"spec": "x", "fingerprint": "f"}, "diff_of_means", name="r")
    d.save(tmp_path / "d")
    (tmp_path / "d" / "mine.txt").write_text("keep")
    with pytest.raises(LensError, match="--overwrite"):
        d.save(tmp_path / "d")
    d2 = Direction(SITE, torch.randn(8), {"spec": "x", "fingerprint": "f"}, "diff_of_means", name="r2")
    d2.save(tmp_path / "d", overwrite=True)
    assert torch.equal(load_direction(tmp_path / "d").vector, d2.vector)
    assert (tmp_path / "d" / "mine.txt").read_text() == "keep"


def test_atomic_folder_leaves_old_or_new_never_neither(tmp_path):
    out = tmp_path / "a"
    with atomic_folder(out, "direction") as tmp:
        (tmp / "direction.json").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(out, "direction") as tmp:
            (tmp / "direction.json").write_text("half")
            raise RuntimeError("killed mid-write")
    assert (out / "direction.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # the temporary folder is gone


def test_files_follow_the_umask(tiny, tmp_path):
    old = os.umask(0o022)
    try:
        cap = capture_to_disk(tiny("llama"), TEXTS, [SITE], "all", out=tmp_path / "cap", progress=False)
        train_sae(cap, tmp_path / "sae", CFG, progress=False)
        d = Direction(SITE, torch.randn(8), {}, "m")
        d.save(tmp_path / "d")
        for root in (cap.path, tmp_path / "sae", tmp_path / "d"):
            for rel, (_, _, mode) in _tree(root).items():
                if not rel.endswith(".lens.lock"):
                    assert mode == 0o644, (root, rel, oct(mode))
        assert stat.S_IMODE(os.stat(tmp_path / "sae").st_mode) == 0o755
    finally:
        os.umask(old)


def test_no_temporary_folders_left_behind(monkeypatch, tmp_path):
    from lens.tiny import char_tokenizer
    from saes.taxonomy import fit_taxonomy

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("LENS_CACHE", str(tmp_path / "cache"))
    char_tokenizer()
    fit_taxonomy(torch.randn(64, 16), n_categories=3, epochs=2)
    assert list(scratch.iterdir()) == []
    assert (tmp_path / "cache" / "tokenizers").is_dir()  # the tokenizer folder lives in lens's cache


def test_check_output_allows_new_and_empty(tmp_path):
    assert check_output(tmp_path / "new", "sae") is False
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "empty", "capture") is False


def test_sae_with_nan_weights_is_refused(cap, tmp_path):
    from safetensors.torch import load_file, save_file

    from saes.io import load_sae

    train_sae(cap, tmp_path / "sae", CFG, progress=False)
    w = load_file(tmp_path / "sae" / "sae_weights.safetensors")
    w["W_dec"][0, 0] = float("nan")
    save_file(w, tmp_path / "sae" / "sae_weights.safetensors")
    with pytest.raises(LensError, match="W_dec contains NaN"):
        load_sae(tmp_path / "sae")


def test_only_lens_markers_make_an_artifact(cap, tmp_path):
    """A user's cfg.json, or a sae_lens folder without lens.json, is not a lens SAE folder."""
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "cfg.json").write_text('{"mine": 1}')
    (exp / "direction.json").write_text('{"site": "x"}')
    before = _tree(tmp_path)
    with pytest.raises(LensError, match="folder of other files"):
        train_sae(cap, exp, CFG, progress=False, overwrite=True)
    with pytest.raises(LensError, match="folder of other files"):
        Direction(SITE, torch.randn(8), {}, "m").save(exp, overwrite=True)
    assert _tree(tmp_path) == before


def test_organism_train_refuses_a_users_model_folder(tmp_path, monkeypatch, capsys):
    from lens.cli.main import main

    (tmp_path / "models" / "base").mkdir(parents=True)
    (tmp_path / "models" / "base" / "config.json").write_text("{}")
    before = _tree(tmp_path)
    monkeypatch.setattr("sys.argv", ["lens", "organism", "train", "--out", str(tmp_path / "models"),
                                     "--which", "base", "--steps", "1", "--sequential"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and ("not a model lens trained" in err or "folder of other files" in err), err
    assert _tree(tmp_path) == before


def test_paths_that_cannot_be_replaced_in_one_step_are_refused_early(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for bad in (".", str(tmp_path)):
        with pytest.raises(LensError, match="current folder"):
            check_output(bad, "direction")
    target = tmp_path / "real"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    Direction(SITE, torch.randn(8), {}, "m").save(tmp_path / "link")  # the folder the link names is written
    assert (target / "direction.json").is_file() and (tmp_path / "link").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_two_rename_fallback_is_restored_after_a_kill(tmp_path, monkeypatch):
    """Where folders cannot be exchanged atomically, a writer killed between its two renames leaves the
    old artifact aside; the next writer puts it back first, and the user's file survives."""
    import lens.outputs as O

    out = tmp_path / "d"
    Direction(SITE, torch.ones(8), {}, "m", name="old").save(out)
    (out / "mine.txt").write_text("keep")
    monkeypatch.setattr(O, "_exchange", lambda a, b: False)
    real_replace = os.replace

    def killed_between(src, dst):
        real_replace(src, dst)
        if ".lens-tmp-old-" in str(dst):
            raise KeyboardInterrupt  # the process dies after moving the old folder aside

    monkeypatch.setattr(O.os, "replace", killed_between)
    with pytest.raises(KeyboardInterrupt):
        Direction(SITE, torch.zeros(8), {}, "m", name="new").save(out, overwrite=True)
    monkeypatch.setattr(O.os, "replace", real_replace)
    assert not out.exists()
    with writer_lock(out, "direction"):  # the next writer restores before anything else
        pass
    assert load_direction(out).name == "old" and (out / "mine.txt").read_text() == "keep"
    Direction(SITE, torch.zeros(8), {}, "m", name="new").save(out, overwrite=True)
    assert load_direction(out).name == "new" and (out / "mine.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_stale_temporaries_of_other_outputs_are_never_touched(tmp_path):
    from lens.outputs import remove_stale_temps

    other = tmp_path / ".sae1.lens-tmp-0123456789ab"
    other.mkdir()
    mine = tmp_path / ".sae[16].lens-tmp-abc"
    mine.mkdir()
    remove_stale_temps(tmp_path / "sae[16]")
    assert other.exists() and not mine.exists()
