"""Task sets: a ``Task`` record and loaders (any JSONL, GSM8K, MATH500, the organism's held-out set).

``load_tasks(name)`` takes ``"organism"``, ``"gsm8k"``, ``"math500"`` or a path to a ``.jsonl`` file.
GSM8K and MATH500 come through ``datasets`` from the hub (only when asked); their row parsers
(:func:`parse_gsm8k_row`, :func:`parse_math500_row`) are plain functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LensError, closest
from .answers import boxed, normalise

ORGANISM_HELDOUT = Path(__file__).resolve().parent.parent / "organism" / "data" / "heldout.jsonl"
QUESTION_KEYS = ("question", "problem", "prompt", "input", "query")
ANSWER_KEYS = ("answer", "target", "label", "output", "solution")


@dataclass
class Task:
    """One problem: ``question`` (text a template turns into a prompt), reference ``answer``, ``meta``.

    ``meta["template"]`` names the template that fits the question (``identity`` for the organism,
    whose questions already are prompts).
    """

    question: str
    answer: str
    meta: dict = field(default_factory=dict)
    id: str = ""


def parse_gsm8k_row(row: dict, index: int = 0) -> Task:
    """A GSM8K row (``question``, ``answer`` = solution ending in ``#### 42``)."""
    sol = str(row["answer"])
    if "####" not in sol:
        raise LensError(f"GSM8K row {index} has no '#### <answer>' in its answer field")
    final = normalise(sol.rsplit("####", 1)[1].strip())
    return Task(str(row["question"]), final, {"solution": sol, "source": "gsm8k"}, f"gsm8k-{index}")


def parse_math500_row(row: dict, index: int = 0) -> Task:
    """A MATH500 row (``problem``, ``answer``, or else the last ``\\boxed{}`` of ``solution``)."""
    answer = row.get("answer")
    if answer is None or str(answer).strip() == "":
        got = boxed(str(row.get("solution", "")))
        if got is None:
            raise LensError(f"MATH500 row {index} has neither an answer field nor a \\boxed{{}} in its solution")
        answer = got.value
    meta = {k: row[k] for k in ("subject", "level", "unique_id", "solution") if k in row}
    meta["source"] = "math500"
    return Task(str(row["problem"]), normalise(str(answer)), meta, str(row.get("unique_id", f"math500-{index}")))


def _pick(row: dict, keys: Iterable[str], what: str, index: int, path: Any) -> Any:
    for k in keys:
        if k in row and row[k] is not None:
            return row[k]
    raise LensError(f"{path} line {index + 1}: no {what} field (looked for {list(keys)}); found {sorted(row)}")


def load_jsonl(path: str | Path, question_key: str | None = None, answer_key: str | None = None,
               limit: int | None = None) -> list[Task]:
    """Tasks from a JSONL file, one object per line; question/answer keys guessed unless given."""
    path = Path(path)
    if not path.is_file():
        raise LensError(f"task file {path} does not exist")
    tasks: list[Task] = []
    with path.open() as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise LensError(f"{path} line {i + 1} is not JSON: {e.msg}") from None
            if not isinstance(row, dict):
                raise LensError(f"{path} line {i + 1} is not a JSON object with a question and an answer")
            q = _pick(row, [question_key] if question_key else QUESTION_KEYS, "question", i, path)
            a = _pick(row, [answer_key] if answer_key else ANSWER_KEYS, "answer", i, path)
            meta = {k: v for k, v in row.items() if k not in (question_key, answer_key)}
            tasks.append(Task(str(q), normalise(str(a)), meta, str(row.get("id", f"{path.stem}-{i}"))))
            if limit is not None and len(tasks) >= limit:
                break
    return tasks


def organism_task(row: dict, index: int = 0) -> Task:
    """A held-out organism row: the prompt (``Q:...=?\\n``) as the question, the integer answer."""
    prompt = next((row[k] for k in ("prompt", "question", "text") if isinstance(row.get(k), str)), None)
    if prompt is None:
        expr = row.get("expression") or ("+".join(str(x) for x in row["operands"]) if "operands" in row else None)
        if expr is None:
            raise LensError(f"organism held-out row {index} has no prompt, question, expression or operands")
        prompt = f"Q:{expr}=?\n"
    elif not prompt.startswith("Q:"):
        prompt = f"Q:{prompt.rstrip().removesuffix('=?')}=?\n"
    elif not prompt.endswith("\n"):
        prompt = prompt + "\n"
    if "answer" in row:
        answer = str(int(row["answer"]))
    elif "operands" in row:
        answer = str(sum(int(x) for x in row["operands"]))
    else:
        raise LensError(f"organism held-out row {index} has no answer")
    meta = {k: v for k, v in row.items() if k not in ("prompt", "question", "answer")}
    meta.update(template="identity", source="organism")
    return Task(prompt, answer, meta, str(row.get("id", f"organism-{index}")))


def load_organism(path: str | Path | None = None, limit: int | None = None) -> list[Task]:
    """The organism's held-out problems (``lens/organism/data/heldout.jsonl``)."""
    path = Path(path) if path else ORGANISM_HELDOUT
    if not path.is_file():
        raise LensError(
            f"the organism's held-out set {path} does not exist yet; build the organism first "
            "(it writes this file), or pass a JSONL path of question/answer rows"
        )
    tasks = []
    with path.open() as f:
        for i, line in enumerate(f):
            if line.strip():
                tasks.append(organism_task(json.loads(line), i))
                if limit is not None and len(tasks) >= limit:
                    break
    return tasks


def _hub_rows(name: str, config: str | None, split: str):
    try:
        import datasets
    except ImportError:
        raise LensError("loading hub task sets needs the datasets package: pip install datasets") from None
    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as e:  # noqa: BLE001 - offline, missing split, ...
        raise LensError(
            f"cannot load {name} ({split}) from the hub: {str(e).splitlines()[0] if str(e) else type(e).__name__}. "
            "Offline? Export the rows to JSONL elsewhere and use load_tasks('path.jsonl')"
        ) from None


def load_gsm8k(split: str = "test", limit: int | None = None) -> list[Task]:
    """GSM8K (``openai/gsm8k``, config ``main``) through ``datasets``; needs the hub or its cache."""
    rows = _hub_rows("openai/gsm8k", "main", split)
    n = len(rows) if limit is None else min(limit, len(rows))
    return [parse_gsm8k_row(rows[i], i) for i in range(n)]


def load_math500(split: str = "test", limit: int | None = None) -> list[Task]:
    """MATH500 (``HuggingFaceH4/MATH-500``) through ``datasets``; needs the hub or its cache."""
    rows = _hub_rows("HuggingFaceH4/MATH-500", None, split)
    n = len(rows) if limit is None else min(limit, len(rows))
    return [parse_math500_row(rows[i], i) for i in range(n)]


LOADERS = {"organism": load_organism, "gsm8k": load_gsm8k, "math500": load_math500}


def load_tasks(name: str | Path, limit: int | None = None, **kwargs: Any) -> list[Task]:
    """Tasks by name (``organism``, ``gsm8k``, ``math500``) or from a ``.jsonl`` path."""
    key = str(name)
    if key.lower() in LOADERS:
        return LOADERS[key.lower()](limit=limit, **kwargs)
    if key.endswith(".jsonl") or Path(key).is_file():
        return load_jsonl(key, limit=limit, **kwargs)
    hint = closest(key, list(LOADERS))
    raise LensError(
        f"unknown task set {key!r}: use one of {sorted(LOADERS)} or a path to a .jsonl file"
        + (f" (did you mean {hint[0]!r}?)" if hint else "")
    )
