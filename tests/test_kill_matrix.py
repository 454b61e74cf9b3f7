"""Kill matrix: each job is killed at seeded points, resumed, and compared bitwise with an uninterrupted run.

A job runs in a child process that counts its commit points (every `os.replace` and every atomic
folder exchange: the moments a file or folder of an artifact takes its place) and dies with
`os._exit` just before or just after the N-th one, N drawn from a seeded generator over the
points an uninterrupted run has (one killed run per job; three with LENS_SLOW=1). The same command then
runs to the end, and its artifact must equal the one an uninterrupted run makes, byte for byte (tensors),
with no debris left beside or inside it.
One more test kills a process group with SIGKILL while it holds a lock.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": ROOT,
       "OMP_NUM_THREADS": "1"}
KILLED = 137

_KILL_HOOK = """
import atexit, os, sys
_AT, _AFTER = int(os.environ.get("LENS_KILL_AT", "0")), os.environ.get("LENS_KILL_AFTER") == "1"
_SEEN = [0]
import lens.outputs as _O
_replace, _exchange = os.replace, _O._exchange
def _tick(fn, *a, **k):
    _SEEN[0] += 1
    if _SEEN[0] == _AT and not _AFTER:
        os._exit(137)
    out = fn(*a, **k)
    if _SEEN[0] == _AT and _AFTER:
        os._exit(137)
    return out
os.replace = lambda *a, **k: _tick(_replace, *a, **k)
_O._exchange = lambda *a, **k: _tick(_exchange, *a, **k)
atexit.register(lambda: print("COMMITS", _SEEN[0]))
"""

_CAPTURE = _KILL_HOOK + """
import torch
torch.set_num_threads(1)
from lens.tiny import tiny_model
from lens.capture_memory import capture
from lens.capture_folder import capture_to_disk
texts = [f"example number {i} with some text" for i in range(120)]
capture_to_disk(tiny_model("llama"), texts, ["blocks.1.hook_resid_post"], "last:2", batch_size=4, shard_rows=8,
        out=sys.argv[1], progress=False)
"""

_SAE = _KILL_HOOK + """
import torch
torch.set_num_threads(1)
from saes.config import TrainConfig
from saes.train import train_sae
g = torch.Generator().manual_seed(0)
x = torch.randn(4096, 16, generator=g)
cfg = TrainConfig(architecture="topk", d_sae=48, k=4, total_rows=256 * 60, batch_size=256, buffer_rows=1024,
                  checkpoint_every=7, seed=0)
train_sae(x, sys.argv[1], cfg, progress=False)
"""

_ORGANISM = _KILL_HOOK + """
import torch
from pathlib import Path
torch.set_num_threads(1)
from safetensors.torch import save_file
from lens.organism.train import PretrainConfig, pretrain, save_model
cfg = PretrainConfig(n_docs=200, seq_len=32, batch_size=4, steps=40, warmup=4, ckpt_every=6, hidden_size=32,
                     n_layers=2, n_heads=2, intermediate_size=64, bf16_autocast=False)
model, tok, info = pretrain("base", Path(sys.argv[1]), cfg, log=lambda *_: None)
info.pop("train_seconds")
save_model(model, tok, Path(sys.argv[1]) / "base", info)
"""

_REPORT = _KILL_HOOK + """
import json
from lens.dashboards.report import Report
from lens.outputs import atomic_folder, writer_lock
for n in range(1, int(sys.argv[2]) + 1):  # rewrite the report folder n times
    with writer_lock(sys.argv[1], "report"), atomic_folder(sys.argv[1], "report") as tmp:
        (tmp / "results.json").write_text(json.dumps({"meta": {}, "version": n, "pad": "x" * 100000}))
        Report(title=f"v{n}").write(tmp / "index.html")
        (tmp / "results.md").write_text(f"v{n}")
