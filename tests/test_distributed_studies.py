"""`lens hybrid` and `lens diff` under torchrun (2 CPU processes, gloo): rank 0's JSON equals one process's,
and the work was split (each rank ran its own share of the prompts / inputs)."""

import json
import subprocess
import sys

import pytest

from tests.helpers import TORCHRUN, needs_distributed, untimed
from tests.helpers import TORCHRUN_ENV as ENV

pytestmark = needs_distributed

# the lens CLI, recording what this rank ran: the hybrid's prompt indices and the inputs it captured
_CLI = """
import json, os, sys
import lens.capture_memory as CM
import lens.hybrid.study as S

import saes.steer_check as SC

out, seen = sys.argv[1], {"hybrid_rows": [], "hybrid_texts": [], "captured": 0, "steer_generations": 0}
gen, cap, sgen = S.hybrid_generate, CM.capture, SC.generate

def counted_gen(*a, **kw):
    seen["hybrid_rows"] += list(kw["rows"])
    res = gen(*a, **kw)
    cfg = a[3]
    run = [cfg.mode, cfg.ablation, type(cfg.selector).__name__, getattr(cfg.selector, "live_only", None)]
    seen["hybrid_texts"] += [[*run, row, text] for row, text in zip(kw["rows"], res.texts)]
    return res

def counted_cap(model, inputs, *a, **kw):
    inputs = list(inputs)
    seen["captured"] += len(inputs)
    return cap(model, inputs, *a, **kw)

def counted_sgen(*a, **kw):
    seen["steer_generations"] += 1
    return sgen(*a, **kw)

S.hybrid_generate, CM.capture, SC.generate = counted_gen, counted_cap, counted_sgen
sys.argv = ["lens", *sys.argv[2:]]
from lens.cli.main import main
try:
    main()
finally:
    with open(os.path.join(out, f"rank-{os.environ.get('RANK', '0')}.json"), "w") as f:
        json.dump(seen, f)
"""


def _organism() -> None:
    from lens.organism import bundled_path

    if not (bundled_path("base") / "config.json").exists():
        pytest.skip("the bundled organism is not built yet (lens organism train)")


def _run(tmp_path, name: str, args: list[str], procs: int) -> tuple[str, list[dict]]:
    """(stdout, what each rank ran) of `lens ARGS`, in one process or under torchrun."""
    job, out = tmp_path / "cli.py", tmp_path / name
    job.write_text(_CLI)
    out.mkdir()
    cmd = [sys.executable, str(job)] if procs == 1 else [*TORCHRUN, str(job)]
    r = subprocess.run([*cmd, str(out), *args], env=ENV, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout, [json.loads((out / f"rank-{i}.json").read_text()) for i in range(procs)]


def test_two_process_hybrid_cli_equals_one_process(tmp_path):
    """`lens hybrid --problems 8 --json` (every ablation, live_only, unsteered_allowed) on 2 ranks: the same JSON,
    each prompt of every run on one rank only (batches of 3, each (run, batch) to the first rank free for it)."""
    _organism()
    args = ["hybrid", "--problems", "8", "--batch-size", "3", "--json"]
    one, (whole,) = _run(tmp_path, "one", args, 1)
    two, (r0, r1) = _run(tmp_path, "two", args, 2)
    assert one == two and two.count('"runs"') == 1  # one report, from rank 0
    res = json.loads(one)
    assert res["n"] == 8 and len(res["runs"]) == 9 and res["runs"]["random_category"]["category_use"]
    runs = len(res["runs"])
    assert whole["hybrid_rows"] == list(range(8)) * runs
    assert r0["hybrid_rows"] and r1["hybrid_rows"]  # both ranks worked, and between them ran every row once
    assert sorted(r0["hybrid_rows"] + r1["hybrid_rows"]) == sorted(whole["hybrid_rows"])
    # every generated text of every run, not only the metrics: the ranks' (run, row, text) are the one process's
    assert sorted(map(str, r0["hybrid_texts"] + r1["hybrid_texts"])) == sorted(map(str, whole["hybrid_texts"]))
    assert len(whole["hybrid_texts"]) == 8 * runs


def test_two_process_diff_cli_equals_one_process(tmp_path):
    """`lens diff --json` on 2 ranks: the same JSON; each rank captured half of the inputs."""
    _organism()
    one, (whole,) = _run(tmp_path, "one", ["diff", "--json"], 1)
    two, (r0, r1) = _run(tmp_path, "two", ["diff", "--json"], 2)
    assert one == two and two.count('"weights"') == 1
    assert whole["captured"] == 4 * 128 and r0["captured"] == r1["captured"] == 2 * 128


def test_two_process_find_feature_steer_check_cli_equals_one_process(tmp_path):
    """`lens find-feature --steer-check --json` (a saved SAE, JSONL conditions, --eval) on 2 ranks: the same JSON,
    printed once; the steer-check's runs were split between the ranks."""
    _organism()
    from lens.models import load_model
    from lens.organism import load_heldout
    from lens.studies.organism_inputs import marker_contrast
    from saes.handmade import handmade_dictionary
    from saes.io import save_sae

    base = load_model("organism:base")
    d = handmade_dictionary(base.d_model, "blocks.2.hook_resid_post")
    save_sae(d.sae, tmp_path / "sae", site=d.site, model=base.facts())
    think, direct = marker_contrast(24)
    for name, texts in (("pos", think), ("neg", direct)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps({"prompt": r["prompt"], "answer": str(r["answer"])}) + "\n"
                                                 for r in load_heldout()[:6]))
    args = ["find-feature", "-m", "organism:base", "--sae", str(tmp_path / "sae"), "--pos", str(tmp_path / "pos.jsonl"),
            "--neg", str(tmp_path / "neg.jsonl"), "--steer-check", "--eval", str(tmp_path / "eval.jsonl"),
            "--steer-top", "2", "--n-random", "1", "--alphas", "2,8", "--max-new-tokens", "24", "--json"]
    one, (whole,) = _run(tmp_path, "one", args, 1)
    two, (r0, r1) = _run(tmp_path, "two", args, 2)
    a, b = json.loads(one), json.loads(two)  # rank 0 alone prints: the whole output is one JSON object
    assert untimed(a) == untimed(b)
    rows = a["steer_check"]
    assert [r["kind"] for r in rows].count("feature") == 4 and len(rows) >= 6
    assert whole["steer_generations"] == len(rows)  # one generation a run in one process
    assert r0["steer_generations"] and r1["steer_generations"]  # both ranks ran some
    assert r0["steer_generations"] + r1["steer_generations"] == whole["steer_generations"]


