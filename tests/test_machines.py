"""Data-parallel jobs on two machines, run as two torchrun agents on this one (`--nnodes 2`, a static rendezvous
on 127.0.0.1, each agent in its own working folder and, where it matters, its own lens cache)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TORCHRUN_ENV as ENV
from tests.helpers import capture_equal, needs_distributed, two_machines, untimed

pytestmark = needs_distributed


_JOB = """
import json, sys
import torch
torch.set_num_threads(1)
from lens.capture_folder import capture_to_disk
from lens.errors import LensError
from lens.tiny import tiny_model
from saes.config import TrainConfig
from saes.train import train_sae

texts = [f"line {i} of the inputs. " * (1 + i % 3) for i in range(100)]
model, site, shared = tiny_model("llama"), "blocks.1.hook_resid_post", sys.argv[1]
capture_to_disk(model, texts, [site], out=shared, progress=False)
refused = {}
try:  # a relative path: another folder on each machine
    capture_to_disk(model, texts, [site], out="cap", progress=False)
except LensError as e:
    refused["capture"] = str(e)
try:
    train_sae(shared, "sae", TrainConfig(architecture="topk", expansion=2, k=4, batch_size=64, total_rows=256,
                                         buffer_rows=128, checkpoint_every=0), progress=False)
except LensError as e:
    refused["sae"] = str(e)
try:  # other inputs into the shared folder, without overwrite: refused on rank 0, which stops rank 1 too
    capture_to_disk(model, texts[:50], [site], out=shared, progress=False)
except LensError as e:
    refused["other_inputs"] = str(e)
print(json.dumps(refused))
"""


def test_capture_on_two_machines(tmp_path):
    """Two torchrun agents as on two machines: into one shared folder the capture equals one process's; into a
    path each machine resolves to its own folder a capture, and a data-parallel SAE training, are refused on both
    before any rank works (rank 0 would otherwise write a complete manifest missing the other machine's rows)."""
    from lens.capture_folder import capture_to_disk
    from lens.tiny import tiny_model

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    job, shared = tmp_path / "job.py", tmp_path / "shared"
    job.write_text(_JOB)
    runs = two_machines([job, shared], [a, b])
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:] + runs[1].stderr[-2000:]
    assert json.loads((shared / "manifest.json").read_text())["parts"] == ["part-000-of-002", "part-001-of-002"]
    texts = [f"line {i} of the inputs. " * (1 + i % 3) for i in range(100)]
    capture_to_disk(tiny_model("llama"), texts, ["blocks.1.hook_resid_post"], out=tmp_path / "single", progress=False)
    capture_equal(tmp_path / "single", shared)
    for r in runs:
        refused = json.loads(r.stdout)
        assert refused.keys() == {"capture", "sae", "other_inputs"}
        assert all("is not the same folder for every process: rank 1 cannot see" in refused[k] for k in ("capture",
                                                                                                       "sae"))
        assert "holds a capture of other inputs" in refused["other_inputs"]
    assert json.loads(runs[1].stdout)["other_inputs"].startswith("rank 0 failed, so every rank stops: ")
    assert not (a / "cap").exists() and not (b / "cap").exists()  # nothing captured, nothing left
    assert not (a / "sae").exists() and not (b / "sae").exists()


_FIND = ["-m", "lens.cli.main", "find-feature", "--steer-check", "--problems", "6", "--n-random", "1",
         "--max-new-tokens", "30", "--json"]


def _found(stdout: str) -> dict:
    """find-feature's JSON without timings and without the SAE's path (each run its own cache)."""
    out = untimed(json.loads(stdout))
    out["sae"].pop("path")
    return out


def _cached_sae(cache: Path) -> Path:
    (got,) = (cache / "saes").iterdir()
    return got


def _same_files(a: Path, b: Path) -> None:
    """Folders a and b hold the same files (writer locks aside), byte for byte."""
    a_files, b_files = ([p.relative_to(x) for x in [x] for p in sorted(x.rglob("*")) if p.is_file()
                         and p.name != ".lens.lock"] for x in (a, b))
    assert Path("sae_weights.safetensors") in a_files and a_files == b_files
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in a_files)