"""


def _run(code: str, *args, kill_at: int = 0, after: bool = False) -> tuple[int, int]:
    """(exit status, commit points seen) of a child running `code` with `args`."""
    env = {**ENV, "LENS_KILL_AT": str(kill_at), "LENS_KILL_AFTER": "1" if after else "0"}
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode in (0, KILLED), r.stderr[-3000:]
    commits = [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("COMMITS")]
    return r.returncode, (commits[0] if commits else kill_at)


def _debris(root) -> list[str]:
    bad = []
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            if name.endswith(".tmp") or ".lens-tmp-" in name:
                bad.append(os.path.join(dirpath, name))
    return bad


#: killed runs per job: one in the default suite, three in the slow tier (LENS_SLOW=1)
KILLS = 3 if os.environ.get("LENS_SLOW") == "1" else 1


def _kill_matrix(code, ref, out, seed: int, kills: int = KILLS) -> int:
    """Uninterrupted run into `ref`; into `out`, `kills` runs killed at seeded commit points, then one to the
    end. Returns how many runs were killed."""
    status, total = _run(code, ref)
    assert status == 0 and total > 2
    rng = random.Random(seed)
    killed = 0
    for _ in range(kills):
        status, _ = _run(code, out, kill_at=rng.randint(1, total), after=rng.random() < 0.5)
        killed += status == KILLED
    assert _run(code, out)[0] == 0
    return killed


def test_capture_killed_at_seeded_points_equals_uninterrupted(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "killed"
    assert _kill_matrix(_CAPTURE, ref, out, seed=19) >= 1
    from lens.capture_folder import open_capture

    a, b = open_capture(ref), open_capture(out)
    assert b.complete and a.n_rows == b.n_rows == 240
    b.summary(verify=True)
    for x, y in zip(a.load().acts.values(), b.load().acts.values(), strict=True):
        assert torch.equal(x, y)
    assert torch.equal(a.load().example, b.load().example)
    assert _debris(tmp_path) == []


def test_sae_training_killed_at_seeded_points_equals_uninterrupted(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "killed"
    assert _kill_matrix(_SAE, ref, out, seed=7) >= 1
    meta = json.loads((out / "lens.json").read_text())
    assert meta["complete"] and not (out / "checkpoints").exists()
    from safetensors.torch import load_file

    a, b = load_file(ref / "sae_weights.safetensors"), load_file(out / "sae_weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _debris(tmp_path) == []


def test_organism_pretraining_killed_at_seeded_points_equals_uninterrupted(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "killed"
    assert _kill_matrix(_ORGANISM, ref, out, seed=11) >= 1
    from safetensors.torch import load_file

    a, b = load_file(ref / "base" / "model.safetensors"), load_file(out / "base" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _debris(tmp_path) == []


def test_report_folder_killed_while_rewritten_is_old_or_new(tmp_path):
    rng = random.Random(3)
    out = tmp_path / "report"
    assert _run(_REPORT, out, 1)[0] == 0
    for _ in range(4):
        status, _ = _run(_REPORT, out, 3, kill_at=rng.randint(1, 6), after=rng.random() < 0.5)  # 2 commits a version
        assert status == KILLED
        assert sorted(os.listdir(out)) == [".lens.lock", "index.html", "results.json", "results.md"]
        v = json.loads((out / "results.json").read_text())["version"]
        assert (out / "results.md").read_text() == f"v{v}" and f"v{v}" in (out / "index.html").read_text()
    assert _run(_REPORT, out, 1)[0] == 0  # the next writer clears what the killed ones left beside it
    assert _debris(tmp_path) == []


def test_lock_dies_with_a_killed_writer(tmp_path):
    out = tmp_path / "cap"
    code = _CAPTURE.replace("texts = [", "import time\ntime.sleep(0)\ntexts = [")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "manifest.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # killed while holding the lock
    proc.wait()
    assert _run(_CAPTURE, out)[0] == 0  # the next writer is not refused by a stale lock
