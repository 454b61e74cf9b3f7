"""Data-parallel jobs: N processes under torchrun vs one process, one torch thread each.

    python benchmarks/distributed.py --job capture [--texts 3000] [--procs 2] [--repeats 3] [--json-out PATH]
    python benchmarks/distributed.py --job sampling [--problems 64] [--samples 8] [--procs 2] [--repeats 3]
    python benchmarks/distributed.py --job hybrid [--problems 32] [--procs 2] [--repeats 3]
    python benchmarks/distributed.py --job cot|steer-check|diff|reproduce [--problems N] [--procs 2] [--repeats 3]

capture: every resid_post of a tiny random Llama (4 layers, width 128) for `--texts` inputs, to disk.
sampling: `sampling_study.run` (seeded samples, pass@k, behaviour rates) of the bundled organism's base
model on `--problems` sums of 2-6 numbers x `--samples` samples (100 new tokens at most, 32 rows a
batch), split across the ranks inside `lens.distributed.data_parallel()`.
hybrid: `hybrid_organism.run` (taxonomy selector, every ablation, live_only and unsteered_allowed) on the
first `--problems` held-out problems, 8 prompts a batch; the thinking model's traces and the batches of every
run are split (`hybrid.study.run_study`), the taxonomy SAE and the vectors are built whole on every rank.
cot: `cot_study.run` (CoT-decoding, k 5 branches of at most 100 new tokens) of the organism's base model on
`--problems` held-out problems (default 64).
steer-check: `saes.steer_check.steer_check` on `--problems` held-out problems (default 32): baseline, the
thinking model as reference, 2 features x 2 scales and 1 random control x 2 scales (8 runs of at most 64 new
tokens), with a hand-made 32-latent dictionary at layer 2 of the organism's base.
diff: `diff_study.run` on the organism pair: the weight diff, T/D contrast of `--problems` marker pairs
(default 512) and the activation diff on as many neutral prompts.
reproduce: `lens.studies.reproduce.reproduce` on the organism with every step but RL (which runs whole on rank 0
in a process of its own), `--problems` per step (default 32); one report, written by rank 0.

Each job runs once in one process and once under `torchrun --nproc-per-node N` (gloo); the printed
time is the job's own wall time (the slowest rank's, between barriers; process start-up, imports and model
loading left out); every job checks that both runs give the same result (the capture folder's rows and metadata,
the studies' JSON; reproduce's report apart from timings). Median of
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

_PRELUDE = """
import hashlib, json, sys, time, torch
torch.set_num_threads(1)
from lens.distributed import barrier, data_parallel, init


def report(r, seconds, res, **extra):
    \"\"\"Rank 0 prints the job's time and a digest of its result (every run's must agree).\"\"\"
    if r.main:
        digest = hashlib.sha256(json.dumps(res, sort_keys=True, default=str).encode()).hexdigest()[:16]
        print(json.dumps({"seconds": seconds, "result": digest, **extra}))
"""

_CAPTURE = """
from lens.tiny import tiny_model
from lens.capture_folder import capture_to_disk, open_capture
r = init()
model = tiny_model("llama", d_model=128)
texts = [f"example {i}: " + "some words to read, " * (2 + i % 7) for i in range(int(sys.argv[2]))]
barrier()
t0 = time.perf_counter()
capture_to_disk(model, texts, [f"blocks.{i}.hook_resid_post" for i in range(4)], "all", batch_size=8, out=sys.argv[1],
        progress=False)
barrier()
seconds = time.perf_counter() - t0
if r.main:  # the folder's rows and metadata must equal one process's
    acts = open_capture(sys.argv[1]).load()
    report(r, seconds, [hashlib.sha256(t.numpy().tobytes()).hexdigest() for t in
                                              [*(acts[s] for s in acts.sites), *acts.meta_tensors().values()]],
           rows=len(acts))
"""

_SAMPLING = """
import random
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
    report(r, time.perf_counter() - t0, res, pass_at_1=res["pass_at_k"]["base"]["1"]["value"])
"""

_HYBRID = """
from lens.models import load_model
from lens.studies import hybrid_organism
import sae_lens  # the taxonomy SAE's library: imported before the clock starts, like the models (start-up)
base, thinking = load_model("organism:base"), load_model("organism:thinking")
with data_parallel() as r:
    barrier()
    t0 = time.perf_counter()
    res = hybrid_organism.run(base, thinking, n=int(sys.argv[2]), batch_size=8)
    barrier()
    report(r, time.perf_counter() - t0, res, hybrid_accuracy=res["hybrid"]["accuracy"]["value"])
"""

_COT = """
from lens.models import load_model
from lens.organism import load_heldout
from lens.studies import cot_study
rows = load_heldout()[: int(sys.argv[2])]
prompts, answers = [r["prompt"] for r in rows], [str(r["answer"]) for r in rows]
model = load_model("organism:base")
with data_parallel() as r:
    barrier()
    t0 = time.perf_counter()
    res = cot_study.run(model, prompts, lambda i, a: a is not None and a.strip() == answers[i], k=5,
                        max_new_tokens=100, extractor="organism", answer_prompt=None, batch_size=40)
    barrier()
    report(r, time.perf_counter() - t0, res, cot_accuracy=res["cot"]["value"])
