"""Data-parallel capture: N processes under torchrun vs one process, one torch thread each.

    python benchmarks/distributed.py [--texts 3000] [--procs 2] [--repeats 3]

Captures every resid_post of a tiny random Llama (4 layers, width 128) for `--texts` inputs to disk,
once in one process and once under `torchrun --nproc-per-node N` (gloo), and prints the capture's own
wall time in each (the slowest rank's, between barriers; process start-up and model building are
left out and printed apart) and the speed-up. Median of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_JOB = """
import json, sys, time, torch
torch.set_num_threads(1)
from lens.distributed import barrier, init
from lens.tiny import tiny_model
from lens.capture import capture
r = init()
model = tiny_model("llama", d_model=128)
texts = [f"example {i}: " + "some words to read, " * (2 + i % 7) for i in range(int(sys.argv[2]))]
barrier()
t0 = time.perf_counter()
capture(model, texts, [f"blocks.{i}.hook_resid_post" for i in range(4)], "all", batch_size=8, out=sys.argv[1],
        progress=False)
barrier()
if r.main:
    print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def _run(cmd: list[str], out: Path, texts: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "LENS_DIST_BACKEND": "gloo"}
    r = subprocess.run([*cmd, str(out), str(texts)], env=env, capture_output=True, text=True, check=True)
    shutil.rmtree(out)
    return json.loads(r.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=3000)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lens-bench-"))
    job = work / "job.py"
    job.write_text(_JOB)
    one, many = [], []
    try:
        for _ in range(a.repeats):
            one.append(_run([sys.executable, str(job)], work / "one", a.texts))
            many.append(_run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                              str(a.procs), str(job)], work / "many", a.texts))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    s1, sn = statistics.median(one), statistics.median(many)
    print(json.dumps({"texts": a.texts, "procs": a.procs, "one_process_s": round(s1, 2),
                      f"{a.procs}_processes_s": round(sn, 2), "speedup": round(s1 / sn, 2),
                      "runs_one": [round(x, 2) for x in one], "runs_many": [round(x, 2) for x in many]}))


if __name__ == "__main__":
    main()
