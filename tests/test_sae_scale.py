"""SAE training across processes (torchrun, gloo DDP) and streamed from a model's forward passes."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from lens.capture_folder import capture_to_disk
from lens.distributed import Ranks
from lens.errors import LensError
from lens.tiny import tiny_model
from saes.buffer import RowSource
from saes.config import TrainConfig
from saes.ddp import check_parallel, share
from saes.stream import model_source
from saes.train import train_sae

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1",
       "LENS_DIST_BACKEND": "gloo", "WANDB_MODE": "disabled"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
SITE = "blocks.1.hook_resid_post"

# AuxK (dead latents after 5 steps) and the activation-norm scaler are both on, so the dead-latent
# bookkeeping and the scale estimate are exercised across ranks too.
_JOB = """
import sys, torch
torch.set_num_threads(1)
from saes.config import TrainConfig
from saes.train import train_sae
g = torch.Generator().manual_seed(0)
rows = torch.randn(3000, 32, generator=g) * torch.linspace(0.2, 3, 32)
cfg = TrainConfig(architecture=sys.argv[2], expansion=4, k=4, total_rows=64 * 30, batch_size=64, buffer_rows=512,
                  checkpoint_every=10, dead_feature_window=5, feature_sampling_window=10,
                  normalize="expected_average_only_in")
