"""Property tests for the artifact readers: arbitrary bytes and mutated valid files never escape as a
traceback (only LensError), and a file that loads is consistent with its own metadata."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lens import LensError
from lens.capture_folder import open_capture, read_jsonl
from lens.directions import Direction, load_direction
from lens.interventions import Intervention, Where
from lens.interventions.spec import load_interventions, save_interventions
from saes.io import load_sae

SITE = "blocks.1.hook_resid_post"
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def valid(tiny, tmp_path_factory):
    """One valid artifact of each kind, copied fresh for every example."""
    from lens.capture_folder import capture_to_disk
    from saes.config import TrainConfig
    from saes.train import train_sae

    root = tmp_path_factory.mktemp("valid")
    model = tiny("llama")
    cap = capture_to_disk(model, [f"text {i} here" for i in range(12)], [SITE], "last:2", out=root / "capture",
                  shard_rows=8, progress=False)
    Direction(SITE, torch.randn(64), model.facts(), "diff_of_means", name="r").save(root / "direction")
    save_interventions(root / "spec", [Intervention(SITE, torch.ones(64), 2.0, Where.first_step())])
    train_sae(cap, root / "sae", TrainConfig(architecture="topk", d_sae=32, k=4, total_rows=512, batch_size=64,
                                             buffer_rows=128, checkpoint_every=0), progress=False)
    return root


def _fresh(valid: Path, kind: str) -> Path:
    dst = Path(tempfile.mkdtemp(prefix="lens-prop-")) / kind
    shutil.copytree(valid / kind, dst)
    return dst


def _mutate(data: bytes, how: str, at: float, byte: int) -> bytes:
    if not data:
        return bytes([byte])
    i = min(int(at * len(data)), len(data) - 1)
    if how == "truncate":
        return data[:i]
    if how == "flip":
        return data[:i] + bytes([data[i] ^ (byte or 1)]) + data[i + 1:]
    if how == "insert":
        return data[:i] + bytes([byte]) + data[i:]
    return data[:i] + data[i + 1:]  # delete


MUTATION = st.tuples(st.sampled_from(["truncate", "flip", "insert", "delete"]), st.floats(0, 1), st.integers(0, 255))


def _read_capture(path: Path) -> None:
    folder = open_capture(path)
    folder.summary(verify=True)
    acts = folder.load()
    assert acts[SITE].shape == (folder.n_rows, folder.d_model)
    assert len(acts.example) == folder.n_rows


def _read_direction(path: Path) -> None:
    d = load_direction(path)
    meta = json.loads((path / "direction.json").read_text())
    assert d.vector.numel() == meta["d_model"] and torch.isfinite(d.vector).all()


def _read_spec(path: Path) -> None:
    items = load_interventions(path)
    for i in items:
        assert torch.isfinite(i.vector).all()


def _read_sae(path: Path) -> None:
    d = load_sae(path)
    assert d.sae.W_dec.shape == (d.d_sae, d.d_in)


READERS = {"capture": (_read_capture, ["manifest.json", "shard-00000.safetensors"]),
           "direction": (_read_direction, ["direction.json", "direction.safetensors"]),
           "spec": (_read_spec, ["spec.json", "vectors.safetensors"]),
           "sae": (_read_sae, ["cfg.json", "lens.json", "sae_weights.safetensors"])}


def _only_lens_errors(fn, path: Path) -> None:
    try:
        fn(path)
    except LensError as e:
        assert "\n" not in str(e) and str(e)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


@pytest.mark.parametrize("kind", list(READERS))
@SETTINGS
@given(which=st.integers(0, 2), mutation=MUTATION)
def test_mutated_files_load_consistently_or_fail_with_one_line(valid, kind, which, mutation):
    fn, files = READERS[kind]
    path = _fresh(valid, kind)
    f = path / files[which % len(files)]
    f.write_bytes(_mutate(f.read_bytes(), *mutation))
    _only_lens_errors(fn, path)


@pytest.mark.parametrize("kind", list(READERS))
@SETTINGS
@given(which=st.integers(0, 2), data=st.binary(max_size=300))
def test_arbitrary_bytes_fail_with_one_line(valid, kind, which, data):
    fn, files = READERS[kind]
    path = _fresh(valid, kind)
    (path / files[which % len(files)]).write_bytes(data)
    _only_lens_errors(fn, path)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)


JSON_FILE = {"capture": "manifest.json", "direction": "direction.json", "spec": "spec.json", "sae": "lens.json"}


@pytest.mark.parametrize("kind", list(JSON_FILE))
@SETTINGS
@given(key=st.text(max_size=10), pick=st.integers(0, 10**6), value=JSON_VALUES, drop=st.booleans())
def test_edited_json_fields_fail_with_one_line(valid, kind, key, pick, value, drop):
    fn, _ = READERS[kind]
    path = _fresh(valid, kind)
    f = path / JSON_FILE[kind]
    meta = json.loads(f.read_text())
    keys = sorted(meta) + [key]
    target = keys[pick % len(keys)]
    if drop and target in meta:
        del meta[target]
    else:
        meta[target] = value
    f.write_text(json.dumps(meta))
    _only_lens_errors(fn, path)


@SETTINGS
@given(lines=st.lists(st.binary(max_size=40) | JSON_VALUES.map(json.dumps).map(str.encode), max_size=6))
def test_jsonl_reader_never_escapes(lines):
    from lens.selection import Example

    folder = Path(tempfile.mkdtemp(prefix="lens-prop-"))
    try:
        f = folder / "in.jsonl"
        f.write_bytes(b"\n".join(lines))
        try:
            for item in read_jsonl(f):
                Example.of(item)
        except LensError as e:
            assert "\n" not in str(e)
    finally:
        shutil.rmtree(folder)
