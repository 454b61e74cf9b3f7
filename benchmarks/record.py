"""A benchmark's results as a JSON file: the command line, the date, the machine and the raw numbers.

Every benchmark script whose table is on docs/benchmarks.md takes `--json-out PATH` and calls `write_json`
at the end; `benchmarks/page.py` builds the page from those files (docs/results/benchmarks/). The file is
written atomically (a temporary file in the same folder, then renamed), so a killed run leaves the previous
file, never half of a new one.

    {"command": "python benchmarks/ab.py capture --rounds 40 --json-out ...",   # as typed, repo-relative
     "date": "2026-12-04T09:12:03Z", "wall_s": 95.2,                           # the run's own duration
     "machine": {"cpu_count": 2, "affinity": 2, "torch_threads": 1, "torch": "2.13.0+cpu", ...,
                 "load_start": [..], "load_end": [..]},                        # os.getloadavg() at both ends
     "results": {...}}                                                         # the script's own numbers
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: the folder the page reads (docs/results/benchmarks/)
RESULTS = ROOT / "docs" / "results" / "benchmarks"
_START = (time.perf_counter(), os.getloadavg())  # when the script imported this module


def command_line(argv: list[str] | None = None) -> str:
    """`python <script> <args>` as typed, the script's path relative to the repository root when inside it."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    try:
        argv[0] = str(script.relative_to(ROOT))
    except ValueError:
        pass
    return shlex.join(["python", *argv])


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def machine() -> dict[str, Any]:
    """The facts a reader needs to weigh the numbers: cores, threads, load, versions."""
    import torch

    facts: dict[str, Any] = {"cpu_count": os.cpu_count(), "cpu_model": _cpu_model(),
                             "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                             "python": platform.python_version(), "platform": platform.platform()}
    try:
        facts["affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every OS
        facts["affinity"] = None
    try:
        import transformers

        facts["transformers"] = transformers.__version__
    except ImportError:
        facts["transformers"] = None
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name()
    facts["load_start"] = [round(x, 2) for x in _START[1]]
    facts["load_end"] = [round(x, 2) for x in os.getloadavg()]
    return facts


def document(results: Any, argv: list[str] | None = None) -> dict[str, Any]:
    return {"command": command_line(argv),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": _commit(), "wall_s": round(time.perf_counter() - _START[0], 1), "machine": machine(),
            "results": results}


def write_json(path: str | os.PathLike, results: Any, argv: list[str] | None = None) -> dict[str, Any]:
    """Write `results` with the command line, date and machine facts to `path`, atomically; return the document."""
    from lens.artifacts import write_text  # atomic: a reader sees the old file or the new one

    doc = document(results, argv)
    write_text(path, json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return doc


def add_json_out(ap: Any) -> None:
    """The `--json-out PATH` option every benchmark script shares."""
    ap.add_argument("--json-out", default=None, metavar="PATH",
                    help="also write the results, the command line, the date and the machine to PATH as JSON "
                         "(atomically; docs/results/benchmarks/ holds the page's files)")
