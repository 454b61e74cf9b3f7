"""Data-parallel jobs under torchrun (2 CPU processes, gloo): the result equals one process's, bit for bit."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lens.capture_folder import open_capture
from lens.distributed import Ranks, block, part_name
from tests.helpers import TORCHRUN, capture_equal, needs_distributed
from tests.helpers import TORCHRUN_ENV as ENV

pytestmark = needs_distributed

_JOB = """
import sys, time, torch
torch.set_num_threads(1)
from lens.tiny import tiny_model
from lens.capture_memory import capture
from lens.capture_folder import capture_to_disk
texts = [f"example number {i} with some text. " * (1 + i % 3) for i in range(150)]
model = tiny_model("llama")
if len(sys.argv) > 3:  # slow every forward down, so the job can be killed midway
    model.hf.register_forward_pre_hook(lambda *a: time.sleep(0.1))
def items():
    for i, t in enumerate(texts):
        yield t
for select in sys.argv[2].split(","):  # one folder per selection: OUT/<selection>
    capture_to_disk(model, items(), ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"], select,
            batch_size=4, shard_rows=40, out=f"{sys.argv[1]}/{select}", progress=False)
print("DONE")
"""


def test_block_covers_every_input_once_in_order():
    for n in (0, 1, 7, 64, 65, 1000):
        for world in (1, 2, 3, 8):
            parts = [block(n, Ranks(r, world), align=8) for r in range(world)]
            assert [i for p in parts for i in p] == list(range(n))
            assert all(p.start % 8 == 0 for p in parts if len(p))
    assert part_name(Ranks(1, 4)) == "part-001-of-004"


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The job's folders from one process: ONE/all and ONE/sentences."""
    one = tmp_path_factory.mktemp("one")
    subprocess.run([sys.executable, "-c", _JOB, str(one), "all,sentences"], env=ENV, check=True, capture_output=True)
    return one


