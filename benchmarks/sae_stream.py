"""SAE training at scale: streamed from the model vs capture-then-train, and N processes vs one.

    python benchmarks/sae_stream.py [--model organism:base] [--texts 2000] [--procs 2] [--repeats 1]
                                    [--expansion 8 32]

1. On `--model` (default the bundled organism) over `--texts` organism-style sums, every token of
   blocks.1.hook_resid_post, one epoch (total_rows = the rows of one pass, rounded down to whole batches):
   - capture-then-train: `capture_to_disk(..., out=DIR)` to disk, then `train_sae(DIR)`; time of both, and the
     bytes the capture folder holds;
   - streamed: `train_sae(model_source(model, texts, site))`: forwards feed the shuffling buffer, nothing
     written but the SAE.
   Same rows, same order, same weights (checked: the final weights are compared bit for bit). `--repeats`
   runs: medians of each time, and every run's. Also: rows/s
   of one pass reading the folder (page cache warm) and of one pass of forwards alone (no training).
2. The same SAE training on the capture folder in one process and under
   `torchrun --nproc-per-node N` (gloo; every rank reads the stream, each trains on its share of every
   batch, gradients averaged by DDP): the training loop's wall time (slowest rank, between barriers).
SAE: TopK, d_sae = 8 x d_model (part 2: each `--expansion`), k = 32, batch 1024, buffer 32768 rows, fp32,
one torch thread per process.
3. Peak resident memory of a streamed epoch (organism: every token) over JSONL files of `--memory-texts`
   inputs each, in fresh processes: it must not grow with the number of inputs.
Prints one JSON object (`--json-out PATH` also writes it with the run's command, commit and machine).
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.record import add_json_out, write_json  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402

SITE = "blocks.1.hook_resid_post"


def texts(n: int) -> list[str]:
    """Organism-style prompts with their reasoning and answer (sums of three two-digit numbers)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        a, b, c = (int(x) for x in torch.randint(10, 100, (3,), generator=g))
        out.append(f"Q:{a}+{b}+{c}=?\n<think>{a}+{b}={a + b}, {a + b}+{c}={a + b + c}</think>A:{a + b + c}")
    return out


def cfg_for(rows: int, d_in: int, expansion: int = 8):
    from saes.config import TrainConfig

    return TrainConfig(architecture="topk", d_sae=expansion * d_in, k=32, total_rows=rows // 1024 * 1024,
                       batch_size=1024, buffer_rows=32768, lr=1e-3, checkpoint_every=0, seed=0)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def stream_vs_capture(model_spec: str, n_texts: int, work: Path, repeats: int = 1) -> dict:
    import sae_lens.training.sae_trainer  # noqa: F401  imported before any clock starts

    import lens
    from lens.capture_folder import capture_to_disk
    from saes.stream import model_source
    from saes.train import train_sae

    model = lens.load_model(model_spec)
    items = texts(n_texts)
    caps, trains, streams, same = [], [], [], []
    for _ in range(repeats):  # each repeat: a new folder, both trainings from scratch
        for f in ("cap", "sae-folder", "sae-stream"):
            shutil.rmtree(work / f, ignore_errors=True)
        t0 = time.perf_counter()
        folder = capture_to_disk(model, items, [SITE], "all", batch_size=8, out=work / "cap", progress=False)
        caps.append(time.perf_counter() - t0)
        cfg = cfg_for(folder.n_rows, model.d_model)
        t0 = time.perf_counter()
        train_sae(folder, work / "sae-folder", cfg, progress=False)
        trains.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        train_sae(model_source(model, items, SITE, batch_size=8), work / "sae-stream", cfg, progress=False)
        streams.append(time.perf_counter() - t0)
        from safetensors.torch import load_file

        a, b = (load_file(work / f / "sae_weights.safetensors") for f in ("sae-folder", "sae-stream"))
        same.append(all(torch.equal(a[k], b[k]) for k in a))
    t0 = time.perf_counter()
    n_read = sum(c.shape[0] for c in folder.iter_rows(SITE, 8192))
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_fwd = sum(c.shape[0] for c in model_source(model, items, SITE, batch_size=8))
    t_fwd = time.perf_counter() - t0
    t_capture, t_train, t_stream = (statistics.median(x) for x in (caps, trains, streams))
    both = [c + t for c, t in zip(caps, trains, strict=True)]
    return {"model": model_spec, "texts": n_texts, "rows": folder.n_rows, "train_rows": cfg.total_rows,
            "d_model": model.d_model, "repeats": repeats, "capture_s": round(t_capture, 2),
            "train_on_folder_s": round(t_train, 2), "capture_then_train_s": round(statistics.median(both), 2),
            "streamed_s": round(t_stream, 2), "stream_speedup": round(statistics.median(both) / t_stream, 2),
            "runs_capture_then_train": [round(x, 2) for x in both], "runs_streamed": [round(x, 2) for x in streams],
            "disk_saved_bytes": folder_bytes(work / "cap"),
            "folder_read_rows_per_s": round(n_read / t_read), "forward_rows_per_s": round(n_fwd / t_fwd),
            "same_weights": all(same)}


