"""SAE training step: lens's sparse decode vs SAELens's dense step, alternated in one process.

    python benchmarks/sae_step_ab.py [--d-model 128] [--arch topk|batchtopk ...] [--rounds 16] [--steps 20]
                                     [--device cuda] [--json-out PATH]

Both trainers (`SAETrainer` around `saes.config.training_sae`, with `sparse_decode` True / False; d_sae =
8 x d_in, k 32, batch 1024, Adam 1e-3, SAELens's default decoder-norm rescaling) step through the same
batches of correlated Gaussian rows, `--steps` steps per round, alternating which goes first. Prints
rows/s of the fastest rounds and the median and fastest-round speed-up (dense time / sparse time); with
several `--arch`, one line per architecture, one after the other.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402

from benchmarks.record import add_json_out, write_json  # noqa: E402


def step_ab(d_in: int, arch: str = "topk", rounds: int = 16, steps: int = 20, batch: int = 1024,
            device: str = "cpu") -> dict:
    """Seconds per round of `steps` training steps for the dense and the sparse step, alternated."""
    from lens.heap import settle_heap
    from saes.config import TrainConfig, training_sae
    from saes.train import _trainer

    settle_heap()  # as train_sae does
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16 * batch, d_in, generator=g) @ torch.randn(d_in, d_in, generator=g) * 0.3
    batches = [x[torch.randint(0, x.shape[0], (batch,), generator=g)].to(device) for _ in range(steps)]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    trainers = {}
    for sparse in (False, True):
        cfg = TrainConfig(architecture=arch, d_sae=8 * d_in, k=32, total_rows=10**9, batch_size=batch, lr=1e-3,
                          checkpoint_every=0, seed=0, sparse_decode=sparse, device=device)
        trainers[sparse] = _trainer(cfg, training_sae(cfg, d_in))
        for b in batches[:2]:  # warm up
            trainers[sparse].step(b)
    times: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for sparse in (False, True) if r % 2 == 0 else (True, False):
            sync()
            t0 = time.perf_counter()
            for b in batches:
                trainers[sparse].step(b)
            sync()
            times[sparse].append(time.perf_counter() - t0)
    ratios = [a / b for a, b in zip(times[False], times[True], strict=True)]
    rows = steps * batch
    return {"arch": arch, "device": device, "d_in": d_in, "d_sae": 8 * d_in, "rounds": rounds, "rows_per_round": rows,
            "dense_rows_per_s": rows / min(times[False]), "sparse_rows_per_s": rows / min(times[True]),
            "speedup_median": statistics.median(ratios), "speedup_fastest": min(times[False]) / min(times[True]),
            "dense_s": times[False], "sparse_s": times[True]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--arch", choices=["topk", "batchtopk"], nargs="+", default=["topk"])
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    add_json_out(ap)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("LENS_BENCH_THREADS", "2")))
    out = []
    for arch in args.arch:
        r = step_ab(args.d_model, arch, args.rounds, args.steps, device=args.device)
        out.append(r)
        print(f"{r['device']} {r['arch']} d_in {r['d_in']} d_sae {r['d_sae']}: "
              f"SAELens dense step {r['dense_rows_per_s']:.0f} rows/s, "
              f"lens sparse decode {r['sparse_rows_per_s']:.0f} rows/s (fastest rounds); speed-up median "
              f"{r['speedup_median']:.3f}x, fastest rounds {r['speedup_fastest']:.3f}x ({r['rounds']} rounds)")
    if args.json_out:
        write_json(args.json_out, {"steps": args.steps, "rows": out})


if __name__ == "__main__":
    main()
