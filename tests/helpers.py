"""Helpers shared by several test files: the CLI run in-process, steered HF generation, and 2-process torchrun."""

import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the environment of a torchrun job in the tests: offline, one thread, gloo, the repository importable
TORCHRUN_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": ROOT,
                "OMP_NUM_THREADS": "1", "LENS_DIST_BACKEND": "gloo"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
needs_distributed = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


def capture_equal(a, b) -> None:
    """Capture folders a and b hold the same rows, bit for bit, with the same example numbers, positions, tokens."""
    from lens.capture_folder import open_capture

    A, B = open_capture(a).load(), open_capture(b).load()
    assert A.acts.keys() == B.acts.keys()
    for s in A.acts:
        assert torch.equal(A[s], B[s]), s
    for key in ("example", "start", "end", "token_id"):
        assert torch.equal(getattr(A, key), getattr(B, key)), key
    assert A.labels == B.labels


def untimed(x):
    """`x` (JSON) without its timings (`seconds`, `*_per_s`), which differ between any two runs."""
    if isinstance(x, dict):
        return {k: untimed(v) for k, v in x.items() if k != "seconds" and not k.endswith("_per_s")}
    return [untimed(v) for v in x] if isinstance(x, list) else x


def two_machines(args: list[str], cwds: list, env: list[dict] | None = None, timeout: float = 300,
                 procs: int = 1) -> list:
    """Two torchrun agents started as on two machines (`--nnodes 2`, `procs` processes each, a static rendezvous on
    127.0.0.1), agent i in folder cwds[i] with environment env[i] (default TORCHRUN_ENV), both running `args`
    (e.g. ["-m", "lens.cli.main", "capture", ...]); their CompletedProcess objects, stdout and stderr as text."""
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import signal
    import tempfile

    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", str(procs),
              "--master-addr", "127.0.0.1", "--master-port", str(port)]
    logs = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in range(2)]  # no pipe to fill up
    agents = [subprocess.Popen([*launch, "--node-rank", str(i), *map(str, args)], cwd=cwds[i],
                               env=(env or [TORCHRUN_ENV] * 2)[i], text=True, stdout=logs[i][0], stderr=logs[i][1],
                               start_new_session=True) for i in range(2)]
    out = []
    try:
        for p, (o, e) in zip(agents, logs, strict=True):
            p.wait(timeout=timeout)
            o.seek(0), e.seek(0)
            out.append(subprocess.CompletedProcess(p.args, p.returncode, o.read(), e.read()))
    finally:
        for p in agents:
            if p.poll() is None:  # the agent and the workers it started
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for o, e in logs:
            o.close(), e.close()
    return out


def run_cli(monkeypatch, capsys, argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `lens argv` run in-process."""
    from lens.cli.main import main

    monkeypatch.setattr(sys, "argv", ["lens", *map(str, argv)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


def generate_steered(model, prompts, ivs, new: int):
    """(encoded prompts, HF generate output with logits, steering handle): greedy, left-padded, `new` tokens."""
    from lens.interventions import steer

    tok = model.tokenizer
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad(), steer(model, ivs) as h:
        out = model.hf.generate(**enc, max_new_tokens=new, do_sample=False, output_logits=True,
                                return_dict_in_generate=True, pad_token_id=tok.pad_token_id, eos_token_id=None)
    return enc, out, h
