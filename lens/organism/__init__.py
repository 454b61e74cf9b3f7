"""The bundled reasoning organism: a tiny base/thinking/control model trio with known ground truth.

A controlled testbed (sums of two-digit numbers, answered directly or by a delimited thinking
trace) for checking that the toolkit's methods find what was planted; not evidence about real
LLMs.  See ``docs/organism.md``.  This module stays import-light (no torch at import time).
"""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "models"
DATA_DIR = Path(__file__).resolve().parent / "data"
HELDOUT_PATH = DATA_DIR / "heldout.jsonl"
NAMES = ("base", "thinking", "control")
#: the second pair (its control is ``control``: the same control corpus); see ``docs/organism.md``
VERIFIER_NAMES = ("verifier-base", "verifier-thinking")
#: the verifier base's thinking model made by RL (GRPO, correct reward) instead of selection; see ``docs/organism.md``
RL_NAMES = ("verifier-thinking-rl",)
#: every bundled model, loadable as ``organism:<name>``
ALL_NAMES = NAMES + VERIFIER_NAMES + RL_NAMES
#: pair name -> (base, thinking, control) model names
PAIRS = {"sums": ("base", "thinking", "control"), "verifier": ("verifier-base", "verifier-thinking", "control"),
         "verifier-rl": ("verifier-base", "verifier-thinking-rl", "control")}


def bundled_path(name: str) -> Path:
    """Folder of the bundled HF model ``name`` (one of :data:`ALL_NAMES`, e.g. ``"base"``, ``"verifier-thinking"``)."""
    if name not in ALL_NAMES:
        raise ValueError(f"unknown organism model {name!r}; expected one of {', '.join(ALL_NAMES)}")
    return MODELS_DIR / name


def load_heldout(path: str | Path | None = None) -> list[dict]:
    """The committed held-out problems (one dict per line of ``data/heldout.jsonl``)."""
    import json

    p = Path(path) if path is not None else HELDOUT_PATH
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


__all__ = ["MODELS_DIR", "DATA_DIR", "HELDOUT_PATH", "NAMES", "VERIFIER_NAMES", "RL_NAMES", "ALL_NAMES", "PAIRS",
           "bundled_path", "load_heldout"]
