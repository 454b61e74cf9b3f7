"""The JSON log of a `lens rl` run (``rl_log.json``): what was trained, held-out measurements every N
steps, per-step training numbers and each problem's training accuracy; written atomically, cut back
to the checkpoint a resumed run starts from."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..artifacts import lens_version, read_json, write_json
from ..errors import LensError

LOG_NAME = "rl_log.json"
FORMAT = "lens-rl/1"


def ids_hash(rows: list[dict]) -> str:
    """A short hash of the rows' ids, prompts and answers (two runs on the same problems agree)."""
    text = json.dumps([[r.get("id"), r.get("prompt"), r.get("answer"), r.get("incorrect_answer")] for r in rows])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def new_log(meta: dict) -> dict:
    return {"format": FORMAT, "lens_version": lens_version(), "status": "running", "meta": meta,
            "evals": [], "train": [], "train_accuracy_by_problem": {}}


def read_log(out: Path) -> dict | None:
    path = out / LOG_NAME
    if not path.exists():
        return None
    log = read_json(path, "RL log")
    if not isinstance(log, dict) or log.get("format") != FORMAT:
        raise LensError(f"{path} is not a lens RL log (format {FORMAT}); choose another --out")
    return log


def write_log(out: Path, log: dict) -> None:
    write_json(out / LOG_NAME, log)


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ between two metadata dicts (nested keys joined with dots)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def cut_to(log: dict, step: int) -> dict:
    """The log as it was at ``step`` (records of later steps dropped): a resumed run writes them again."""
    log["evals"] = [e for e in log["evals"] if e["step"] <= step]
    log["train"] = [t for t in log["train"] if t["step"] <= step]
    by = {pid: [sa for sa in v if sa[0] <= step] for pid, v in log["train_accuracy_by_problem"].items()}
    log["train_accuracy_by_problem"] = {pid: v for pid, v in by.items() if v}
    log["status"] = "running"
    return log


def curve(log: dict, key: str = "heldout_accuracy") -> list[tuple[int, Any]]:
    """(step, value) of one held-out measurement over the run."""
    return [(e["step"], e[key]) for e in log["evals"] if key in e]


def accuracy_history(log: dict) -> dict[str, list[float]]:
    """Problem id -> its training accuracy at each step it was sampled (for the 1-shot choice)."""
    return {pid: [a for _, a in v] for pid, v in log["train_accuracy_by_problem"].items()}
