"""Data-parallel jobs: N processes under torchrun vs one process, one torch thread each.

    python benchmarks/distributed.py --job capture [--texts 3000] [--procs 2] [--repeats 3] [--json-out PATH]
    python benchmarks/distributed.py --job sampling [--problems 64] [--samples 8] [--procs 2] [--repeats 3]
    python benchmarks/distributed.py --job hybrid [--problems 32] [--procs 2] [--repeats 3]

capture: every resid_post of a tiny random Llama (4 layers, width 128) for `--texts` inputs, to disk.
sampling: `sampling_study.run` (seeded samples, pass@k, behaviour rates) of the bundled organism's base
model on `--problems` sums of 2-6 numbers x `--samples` samples (100 new tokens at most, 32 rows a
batch), split across the ranks inside `lens.distributed.data_parallel()`.
hybrid: `hybrid_organism.run` (taxonomy selector, every ablation, live_only and unsteered_allowed) on the
first `--problems` held-out problems, 8 prompts a batch; the thinking model's traces and the batches of every
run are split (`hybrid.study.run_study`), the taxonomy SAE and the vectors are built whole on every rank.

Each job runs once in one process and once under `torchrun --nproc-per-node N` (gloo); the printed
time is the job's own wall time (the slowest rank's, between barriers; process start-up, imports and model
loading left out); the sampling and hybrid jobs also check that both runs give the same result. Median of
`--repeats` runs, and the speed-up of the medians and of the fastest runs.
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
sys.path.insert(0, str(ROOT))

from benchmarks.record import add_json_out, write_json  # noqa: E402

_CAPTURE = """
import json, sys, time, torch
torch.set_num_threads(1)
from lens.distributed import barrier, init
from lens.tiny import tiny_model
from lens.capture_memory import capture
from lens.capture_folder import capture_to_disk
r = init()
model = tiny_model("llama", d_model=128)
texts = [f"example {i}: " + "some words to read, " * (2 + i % 7) for i in range(int(sys.argv[2]))]
barrier()
t0 = time.perf_counter()
capture_to_disk(model, texts, [f"blocks.{i}.hook_resid_post" for i in range(4)], "all", batch_size=8, out=sys.argv[1],
        progress=False)
barrier()
if r.main:
    print(json.dumps({"seconds": time.perf_counter() - t0}))
"""

_SAMPLING = """
import hashlib, json, random, sys, time, torch
torch.set_num_threads(1)
from lens.distributed import barrier, data_parallel
from lens.models import load_model
from lens.organism import corpus as C
from lens.studies import sampling_study
rng = random.Random(0)
problems = [[rng.randint(10, 99) for _ in range(rng.randint(2, 6))] for _ in range(int(sys.argv[2]))]
prompts = ["Q:" + "+".join(map(str, p)) + "=?\\n" for p in problems]
model = load_model("organism:base")
with data_parallel() as r:
    barrier()
    t0 = time.perf_counter()
    res = sampling_study.run({"base": model}, prompts, lambda i, t: C.parse_answer(t) == sum(problems[i]),
                             samples=int(sys.argv[3]), max_new_tokens=100, batch_size=32, seed=0)
    barrier()
if r.main:
    digest = hashlib.sha256(json.dumps(res, sort_keys=True).encode()).hexdigest()[:16]
    print(json.dumps({"seconds": time.perf_counter() - t0, "result": digest,
                      "pass_at_1": res["pass_at_k"]["base"]["1"]["value"]}))
"""

_HYBRID = """
import hashlib, json, sys, time, torch
torch.set_num_threads(1)
from lens.distributed import barrier, data_parallel
from lens.models import load_model
from lens.studies import hybrid_organism
import sae_lens  # the taxonomy SAE's library: imported before the clock starts, like the models (start-up)
base, thinking = load_model("organism:base"), load_model("organism:thinking")
with data_parallel() as r:
    barrier()
    t0 = time.perf_counter()
    res = hybrid_organism.run(base, thinking, n=int(sys.argv[2]), batch_size=8)
    barrier()
if r.main:
    digest = hashlib.sha256(json.dumps(res, sort_keys=True).encode()).hexdigest()[:16]
    print(json.dumps({"seconds": time.perf_counter() - t0, "result": digest,
                      "hybrid_accuracy": res["hybrid"]["accuracy"]["value"]}))
"""


def _run(cmd: list[str], out: Path, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "LENS_DIST_BACKEND": "gloo"}
    r = subprocess.run([*cmd, str(out), *args], env=env, capture_output=True, text=True, check=True)
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", choices=("capture", "sampling", "hybrid"), default="capture")
    ap.add_argument("--texts", type=int, default=3000, help="capture: inputs")
    ap.add_argument("--problems", type=int, default=None, help="sampling (default 64) / hybrid (default 32): problems")
    ap.add_argument("--samples", type=int, default=8, help="sampling: samples per problem")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    add_json_out(ap)
    a = ap.parse_args()
    a.problems = a.problems or (32 if a.job == "hybrid" else 64)
    work = Path(tempfile.mkdtemp(prefix="lens-bench-"))
    job = work / "job.py"
    job.write_text({"capture": _CAPTURE, "sampling": _SAMPLING, "hybrid": _HYBRID}[a.job])
    args = {"capture": [str(a.texts)], "sampling": [str(a.problems), str(a.samples)],
            "hybrid": [str(a.problems)]}[a.job]
    one, many = [], []
    try:
        for _ in range(a.repeats):
            one.append(_run([sys.executable, str(job)], work / "one", args))
            many.append(_run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                              str(a.procs), str(job)], work / "many", args))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    s1, sn = statistics.median(r["seconds"] for r in one), statistics.median(r["seconds"] for r in many)
    size = {"capture": {"texts": a.texts}, "sampling": {"problems": a.problems, "samples": a.samples},
            "hybrid": {"problems": a.problems}}[a.job]
    out = {"job": a.job, **size, "procs": a.procs, "one_process_s": round(s1, 2),
           f"{a.procs}_processes_s": round(sn, 2), "speedup": round(s1 / sn, 2),
           "speedup_fastest": round(min(r["seconds"] for r in one) / min(r["seconds"] for r in many), 2),
           "runs_one": [round(r["seconds"], 2) for r in one], "runs_many": [round(r["seconds"], 2) for r in many]}
    if a.job in ("sampling", "hybrid"):  # the data-parallel result must be the one-process result
        out["same_result"] = len({r["result"] for r in one + many}) == 1
        key = "pass_at_1" if a.job == "sampling" else "hybrid_accuracy"
        out[key] = one[0][key]
    print(json.dumps(out))
    if a.json_out:
        write_json(a.json_out, out)


if __name__ == "__main__":
    main()
