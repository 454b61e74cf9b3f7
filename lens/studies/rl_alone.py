"""The RL study (`lens.studies.rl_study.run_rl_study`) in a process of its own, for one rank of a launched job.

Under `torchrun` / `accelerate launch`, TRL's trainer would join the job's process group and wait for the
other ranks. `run_alone` runs the same study in a fresh Python process started without the launcher's
variables (`lens.distributed.single_process_env`), with the models given by spec, and returns its numbers:
the same as `run_rl_study` in one process. The job and its result travel as JSON files
(``python -m lens.studies.rl_alone JOB.json RESULT.json``); its progress lines go to this process's stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from ..errors import LensError
from ..rl import RLConfig


def run_alone(models: Mapping[str, str], out: str | Path, *, heldout: Sequence[dict], experiments: Sequence[str],
              cfg: RLConfig, pass_k: int, pass_k_n: int, contrast: tuple[Sequence[str], Sequence[str]] | None,
              device: str | None = None, dtype: str | None = None, say=None) -> dict:
    """`run_rl_study(models, out, ...)` in a fresh single process; models: name -> model spec (loaded there, the
    first one on `device` in `dtype`, as the caller holds it); say: called with each progress line there."""
    from ..distributed import single_process_env

    job = {"models": dict(models), "out": str(out), "heldout": list(heldout), "experiments": list(experiments),
           "cfg": asdict(cfg), "pass_k": pass_k, "pass_k_n": pass_k_n, "device": device, "dtype": dtype,
           "contrast": None if contrast is None else [list(contrast[0]), list(contrast[1])]}
    with tempfile.TemporaryDirectory(prefix="lens-rl-alone-") as tmp:
        spec, result = Path(tmp) / "job.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps(job))
        proc = subprocess.Popen([sys.executable, "-m", "lens.studies.rl_alone", str(spec), str(result)],
                                env=single_process_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        last: list[str] = []
        for line in proc.stderr:
            last = [*last[-2:], line.rstrip()]
            if say is not None:
                say(line.rstrip())
        if proc.wait() != 0 or not result.is_file():
            raise LensError(f"the RL study's own process failed (exit {proc.returncode}): {' | '.join(last)}")
        return json.loads(result.read_text())


def _main(job_path: str, result_path: str) -> None:
    from ..models import load_model
    from .rl_study import run_rl_study

    job = json.loads(Path(job_path).read_text())
    models = {name: (load_model(spec, device=job["device"], dtype=job["dtype"]) if i == 0 else spec)
              for i, (name, spec) in enumerate(job["models"].items())}
    contrast = tuple(job["contrast"]) if job["contrast"] is not None else None
    res = run_rl_study(models, job["out"], heldout=job["heldout"],
                       experiments=job["experiments"], cfg=RLConfig(**job["cfg"]), pass_k=job["pass_k"],
                       pass_k_n=job["pass_k_n"], contrast=contrast, say=lambda m: print(m, file=sys.stderr, flush=True))
    Path(result_path).write_text(json.dumps(res))


if __name__ == "__main__":
    _main(*sys.argv[1:3])