res = train_sae(rows, sys.argv[1], cfg, progress=False, stop_after=int(sys.argv[3]) if len(sys.argv) > 3 else None)
print("DONE", res.steps)
"""


def _weights(path) -> dict:
    return {**load_file(path / "sae_weights.safetensors"), **load_file(path / "sparsity.safetensors")}


def _close(a, b, tol: float) -> None:
    A, B = _weights(a), _weights(b)
    assert A.keys() == B.keys()
    for k in A:
        assert (A[k] - B[k]).abs().max() <= tol, (k, float((A[k] - B[k]).abs().max()))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The job run by one process: (its script, its SAE folder)."""
    tmp = tmp_path_factory.mktemp("one")
    job = tmp / "job.py"
    job.write_text(_JOB)
    subprocess.run([sys.executable, str(job), str(tmp / "one"), "topk"], env=ENV, check=True, capture_output=True)
    return job, tmp / "one"


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_process_training_equals_one_process(tmp_path, one_process):
    job, one = one_process
    two = tmp_path / "two"
    r = subprocess.run([*TORCHRUN, str(job), str(two), "topk"], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    _close(one, two, 1e-5)
    log1, log2 = (json.loads((p / "lens.json").read_text())["log"] for p in (one, two))
    assert [e["step"] for e in log1] == [e["step"] for e in log2]
    for a, b in zip(log1, log2, strict=True):  # the log covers the whole global batch, not rank 0's share
        assert a["mse"] == pytest.approx(b["mse"], rel=1e-4) and a["l0"] == pytest.approx(b["l0"])


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
@pytest.mark.parametrize("architecture", ["abstopk", "standard", "gated", "jumprelu", "matching_pursuit"])
def test_every_data_parallel_architecture_trains_what_one_process_trains(tmp_path, one_process, architecture):
    """docs/scale.md's list: each architecture allowed under a launcher ends at one process's weights."""
    job, _ = one_process
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, str(job), str(one), architecture], env=ENV, check=True, capture_output=True)
    r = subprocess.run([*TORCHRUN, str(job), str(two), architecture], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    _close(one, two, 1e-5)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_process_checkpoint_resumes_in_one_process(tmp_path, one_process):
    job, one = one_process
    mixed = tmp_path / "mixed"
    # two processes stopped after 15 steps (a checkpoint, as a kill leaves), finished by one process
    r = subprocess.run([*TORCHRUN, str(job), str(mixed), "topk", "15"], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (mixed / "checkpoints" / "latest.json").exists() and not (mixed / "cfg.json").exists()
    subprocess.run([sys.executable, str(job), str(mixed), "topk"], env=ENV, check=True, capture_output=True)
    assert json.loads((mixed / "lens.json").read_text())["steps"] == 30
    _close(one, mixed, 1e-5)


def test_parallel_settings_refused_and_shares_cover_the_batch():
    with pytest.raises(LensError, match="batchtopk"):
        check_parallel("batchtopk", 64, Ranks(0, 2))
    with pytest.raises(LensError, match="multiple of the number of processes"):
        check_parallel("topk", 63, Ranks(0, 2))
    check_parallel("jumprelu", 63, Ranks(0, 3))
    batch = torch.arange(12.0)[:, None]
    assert torch.equal(torch.cat([share(batch, Ranks(r, 3)) for r in range(3)]), batch)


@pytest.mark.filterwarnings("ignore::UserWarning")  # sae_lens notes on its own defaults (matching_pursuit)
def test_architectures_with_batch_wide_state_are_refused_data_parallel(tmp_path, monkeypatch):
    # BatchTopK and what is built on it pick latents over the whole batch and keep a running threshold (a
    # buffer) that each process would update from its own share; every other built-in trains like one process.
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY
    from sae_lens.saes.matryoshka_batchtopk_sae import (
        MatryoshkaBatchTopKTrainingSAE,
        MatryoshkaBatchTopKTrainingSAEConfig,
    )

    from saes.config import registered_architectures, training_sae
    from saes.ddp import check_state

    class MyMatryoshka(MatryoshkaBatchTopKTrainingSAE):
        pass

    class RunningMeanSAE(StandardTrainingSAE):  # a user's architecture with state outside its parameters
        def __init__(self, cfg, use_error_term=False):
            super().__init__(cfg, use_error_term)
            self.register_buffer("running_mean", torch.zeros(cfg.d_in))

    monkeypatch.setitem(SAE_TRAINING_CLASS_REGISTRY, "my_matryoshka",
                        (MyMatryoshka, MatryoshkaBatchTopKTrainingSAEConfig))
    monkeypatch.setitem(SAE_TRAINING_CLASS_REGISTRY, "my_ema", (RunningMeanSAE, StandardTrainingSAEConfig))
    refused = {"batchtopk", "matryoshka_batchtopk", "my_matryoshka"}
    for arch in registered_architectures():
        if arch in refused:
            with pytest.raises(LensError, match=f"{arch} cannot train data-parallel across 2 processes: .*train it in "
                                                "one process"):
                check_parallel(arch, 64, Ranks(1, 2))
            check_parallel(arch, 64, Ranks(0, 1))  # one process: nothing to refuse
        else:
            check_parallel(arch, 64, Ranks(0, 2))
            if arch != "my_ema":
                check_state(training_sae(TrainConfig(architecture=arch, d_sae=32, k=4), 16), arch)
    with pytest.raises(LensError, match=r"my_ema cannot train data-parallel: .*\(running_mean\).*one process"):
        check_state(training_sae(TrainConfig(architecture="my_ema", d_sae=32), 16), "my_ema")

    # train_sae under a launcher's environment refuses before the process group or the output folder
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    cfg = TrainConfig(architecture="matryoshka_batchtopk", d_sae=32, k=4, total_rows=128, batch_size=64,
                      buffer_rows=128, options={"matryoshka_widths": [8, 32]})
    with pytest.raises(LensError, match="matryoshka_batchtopk cannot train data-parallel"):
        train_sae(torch.randn(256, 16), tmp_path / "sae", cfg, progress=False)
    assert not (tmp_path / "sae").exists()


TEXTS = [f"row {i}: the quick brown fox {'jumps ' * (i % 4)}over {i * 7} lazy dogs." for i in range(40)]
CFG = dict(expansion=2, k=4, batch_size=64, buffer_rows=256, checkpoint_every=5, dead_feature_window=4,
           normalize="expected_average_only_in")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return tiny_model("llama", n_layers=2, d_model=32)


def test_streamed_training_equals_training_on_the_capture_folder(tmp_path, tiny):
    # "Same": the stream yields the rows capture_to_disk(out=) writes (same model, inputs, site, selection,
    # forward batch size, float32), in the same order; the shuffled batches depend on that order only,
    # so every step sees the same batch and the weights come out equal bit for bit. total_rows is over
    # one epoch's rows, so the stream is re-run (the inputs re-read) like the folder is re-read.
    folder = capture_to_disk(tiny, TEXTS, [SITE], "from:1", batch_size=4, out=tmp_path / "cap", shard_rows=100,
                     progress=False)
    n = folder.n_rows
    cfg = TrainConfig(total_rows=(n * 3 // 2) // 64 * 64, **CFG)
    src = model_source(tiny, TEXTS, SITE, "from:1", batch_size=4)
    assert src.d_in == 32 and torch.equal(torch.cat(list(src)), folder[SITE])
    a = train_sae(folder, tmp_path / "a", cfg, site=SITE, progress=False)
    b = train_sae(src, tmp_path / "b", cfg, progress=False)
    assert a.steps == b.steps == cfg.total_steps and a.rows > n
    A, B = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for k in A:
        assert torch.equal(A[k], B[k]), k
    meta = json.loads((tmp_path / "b" / "lens.json").read_text())
    assert meta["site"] == SITE and meta["model"]["fingerprint"] == tiny.fingerprint


def test_streamed_training_resumes_to_the_same_weights(tmp_path, tiny):
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    cfg = TrainConfig(total_rows=64 * 16, **CFG)
    whole = train_sae(model_source(tiny, inputs, SITE, batch_size=4), tmp_path / "whole", cfg, progress=False)
    part = train_sae(model_source(tiny, inputs, SITE, batch_size=4), tmp_path / "split", cfg, progress=False,
                     stop_after=7)
    assert part.steps == 7 and (tmp_path / "split" / "checkpoints" / "latest.json").exists()
    rest = train_sae(model_source(tiny, inputs, SITE, batch_size=4), tmp_path / "split", cfg, progress=False)
    assert rest.resumed_from == 7 and rest.steps == whole.steps == 16  # rows of steps 1-7 replayed, not trained
    A, B = _weights(tmp_path / "whole"), _weights(tmp_path / "split")
    for k in A:
        assert torch.equal(A[k], B[k]), k
    inputs.write_text("".join(json.dumps({"text": t + "!"}) + "\n" for t in TEXTS))
    train_sae(model_source(tiny, inputs, SITE, batch_size=4), tmp_path / "other", cfg, progress=False, stop_after=5)
    inputs.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    with pytest.raises(LensError, match="other activations"):  # the checkpoint was taken on other inputs
        train_sae(model_source(tiny, inputs, SITE, batch_size=4), tmp_path / "other", cfg, progress=False)


def test_stream_refuses_inputs_it_cannot_reread(tiny):
    with pytest.raises(LensError, match="re-readable"):
        model_source(tiny, (t for t in TEXTS), SITE)
    with pytest.raises(LensError, match="no inputs"):
        model_source(tiny, [], SITE)
    assert isinstance(model_source(tiny, lambda: iter(TEXTS[:3]), SITE), RowSource)


def _cli(args, tmp_path, torchrun=False):
    head = TORCHRUN if torchrun else [sys.executable]
    return subprocess.run([*head, "-m", "lens.cli.main", *args], env=ENV, capture_output=True, text=True, cwd=tmp_path)


@pytest.mark.slow
def test_cli_streamed_and_torchrun_training(tmp_path):
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"text": f"{10 + i}+{20 + i}="}) + "\n" for i in range(60)))
    common = ["--site", "blocks.1.hook_resid_post", "--expansion", "2", "--k", "4", "--total-rows", "1024",
              "--batch-size", "64", "--buffer-rows", "256", "--json"]
    r = _cli(["sae", "train", "-m", "organism:base", "-i", str(inputs), "-o", str(tmp_path / "s"), *common], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["steps"] == 16
    r = _cli(["capture", "-m", "organism:base", "-i", str(inputs), "-o", str(tmp_path / "cap"), "-s",
              "blocks.1.hook_resid_post"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _cli(["sae", "train", "-c", str(tmp_path / "cap"), "-o", str(tmp_path / "c"), *common], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    _close(tmp_path / "s", tmp_path / "c", 0.0)  # streamed = captured, bit for bit
    r = _cli(["sae", "train", "-c", str(tmp_path / "cap"), "-o", str(tmp_path / "d"), *common], tmp_path, True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('"steps"') == 1  # one report, from rank 0
    _close(tmp_path / "c", tmp_path / "d", 1e-5)
    r = _cli(["sae", "train", "-c", str(tmp_path / "cap"), "-m", "organism:base", "-o", str(tmp_path / "e")],
             tmp_path)
    assert r.returncode == 2 and "not both" in r.stderr


_STREAM_JOB = """
import sys, time, torch
torch.set_num_threads(1)
from lens.tiny import tiny_model
from saes.config import TrainConfig
from saes.stream import model_source
from saes.train import train_sae
model = tiny_model("llama", n_layers=2, d_model=32)
if len(sys.argv) > 3:  # slow every forward down, so the run can be killed midway
    model.hf.register_forward_pre_hook(lambda *a: time.sleep(0.05))
cfg = TrainConfig(total_rows=64 * 16, **{CFG!r})
train_sae(model_source(model, sys.argv[2], {SITE!r}, batch_size=4), sys.argv[1], cfg, progress=False)
print("DONE")
"""


@pytest.mark.slow
def test_streamed_training_killed_midway_resumes_to_the_same_weights(tmp_path):
    import signal
    import time

    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    job = tmp_path / "job.py"
    job.write_text(_STREAM_JOB.format(CFG=CFG, SITE=SITE))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run([sys.executable, str(job), str(whole), str(inputs)], env=ENV, check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, str(job), str(killed), str(inputs), "slow"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "checkpoints" / "latest.json").exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (killed / "checkpoints" / "latest.json").exists() and not (killed / "cfg.json").exists()
    subprocess.run([sys.executable, str(job), str(killed), str(inputs)], env=ENV, check=True, capture_output=True)
    _close(whole, killed, 0.0)
