"""Writing the committed held-out set (``data/heldout.jsonl``)."""

from __future__ import annotations

import json
from pathlib import Path

from lens.organism import HELDOUT_PATH
from lens.organism.corpus import heldout_problems


def heldout_records(n: int = 500, n_operands: int = 5, seed: int = 12345) -> list[dict]:
    """The held-out problems as JSON-ready dicts.

    Fields: id, prompt, expression, operands, answer, n_operands.
    """
    return [
        {
            "id": i,
            "prompt": p.prompt(),
            "expression": p.expression,
            "operands": list(p.operands),
            "answer": p.answer,
            "n_operands": len(p.operands),
        }
        for i, p in enumerate(heldout_problems(n, n_operands, seed))
    ]


def write_heldout(path: str | Path = HELDOUT_PATH, **kwargs) -> Path:
    """Regenerate the held-out file (deterministic); returns its path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(json.dumps(r) + "\n" for r in heldout_records(**kwargs)))
    return p