def test_two_process_capture_equals_one_process(tmp_path, one_process):
    two = tmp_path / "two"
    job = tmp_path / "job.py"
    job.write_text(_JOB)
    r = subprocess.run([*TORCHRUN, str(job), str(two), "all,sentences"], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    for select in ("all", "sentences"):
        capture_equal(one_process / select, two / select)
        folder = open_capture(two / select)
        assert folder.manifest["parts"] == ["part-000-of-002", "part-001-of-002"]
        assert folder.summary(verify=True)["examples"] == 150
    again = subprocess.run([*TORCHRUN, str(job), str(two), "all,sentences"], env=ENV, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]  # a complete run is returned as it is
    for select in ("all", "sentences"):
        capture_equal(one_process / select, two / select)


def _worker(launcher: int, rank: int) -> int:
    """The pid of the launcher's worker process with RANK=`rank` (read from /proc)."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parent = int(proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == launcher and f"RANK={rank}".encode() in proc.joinpath("environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
    raise AssertionError(f"no worker with RANK={rank} under {launcher}")


def test_killed_job_resumes_to_the_same_folder(tmp_path, one_process):
    two = tmp_path / "two"
    job = tmp_path / "job.py"
    job.write_text(_JOB)
    proc = subprocess.Popen([*TORCHRUN, str(job), str(two), "all", "slow"], env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (two / "all" / "part-000-of-002" / "manifest.json").exists():
        time.sleep(0.1)
    time.sleep(1.0)
    os.kill(_worker(proc.pid, rank=1), signal.SIGKILL)  # one rank dies; the launcher then stops the other
    try:
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    top = two / "all" / "manifest.json"
    assert not top.exists() or not json.loads(top.read_text()).get("complete")
    parts = [json.loads(m.read_text()) for m in (two / "all").glob("part-*/manifest.json")]
    assert parts and not all(p["complete"] for p in parts)  # killed midway
    r = subprocess.run([*TORCHRUN, str(job), str(two), "all"], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    capture_equal(one_process / "all", two / "all")


def test_cli_capture_under_torchrun_reports_once(tmp_path, monkeypatch, capsys):
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"text": f"line {i} of the inputs"}) + "\n" for i in range(40)))
    out = tmp_path / "cap"
    r = subprocess.run([*TORCHRUN, "-m", "lens.cli.main", "capture", "-i", str(inputs), "-o", str(out),
                        "-s", "blocks.1.hook_resid_post", "--select", "last_prompt", "--json"],
                       env=ENV, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('"rows"') == 1  # one report, from rank 0
    assert json.loads(r.stdout)["rows"] == 40
    single = tmp_path / "single"
    from tests.helpers import run_cli

    code, _, err = run_cli(monkeypatch, capsys, ["capture", "-i", inputs, "-o", single, "-s",
                                                 "blocks.1.hook_resid_post", "--select", "last_prompt", "--json"])
    assert code == 0, err
    capture_equal(single, out)
    shutil.rmtree(out)
    if shutil.which("accelerate", path=os.path.dirname(sys.executable)) is None:
        return
    # accelerate launch: on CPU its --multi_gpu launcher starts the processes (through torch's elastic runner);
    # `--cpu` alone runs one process
    acc = [os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch", "--multi_gpu", "--num_processes",
           "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "lens.cli.main"]
    r2 = subprocess.run([*acc, "capture", "-i", str(inputs), "-o", str(out), "-s", "blocks.1.hook_resid_post",
                         "--select", "last_prompt", "--json"], env=ENV, capture_output=True, text=True, cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert r2.stdout.count('"rows"') == 1 and json.loads(r2.stdout)["rows"] == 40
    assert json.loads((out / "manifest.json").read_text())["world"] == 2  # two ranks took part
    capture_equal(single, out)


# ------------------------------------------------------------------ sampling, CoT-decoding, steer-check

_STUDIES = """
import json, random, sys, torch
torch.set_num_threads(1)
from lens.distributed import all_gather_json, data_parallel
from lens.decoding.cot import cot_decode
from lens.decoding.generate import generate
from lens.models import load_model
from lens.organism import corpus as C
from lens.studies import cot_study, sampling_study
from saes.handmade import handmade_dictionary
from saes.steer_check import steer_check

rng = random.Random(0)
problems = [[rng.randint(10, 99) for _ in range(rng.randint(2, 6))] for _ in range(14)]
prompts = ["Q:" + "+".join(map(str, p)) + "=?\\n" for p in problems]  # lengths differ: padded batches
answers = [sum(p) for p in problems]
is_correct = lambda i, t: C.parse_answer(t) == answers[i]
answer_ok = lambda i, a: a is not None and a.strip() == str(answers[i])
base, thinking = load_model("organism:base"), load_model("organism:thinking")
d = handmade_dictionary(base.d_model, "blocks.2.hook_resid_post")
bs = int(sys.argv[1])
calls = [0]
base.hf.register_forward_pre_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
with data_parallel() as r:
    samp = sampling_study.run({"base": base, "thinking": thinking}, prompts, is_correct, samples=4,
                              max_new_tokens=40, batch_size=bs, seed=3)
    texts = [s.text for s in generate(base, prompts, 40, greedy=False, n=3, seed=5, batch_size=bs,
                                      data_parallel=True).samples]
    cot = cot_study.run(base, prompts[:9], answer_ok, k=3, max_new_tokens=30, extractor="organism", batch_size=6,
                        answer_prompt=None)
    # two-token branches: many have no number, and continue after the answer prompt (the organism spells it)
    short = cot_study.run(base, prompts, answer_ok, k=3, max_new_tokens=2, extractor="last_number", batch_size=6,
                          answer_prompt="\\nA:")
    top2 = [s.top2.tolist() for s in generate(base, prompts[:7], 8, return_top2=True, batch_size=2,
                                              data_parallel=True).samples]
    branches = [[[b.text, b.answer, b.token_ids] for b in res.branches]
                for res in cot_decode(base, prompts[:7], k=3, max_new_tokens=12, extractor="organism", batch_size=4,
                                      answer_prompt=None, data_parallel=True)]
    rows = steer_check(base, d, [1, 2], prompts[:6], is_correct, alphas=(2.0, 8.0), n_random=1, max_new_tokens=20,
                       batch_size=4, reference=thinking)
    forwards = all_gather_json(calls[0])  # the base model's forward calls on each rank
if r.main:
    print(json.dumps({"sampling": samp, "texts": texts, "cot": cot, "cot_answer_prompt": short, "top2": top2,
                      "cot_branches": branches, "steer_check": rows, "forwards": forwards}))
"""


def test_two_process_studies_equal_one_process(tmp_path):
    """Sampled texts and pass@k, CoT-decoding, top-2 probabilities and steer-check rows: 2 ranks == 1 process."""
    job = tmp_path / "studies.py"
    job.write_text(_STUDIES)
    one = subprocess.run([sys.executable, str(job), "8"], env=ENV, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([*TORCHRUN, str(job), "8"], env=ENV, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = json.loads(one.stdout), json.loads(two.stdout)  # rank 0 alone prints
    assert a["sampling"]["pass_at_k"]["base"]["1"]["value"] >= 0 and len(a["texts"]) == 14 * 3
    assert len(set(a["texts"])) > 14  # really sampled: samples of one prompt differ
    assert [r["kind"] for r in a["steer_check"]] == ["baseline", "reference"] + ["feature"] * 4 + ["random"] * 2
    assert all(r["only_at_where"] for r in a["steer_check"][2:])
    assert a["cot_answer_prompt"]["answered_by_prompt"] > 0
    assert [len(r) for r in a["cot_branches"]] == [3] * 7  # every branch's text, answer and ids compared below
    assert len(b["forwards"]) == 2 and all(0 < f < 0.9 * a["forwards"][0] for f in b["forwards"])  # work was split
    for key in a.keys() - {"forwards"}:
        assert a[key] == b[key], key
    # seeds are per (seed, problem, sample): another batch size in another process count gives the same samples
    other = subprocess.run([*TORCHRUN, str(job), "5"], env=ENV, capture_output=True, text=True)
    assert other.returncode == 0, other.stderr[-3000:]
    c = json.loads(other.stdout)
    assert c["texts"] == a["texts"] and c["sampling"]["pass_at_k"] == a["sampling"]["pass_at_k"]


_REPRODUCE = """
import sys, torch
torch.set_num_threads(1)
from lens.studies.reproduce import Sizes, reproduce
sizes = Sizes(n=12, samples=4, hybrid_n=12, cot_n=8, k=4, feature_n=8, n_contrast=32, top_features=1, n_random=1,
              feature_pages=2, batch_size=16, rl_steps=2, rl_n=4, rl_pass_k=2, rl_experiments=("one_shot",))
reproduce(sys.argv[1], sizes=sizes, progress=False)
"""


@pytest.mark.slow
def test_two_process_reproduce_report_equals_one_process(tmp_path):
    """`lens reproduce` (every step; the RL step, short, on rank 0 in a process of its own) under torchrun:
    rank 0's report equals one process's but timings; the hybrid and the diff split their work too."""
    from lens.organism import bundled_path

    if not (bundled_path("base") / "config.json").exists():
        pytest.skip("the bundled organism is not built yet (lens organism train)")
    job = tmp_path / "reproduce.py"
    job.write_text(_REPRODUCE)
    one = subprocess.run([sys.executable, str(job), str(tmp_path / "one")], env=ENV, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([*TORCHRUN, str(job), str(tmp_path / "two")], env=ENV, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    for res in (a, b):
        assert all(res[k]["status"] == "ok" for k in ("sampling", "hybrid", "cot", "feature", "diff", "rl"))
        for row in res["rl"]["models"].values():
            for run in row["runs"].values():
                run.pop("train_seconds", None)  # a timing
    from lens.studies.reproduce import without_run_facts

    a, b = without_run_facts(a), without_run_facts(b)
    for key in a.keys():
        assert a[key] == b[key], key
    names = [sorted(p.name for p in (tmp_path / d).iterdir()) for d in ("one", "two")]
    assert names[0] == names[1] and {"index.html", "results.json", "results.md"} <= set(names[1])