def test_two_process_reproduce_cli_equals_one_process(tmp_path):
    """`lens reproduce --steps diff,cot --json` on 2 ranks: rank 0 alone prints and writes the report folder, whose
    results equal one process's apart from timings and the folder's name; the diff's captures were split."""
    _organism()
    runs = {}
    for name, procs in (("one", 1), ("two", 2)):
        args = ["reproduce", "--steps", "diff,cot", "--cot-n", "8", "--k", "3",
                "--out", str(tmp_path / f"{name}-report"), "--json"]
        out, ranks = _run(tmp_path, name, args, procs)
        runs[name] = (json.loads(out), ranks)  # one JSON object: rank 0 alone printed
    from lens.studies.reproduce import without_run_facts

    (a, (whole,)), (b, (r0, r1)) = runs["one"], runs["two"]
    assert without_run_facts(a) == without_run_facts(b) and a["diff"]["status"] == a["cot"]["status"] == "ok"
    assert json.loads((tmp_path / "two-report" / "results.json").read_text())["diff"] == b["diff"]
    names = [sorted(p.name for p in (tmp_path / f"{n}-report").iterdir()) for n in ("one", "two")]
    assert names[0] == names[1] and {"index.html", "results.json", "results.md"} <= set(names[0])
    assert r0["captured"] and r1["captured"] and r0["captured"] + r1["captured"] == whole["captured"]


_CAPTURE = """
import json, os, torch
torch.set_num_threads(1)
from lens.capture_memory import capture, capture_shared
from lens.distributed import data_parallel
from lens.tiny import tiny_model

model = tiny_model("llama")
texts = [f"sentence {i} here. and another one {i}. " * (1 + i % 3) for i in range(13)]
sites = ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]
with data_parallel() as r:
    got = {"sentences": capture_shared(model, texts, sites, "sentences", batch_size=4, progress=False),
           "few": capture_shared(model, texts[:5], sites, "last_prompt", batch_size=8, progress=False)}  # rank 1: none
alone = {"sentences": capture(model, texts, sites, "sentences", batch_size=4, progress=False),
         "few": capture(model, texts[:5], sites, "last_prompt", batch_size=8, progress=False)}
same = {k: all(torch.equal(got[k][s], alone[k][s]) for s in sites) and got[k].labels == alone[k].labels
        and got[k].n_tokens == alone[k].n_tokens
        and all(torch.equal(a, b) for a, b in zip(got[k].meta_tensors().values(), alone[k].meta_tensors().values()))
        for k in got}
os.write(1, (json.dumps({"rank": r.rank, "same": same, "rows": len(got["sentences"])}) + "\\n").encode())  # one write
"""


def _objects(text: str) -> list[dict]:
    """Every JSON object printed in `text`, wherever the ranks' lines met."""
    dec, out, i = json.JSONDecoder(), [], text.find("{")
    while i >= 0:
        obj, end = dec.raw_decode(text, i)
        out.append(obj)
        i = text.find("{", end)
    return out


def test_capture_shared_equals_capture_on_every_rank(tmp_path):
    """`capture_shared` under 2 ranks: every rank holds capture()'s rows, example numbers, positions and labels,
    also when one rank has no batch."""
    job = tmp_path / "cap.py"
    job.write_text(_CAPTURE)
    r = subprocess.run([*TORCHRUN, str(job)], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = sorted(_objects(r.stdout), key=lambda d: d["rank"])
    assert [d["rank"] for d in lines] == [0, 1]
    assert all(d["same"] == {"sentences": True, "few": True} and d["rows"] > 13 for d in lines)
