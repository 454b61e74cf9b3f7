"""Data-parallel jobs under torchrun (2 CPU processes, gloo): the result equals one process's, bit for bit."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from lens.capture_folder import open_capture
from lens.distributed import Ranks, block, part_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1",
       "LENS_DIST_BACKEND": "gloo"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")

_JOB = """
import sys, time, torch
torch.set_num_threads(1)
from lens.tiny import tiny_model
from lens.capture import capture
texts = [f"example number {i} with some text. " * (1 + i % 3) for i in range(150)]
model = tiny_model("llama")
if len(sys.argv) > 3:  # slow every forward down, so the job can be killed midway
    model.hf.register_forward_pre_hook(lambda *a: time.sleep(0.1))
def items():
    for i, t in enumerate(texts):
        yield t
capture(model, items(), ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"], sys.argv[2],
        batch_size=4, shard_rows=40, out=sys.argv[1], progress=False)
print("DONE")
"""


def _equal(a, b) -> None:
    A, B = open_capture(a).load(), open_capture(b).load()
    assert A.acts.keys() == B.acts.keys()
    for s in A.acts:
        assert torch.equal(A[s], B[s]), s
    for key in ("example", "start", "end", "token_id"):
        assert torch.equal(getattr(A, key), getattr(B, key)), key
    assert A.labels == B.labels


def test_block_covers_every_input_once_in_order():
    for n in (0, 1, 7, 64, 65, 1000):
        for world in (1, 2, 3, 8):
            parts = [block(n, Ranks(r, world), align=8) for r in range(world)]
            assert [i for p in parts for i in p] == list(range(n))
            assert all(p.start % 8 == 0 for p in parts if len(p))
    assert part_name(Ranks(1, 4)) == "part-001-of-004"


@pytest.mark.parametrize("select", ["all", "sentences"])
def test_two_process_capture_equals_one_process(tmp_path, select):
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-c", _JOB, str(one), select], env=ENV, check=True, capture_output=True)
    job = tmp_path / "job.py"
    job.write_text(_JOB)
    r = subprocess.run([*TORCHRUN, str(job), str(two), select], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    _equal(one, two)
    folder = open_capture(two)
    assert folder.manifest["parts"] == ["part-000-of-002", "part-001-of-002"]
    assert folder.summary(verify=True)["examples"] == 150
    again = subprocess.run([*TORCHRUN, str(job), str(two), select], env=ENV, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]  # a complete run is returned as it is
    _equal(one, two)


def test_killed_job_resumes_to_the_same_folder(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-c", _JOB, str(one), "all"], env=ENV, check=True, capture_output=True)
    job = tmp_path / "job.py"
    job.write_text(_JOB)
    proc = subprocess.Popen([*TORCHRUN, str(job), str(two), "all", "slow"], env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (two / "part-000-of-002" / "manifest.json").exists():
        time.sleep(0.1)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)  # every rank and the launcher
    proc.wait()
    assert not (two / "manifest.json").exists() or not json.loads((two / "manifest.json").read_text()).get("complete")
    parts = [json.loads(m.read_text()) for m in two.glob("part-*/manifest.json")]
    assert parts and not all(p["complete"] for p in parts)  # killed midway
    r = subprocess.run([*TORCHRUN, str(job), str(two), "all"], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    _equal(one, two)


def test_cli_capture_under_torchrun_reports_once(tmp_path):
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"text": f"line {i} of the inputs"}) + "\n" for i in range(40)))
    out = tmp_path / "cap"
    r = subprocess.run([*TORCHRUN, "-m", "lens.cli.main", "capture", "-i", str(inputs), "-o", str(out),
                        "-s", "blocks.1.hook_resid_post", "--select", "last_prompt", "--json"],
                       env=ENV, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('"rows"') == 1  # one report, from rank 0
    assert json.loads(r.stdout)["rows"] == 40
    single = tmp_path / "single"
    r1 = subprocess.run([sys.executable, "-m", "lens.cli.main", "capture", "-i", str(inputs), "-o", str(single),
                         "-s", "blocks.1.hook_resid_post", "--select", "last_prompt", "--json"],
                        env=ENV, capture_output=True, text=True, cwd=tmp_path)
    assert r1.returncode == 0, r1.stderr[-3000:]
    _equal(single, out)
    shutil.rmtree(out)