_RSS_JOB = """
import json, resource, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {root!r})
sys.path.insert(0, {bench!r})
import lens
from sae_stream import SITE, cfg_for
from saes.stream import model_source
from saes.train import train_sae
model = lens.load_model(sys.argv[1])
src = model_source(model, sys.argv[2], SITE, batch_size=8)
rows = sum(len(model.tokenizer(json.loads(line)["text"])["input_ids"]) for line in open(sys.argv[2]))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
train_sae(src, sys.argv[3], cfg_for(rows, model.d_model), progress=False)
print(json.dumps({{"rows": rows, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_before_training_mb": base / 1024}}))
"""


def stream_memory(model_spec: str, sizes: list[int], work: Path) -> list[dict]:
    """Peak resident memory of one streamed epoch over JSONL files of each size (a fresh process each)."""
    job = work / "rss_job.py"
    job.write_text(_RSS_JOB.format(root=str(ROOT), bench=str(ROOT / "benchmarks")))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = []
    for n in sizes:
        f = work / f"in-{n}.jsonl"
        f.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts(n)))
        r = subprocess.run([sys.executable, str(job), model_spec, str(f), str(work / f"rss-sae-{n}")], env=env,
                           capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(r.stderr[-3000:])
        out.append({"texts": n, **{k: round(v, 1) if isinstance(v, float) else v
                                   for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items()}})
    return out


_JOB = """
import json, sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, {root!r})
from lens.distributed import barrier, init
from lens.capture_folder import open_capture
from saes.train import train_sae
import sae_lens.training.sae_trainer  # imported before the clock starts, as in the one-process row 1
sys.path.insert(0, {bench!r})
from sae_stream import cfg_for
r = init()
folder = open_capture(sys.argv[1])
cfg = cfg_for(folder.n_rows, folder.d_model, int(sys.argv[3]))
barrier()
t0 = time.perf_counter()
train_sae(folder, sys.argv[2], cfg, progress=False)
barrier()
if r.main:
    print(json.dumps({{"seconds": time.perf_counter() - t0}}))
"""


def processes(folder: Path, procs: int, repeats: int, work: Path, expansion: int) -> dict:
    from lens.capture_folder import open_capture

    job = work / "job.py"
    job.write_text(_JOB.format(root=str(ROOT), bench=str(ROOT / "benchmarks")))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "LENS_DIST_BACKEND": "gloo"}

    def run(cmd: list[str]) -> float:
        out = work / "sae-par"
        r = subprocess.run([*cmd, str(job), str(folder), str(out), str(expansion)], env=env, capture_output=True,
                           text=True)
        if r.returncode:
            raise SystemExit(r.stderr[-3000:])
        shutil.rmtree(out)
        return json.loads(r.stdout.strip().splitlines()[-1])["seconds"]

    one, many = [], []
    for _ in range(repeats):
        one.append(run([sys.executable]))
        many.append(run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                         str(procs)]))
    s1, sn = statistics.median(one), statistics.median(many)
    return {"procs": procs, "d_sae": expansion * open_capture(folder).d_model, "one_process_train_s": round(s1, 2),
            f"{procs}_processes_train_s": round(sn, 2),
            "speedup": round(s1 / sn, 2), "runs_one": [round(x, 2) for x in one],
            "runs_many": [round(x, 2) for x in many]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="organism:base")
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="runs of parts 1 and 2 (medians reported)")
    ap.add_argument("--memory-texts", type=int, nargs="+", default=[1000, 8000],
                    help="input counts of the streamed-memory rows (part 3)")
    ap.add_argument("--expansion", type=int, nargs="+", default=[8, 32],
                    help="d_sae / d_model of the data-parallel rows (part 2), one row each")
    add_json_out(ap)
    a = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="lens-sae-stream-"))
    try:
        row = {"stream_vs_capture": stream_vs_capture(a.model, a.texts, work, a.repeats)}
        row["stream_memory"] = stream_memory(a.model, a.memory_texts, work)
        row["data_parallel"] = [processes(work / "cap", a.procs, a.repeats, work, e) for e in a.expansion]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(row))
    if a.json_out:
        write_json(a.json_out, row)


if __name__ == "__main__":
    main()