@pytest.fixture(scope="module")
def find_feature_one(tmp_path_factory):
    """(stdout, cache) of `lens find-feature --steer-check --json` in one process with an empty cache: it trains the
    organism SAE there."""
    root = tmp_path_factory.mktemp("one-find")
    r = subprocess.run([sys.executable, *_FIND], env={**ENV, "LENS_CACHE": str(root / "cache")}, cwd=root,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout, root / "cache"


def test_cached_sae_reaches_another_machine(tmp_path, find_feature_one):
    """`lens find-feature --steer-check` on two machines, each with its own empty cache: rank 0 trains the organism
    SAE as one process does (the same weights, byte for byte: its capture and training run whole on rank 0) and it
    reaches machine B's cache byte for byte (so B does not train one of its own, whose collective calls rank 0
    would never make); the JSON equals one process's."""
    one, one_cache = find_feature_one
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    envs = [{**ENV, "LENS_CACHE": str(tmp_path / f"cache-{m}")} for m in "ab"]
    runs = two_machines(_FIND, [a, b], env=envs)
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:] + runs[1].stderr[-2000:]
    assert _found(runs[0].stdout) == _found(one) and not runs[1].stdout.strip()
    sae_a, sae_b = _cached_sae(tmp_path / "cache-a") / "sae", _cached_sae(tmp_path / "cache-b")
    same = "sae_weights.safetensors"
    assert (sae_a / same).read_bytes() == (_cached_sae(one_cache) / "sae" / same).read_bytes()
    _same_files(sae_b / "sae", sae_a)


@pytest.mark.slow
def test_stale_cached_sae_on_another_machine(tmp_path, find_feature_one):
    """Machine B's cache holds a stale copy of the SAE (other weights, a file too many) and B runs two processes
    sharing that cache: one of them receives rank 0's copy, which replaces the stale one whole."""
    one, one_cache = find_feature_one
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    got = tmp_path / "cache-b" / "saes" / _cached_sae(one_cache).name
    shutil.copytree(_cached_sae(one_cache), got)
    weights = got / "sae" / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + bytes(8))
    (got / "sae" / "checkpoints").mkdir()
    (got / "sae" / "checkpoints" / "latest.json").write_text("{}")
    envs = [{**ENV, "LENS_CACHE": str(one_cache)}, {**ENV, "LENS_CACHE": str(tmp_path / "cache-b")}]
    runs = two_machines(_FIND, [a, b], env=envs, procs=2)
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:] + runs[1].stderr[-2000:]
    assert _found(runs[0].stdout) == _found(one)
    _same_files(got / "sae", _cached_sae(one_cache) / "sae")
    assert sorted(p.name for p in got.iterdir()) == ["capture", "sae"]  # no temporary folder left beside it


_SHARE = """
import json, os, sys
from pathlib import Path
from lens.artifacts import cache_dir
from lens.distributed import first_on_rank0, init, ranks
from lens.errors import LensError

r = init()
got = {}

def boom():
    raise ValueError("boom")

def fill(name):
    d = cache_dir() / "things" / name
    (d / "sub").mkdir(parents=True)
    (d / "empty").mkdir()
    (d / "a.bin").write_bytes(bytes(range(256)) * 999)
    (d / "sub" / "b.txt").write_text("hi")
    return d

for phase, fn in (("boom", boom), ("share", lambda: fill("x")), ("unwritable", lambda: fill("y"))):
    if phase == "unwritable" and r.rank == 1:
        os.environ["LENS_CACHE"] = sys.argv[1]  # a file: no cache can be made there
    try:
        first_on_rank0(fn, cached=lambda d: d)
        d = cache_dir() / "things" / "x"
        got[phase] = sorted(str(p.relative_to(d)) for p in d.rglob("*")) + [(d / "a.bin").read_bytes().hex()[:8]]
    except (LensError, OSError, ValueError) as e:
        got[phase] = type(e).__name__ + ": " + str(e)
print(json.dumps(got))
"""


def test_failures_stop_every_rank(tmp_path):
    """On two machines with caches of their own: rank 0's failure in `first_on_rank0` is raised on every rank (rank 1
    waited for it), a cached folder with an empty sub-folder reaches machine B whole, and a rank that cannot write
    its copy stops every rank with its error (rather than leaving the others waiting at a collective call)."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (tmp_path / "not-a-folder").write_text("")
    job = tmp_path / "job.py"
    job.write_text(_SHARE)
    envs = [{**ENV, "LENS_CACHE": str(tmp_path / f"cache-{m}")} for m in "ab"]
    runs = two_machines([job, tmp_path / "not-a-folder"], [a, b], env=envs, timeout=120)
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:] + runs[1].stderr[-2000:]
    r0, r1 = (json.loads(r.stdout) for r in runs)
    assert r0["boom"] == "ValueError: boom" and r1["boom"] == "LensError: rank 0 failed, so every rank stops: " \
                                                                "ValueError: boom"
    assert r0["share"] == r1["share"] == ["a.bin", "empty", "sub", "sub/b.txt", "00010203"]
    assert r1["unwritable"].startswith(("NotADirectoryError", "FileExistsError"))
    assert r0["unwritable"].startswith("LensError: rank 1 failed, so every rank stops: ")
    assert sorted(p.name for p in (tmp_path / "cache-b" / "things").iterdir()) == ["x"]  # no temporary folder left

