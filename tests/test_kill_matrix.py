"""Kill matrix: SIGKILL at seeded random moments, resume, and compare bitwise with an uninterrupted run.

Each job runs in a child process that is killed a few times at random points (seeded); the same
command is then run to the end, and its artifact must equal the one an uninterrupted run makes,
byte for byte (tensors) and with no debris left beside or inside it.
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

_CAPTURE = """
import sys, torch
torch.set_num_threads(1)
from lens.tiny import tiny_model
from lens.capture import capture
texts = [f"example number {i} with some text" for i in range(160)]
capture(tiny_model("llama"), texts, ["blocks.1.hook_resid_post"], "last:2", batch_size=4, shard_rows=8,
        out=sys.argv[1], progress=False)
print("DONE")
"""

_SAE = """
import sys, torch
torch.set_num_threads(1)
from saes.config import TrainConfig
from saes.train import train_sae
g = torch.Generator().manual_seed(0)
x = torch.randn(4096, 16, generator=g)
cfg = TrainConfig(architecture="topk", d_sae=48, k=4, total_rows=256 * 250, batch_size=256, buffer_rows=1024,
                  checkpoint_every=7, seed=0)
train_sae(x, sys.argv[1], cfg, progress=False)
print("DONE")
"""

_ORGANISM = """
import sys, torch
from pathlib import Path
torch.set_num_threads(1)
from safetensors.torch import save_file
from lens.organism.train import PretrainConfig, pretrain
cfg = PretrainConfig(n_docs=200, seq_len=32, batch_size=4, steps=120, warmup=4, ckpt_every=6, hidden_size=32,
                     n_layers=2, n_heads=2, intermediate_size=64, bf16_autocast=False)
model, _, _ = pretrain("base", Path(sys.argv[1]), cfg, log=lambda *_: None)
save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"},
          str(Path(sys.argv[1]) / "final.safetensors"))
print("DONE")
"""

_REPORT = """
import sys, json
from lens.dashboards.report import Report
from lens.outputs import atomic_folder
n = 0
while True:  # rewrite the report folder again and again until killed
    n += 1
    with atomic_folder(sys.argv[1], "report") as tmp:
        (tmp / "results.json").write_text(json.dumps({"version": n, "pad": "x" * 200000}))
        Report(title=f"v{n}").write(tmp / "index.html")
        (tmp / "results.md").write_text(f"v{n}")
"""


def _run(code: str, out, kill_after: float | None) -> bool:
    """Run a child; kill it after `kill_after` seconds (None: let it finish). True when it finished."""
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], env=ENV, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out_, err = proc.communicate(timeout=kill_after if kill_after is not None else 300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return False
    assert proc.returncode == 0, err.decode()[-2000:]
    return b"DONE" in out_


def _debris(root) -> list[str]:
    bad = []
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            if name.endswith(".tmp") or ".lens-tmp-" in name:
                bad.append(os.path.join(dirpath, name))
    return bad


def _kill_then_finish(code, out, delays) -> int:
    """Kill the job after each delay in turn (until one run finishes), then finish it; the number of kills."""
    kills = 0
    for d in delays:
        if _run(code, out, d):
            break
        kills += 1
    assert _run(code, out, None)
    return kills


def test_capture_killed_at_random_points_equals_uninterrupted(tmp_path):
    rng = random.Random(19)
    ref, out = tmp_path / "ref", tmp_path / "killed"
    t0 = time.perf_counter()
    assert _run(_CAPTURE, ref, None)
    full = time.perf_counter() - t0
    assert _kill_then_finish(_CAPTURE, out, [rng.uniform(0.6, 0.95) * full for _ in range(3)]) >= 1
    from lens.capture_folder import open_capture

    a, b = open_capture(ref), open_capture(out)
    assert b.complete and a.n_rows == b.n_rows == 320
    b.summary(verify=True)
    for x, y in zip(a.load().acts.values(), b.load().acts.values(), strict=True):
        assert torch.equal(x, y)
    assert torch.equal(a.load().example, b.load().example)
    assert _debris(tmp_path) == []


def test_sae_training_killed_at_random_points_equals_uninterrupted(tmp_path):
    rng = random.Random(7)
    ref, out = tmp_path / "ref", tmp_path / "killed"
    t0 = time.perf_counter()
    assert _run(_SAE, ref, None)
    full = time.perf_counter() - t0
    assert _kill_then_finish(_SAE, out, [rng.uniform(0.5, 0.95) * full for _ in range(3)]) >= 1
    meta = json.loads((out / "lens.json").read_text())
    assert meta["complete"] and not (out / "checkpoints").exists()
    from safetensors.torch import load_file

    a, b = load_file(ref / "sae_weights.safetensors"), load_file(out / "sae_weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _debris(tmp_path) == []


def test_organism_pretraining_killed_at_random_points_equals_uninterrupted(tmp_path):
    rng = random.Random(11)
    ref, out = tmp_path / "ref", tmp_path / "killed"
    t0 = time.perf_counter()
    assert _run(_ORGANISM, ref, None)
    full = time.perf_counter() - t0
    assert _kill_then_finish(_ORGANISM, out, [rng.uniform(0.6, 0.95) * full for _ in range(3)]) >= 1
    from safetensors.torch import load_file

    a, b = load_file(ref / "final.safetensors"), load_file(out / "final.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _debris(tmp_path) == []


def test_report_folder_killed_while_rewritten_is_old_or_new(tmp_path):
    rng = random.Random(3)
    out = tmp_path / "report"
    for _ in range(4):
        assert not _run(_REPORT, out, rng.uniform(2.0, 4.0))
        assert sorted(os.listdir(out)) == ["index.html", "results.json", "results.md"]
        v = json.loads((out / "results.json").read_text())["version"]
        assert (out / "results.md").read_text() == f"v{v}"
        assert f"<title>v{v}" in (out / "index.html").read_text() or f"v{v}" in (out / "index.html").read_text()


def test_lock_dies_with_a_killed_writer(tmp_path):
    out = tmp_path / "cap"
    proc = subprocess.Popen([sys.executable, "-c", _CAPTURE, str(out)], env=ENV, start_new_session=True)
    deadline = time.time() + 120
    while not (out / "manifest.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # killed while holding the lock
    proc.wait()
    assert _run(_CAPTURE, out, None)  # the next writer is not refused by a stale lock