"""

_STEER_CHECK = """
from lens.models import load_model
from lens.organism import corpus as C, load_heldout
from saes.handmade import handmade_dictionary
from saes.steer_check import steer_check
rows = load_heldout()[: int(sys.argv[2])]
prompts, answers = [r["prompt"] for r in rows], [int(r["answer"]) for r in rows]
base, thinking = load_model("organism:base"), load_model("organism:thinking")
d = handmade_dictionary(base.d_model, "blocks.2.hook_resid_post")
with data_parallel() as r:
    barrier()
    t0 = time.perf_counter()
    res = steer_check(base, d, [1, 2], prompts, lambda i, t: C.parse_answer(t) == answers[i], alphas=(2.0, 8.0),
                      n_random=1, max_new_tokens=64, batch_size=16, reference=thinking)
    barrier()
    report(r, time.perf_counter() - t0, res, runs=len(res))
"""

_DIFF = """
from lens.models import load_model
from lens.studies import diff_study
from lens.studies.organism_inputs import marker_contrast, train_problems
n = int(sys.argv[2])
think, direct = marker_contrast(n)
neutral = [p.prompt() for p in train_problems(n, seed=99)]
base, thinking = load_model("organism:base"), load_model("organism:thinking")
with data_parallel() as r:
    barrier()
    t0 = time.perf_counter()
    res = diff_study.run(base, thinking, think, direct, neutral)
    barrier()
    report(r, time.perf_counter() - t0, res)
"""

_REPRODUCE = """
from pathlib import Path
from lens.studies.reproduce import STEPS, Sizes, reproduce, without_run_facts
import sae_lens  # imported before the clock starts (start-up)
n = int(sys.argv[2])
sizes = Sizes(n=n, samples=8, hybrid_n=n, cot_n=n, k=5, feature_n=n, n_contrast=64, top_features=1, n_random=1,
              feature_pages=2, batch_size=64)
r = init()
barrier()
t0 = time.perf_counter()
reproduce(sys.argv[1], sizes=sizes, steps=tuple(s for s in STEPS if s != "rl"), progress=False)
barrier()
seconds = time.perf_counter() - t0
if r.main:  # the report rank 0 wrote, apart from timings and its folder, must equal one process's
    results = without_run_facts(json.loads((Path(sys.argv[1]) / "results.json").read_text()))
    report(r, seconds, results)
"""

JOBS = {"capture": _CAPTURE, "sampling": _SAMPLING, "hybrid": _HYBRID, "cot": _COT, "steer-check": _STEER_CHECK,
        "diff": _DIFF, "reproduce": _REPRODUCE}
#: --problems when not given
PROBLEMS = {"sampling": 64, "hybrid": 32, "cot": 64, "steer-check": 32, "diff": 512, "reproduce": 32}


def _run(cmd: list[str], out: Path, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "LENS_DIST_BACKEND": "gloo"}
    r = subprocess.run([*cmd, str(out), *args], env=env, capture_output=True, text=True, check=True)
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", choices=tuple(JOBS), default="capture")
    ap.add_argument("--texts", type=int, default=3000, help="capture: inputs")
    ap.add_argument("--problems", type=int, default=None,
                    help="problems (default: " + ", ".join(f"{k} {v}" for k, v in PROBLEMS.items()) + ")")
    ap.add_argument("--samples", type=int, default=8, help="sampling: samples per problem")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    add_json_out(ap)
    a = ap.parse_args()
    a.problems = a.problems or PROBLEMS.get(a.job)
    work = Path(tempfile.mkdtemp(prefix="lens-bench-"))
    job = work / "job.py"
    job.write_text(_PRELUDE + JOBS[a.job])
    args = ([str(a.texts)] if a.job == "capture" else
            [str(a.problems), str(a.samples)] if a.job == "sampling" else [str(a.problems)])
    one, many = [], []
    try:
        for _ in range(a.repeats):
            one.append(_run([sys.executable, str(job)], work / "one", args))
            many.append(_run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                              str(a.procs), str(job)], work / "many", args))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    s1, sn = statistics.median(r["seconds"] for r in one), statistics.median(r["seconds"] for r in many)
    size = ({"texts": a.texts} if a.job == "capture" else
            {"problems": a.problems, "samples": a.samples} if a.job == "sampling" else {"problems": a.problems})
    out = {"job": a.job, **size, "procs": a.procs, "one_process_s": round(s1, 2),
           f"{a.procs}_processes_s": round(sn, 2), "speedup": round(s1 / sn, 2),
           "speedup_fastest": round(min(r["seconds"] for r in one) / min(r["seconds"] for r in many), 2),
           "runs_one": [round(r["seconds"], 2) for r in one], "runs_many": [round(r["seconds"], 2) for r in many]}
    out["same_result"] = len({r["result"] for r in one + many}) == 1  # data-parallel == one process
    for key in ("pass_at_1", "hybrid_accuracy", "cot_accuracy", "runs", "rows"):
        if key in one[0]:
            out[key] = one[0][key]
    print(json.dumps(out))
    if a.json_out:
        write_json(a.json_out, out)


if __name__ == "__main__":
    main()
