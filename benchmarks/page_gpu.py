"""The GPU section of docs/benchmarks.md: the latest `bash benchmarks/gpu.sh` tables from their JSON in
docs/results/benchmarks/gpu/, then the older H100 rows, kept as fixed text (they were printed, not recorded).

Used by benchmarks/page.py; the section depends on the JSON files only.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDER = "docs/results/benchmarks"
#: the GPU files the page reads, under FOLDER
GPU_FILES = ("gpu/capture_h200.json", "gpu/runs_h200.json", "gpu/hybrid_h200.json", "gpu/sae_step_topk_h200.json",
             "gpu/sae_step_batchtopk_h200.json", "gpu/steering_h200_run1_qwen15b_arch.json",
             "gpu/steering_h200_run2_qwen15b_arch.json", "gpu/steering_h200_run1_smollm2_arch.json",
             "gpu/steering_h200_run2_smollm2_arch.json", "gpu/steering_h200_run3_smollm2_arch.json")
#: the steered-generation runs, per size, in the order they ran
STEERING = {"qwen1.5b-arch": ("run1", "run2"), "smollm2-arch": ("run1", "run2", "run3")}

HOW = """\
## GPU rows: produced by `bash benchmarks/gpu.sh` on a GPU machine, not regenerated here

This project's CPU machine cannot re-run these. `benchmarks/gpu.sh` runs `tests/test_gpu.py`, the SAE step
A/B, then `benchmarks/run.py --device cuda` for each table, each step under a time limit (`DEADLINE=S` caps
the whole run); every table's JSON goes to `$OUT`. Copy it to `docs/results/benchmarks/gpu/` and run
`python benchmarks/page.py`.

```bash
OUT=gpu-out DEADLINE=540 bash benchmarks/gpu.sh      # everything: tests, SAE step, qwen, hybrid, smollm2
ONLY=capture bash benchmarks/gpu.sh                  # the capture tables only (ONLY=steering likewise)
PARTS=hybrid,tests bash benchmarks/gpu.sh            # some steps only, in the order given
# by hand, any size:  python benchmarks/run.py --device cuda --sizes smollm2-arch,qwen1.5b-arch --json-out F
```

Peers on a GPU machine with no package index: download their wheels here into `.whl/` (git-ignored;
`benchmarks/gpu.sh` installs them to /tmp/site), e.g. for Python 3.12:
`pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl
transformer-lens==3.9.0 better-abc fancy-einsum beartype typeguard datasets==5.2.0 dill multiprocess
nnsight==0.8.1 greenlet pydantic pydantic-core annotated-types typing-inspection websocket-client
zstandard truststore platformdirs sae-lens==6.54.12 simple-parsing docstring-parser tenacity python-dotenv`
(14 MB). sae_lens also imports wandb at import time: add wandb and its dependencies (`pip download
--only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64
--platform any wandb==0.31.0`, leaving out what transformers already brings: about 22 MB), or the SAE tests
skip and the SAE step A/B fails.

The GPU machine has no hub access, so the models are random weights at real shapes, in bfloat16:
`smollm2-arch` (SmolLM2-135M's configuration: 30 layers, width 576) and `qwen1.5b-arch` (Qwen2.5-1.5B's,
the papers' base model: 28 layers, width 1536, vocabulary 151,936), with the character tokenizer (so a
text of 100-140 characters is 100-140 tokens). A model costs the same per token whatever its weights.
"""

H100 = """\
### Earlier rows: one NVIDIA H100 80GB, 2026-11-26 (fixed text)

torch 2.11.0+cu130, transformers 5.17.0, transformer-lens 3.9.0, nnsight 0.8.1. Printed by two runs of the
script of that day (run 1: capture and steering tables, then the hybrid; run 2: capture tables and the
hybrid); no JSON was written. `tests/test_gpu.py` passed both times (12 tests, commit 80784a5).

#### Capture of every `resid_post`

64 texts (7,722 tokens), batch 8; median of 5 rounds. Run 2 is commit 80784a5 (rows copied to the host
on a side stream, finiteness flags per batch); run 1 was the working tree just before it (the same
engine; rows copied on the compute stream; never committed on its own). The bare forward itself moved
0.17 -> 0.20 s between the two runs (two different machines):

| method (time vs bare HF forward) | smollm2-arch run 1 | run 2 | qwen1.5b-arch run 1 | run 2 |
|---|---|---|---|---|
| bare HF forward (token ids on the GPU) | 1.0 (0.168 s) | 1.0 (0.208 s) | 1.0 (0.174 s) | 1.0 (0.201 s) |
| lens capture, token ids, rows to CPU memory | 1.254 | 1.418 | 1.252 | 1.422 |
| lens capture, token ids, rows kept on the GPU (`device="cuda"`) | 1.184 | 1.373 | 1.086 | 1.430 |
| lens capture, token ids, to disk | 4.133 | 4.028 | 7.292 | 9.029 |
| HF tokenize + forward (texts) | 1.205 | 1.297 | 1.559 | 1.415 |
| lens capture, texts, memory | 1.301 | 1.688 | 1.450 | 1.494 |
| TransformerLens Bridge run_with_cache | 2.519 | 2.494 | 2.417 | 2.448 |
| TransformerLens HookedTransformer run_with_cache | 2.922 | 2.873 | 2.752 | 2.621 |
| nnsight trace (save every layer) | 1.321 | 1.652 | 1.211 | 1.282 |

#### Steered generation

Batch 4, 64 new tokens, one `add` at the middle layer on every generated position (run 1;
`speed_vs_hf`, higher is better):

| method | smollm2-arch | qwen1.5b-arch |
|---|---|---|
| plain HF generate | 1.0 (197.5 tokens/s) | 1.0 (201.0 tokens/s) |
| lens steer | **1.034** | **1.004** |
| TransformerLens Bridge generate + same hook | 0.459 | 0.473 |
| nnsight generate + same intervention | 0.944 | 0.873 |

#### The hybrid

A random pair of `smollm2-arch` models (16 prompts, 24 new tokens, run 2), measured before paper mode
became the hybrid's default. Two random models disagree on every token, so the gate fires on 100% of
tokens: the worst case, each token costing both models' step plus three single-position base forwards:

| method | new tokens/s | ratio to plain base generate |
|---|---|---|
| plain base generate | 621.6 | 1.0 |
| lens hybrid (KV caches) | 128.3 | 0.206 |
| reference style (full recompute, one prompt at a time, as the paper's code) | 7.0 | 0.011 |
| full recompute, batched | 125.6 | 0.202 |
| lens hybrid / reference style | | **18.4x** |

"""

H100_READING = """\
#### Reading (H100 rows)

- Steering: lens is at HF generate's speed on the GPU (1.00-1.03x); the engine makes no host syncs
  there (positions and masks stay on the device; `record=False`). TransformerLens's Bridge runs at
  0.46-0.47x, nnsight at 0.87-0.94x.
- Capture: lens (1.09-1.69x the bare forward) and nnsight (1.21-1.65x) are the fastest ways to read
  every layer on the GPU; TransformerLens takes 2.4-2.9x. lens misses the <= 1.03x target there. Both model
  sizes ran at the same tokens/s (~40k), and so did steered generation (~200 tokens/s): at batch 8 the
  H100 waits on the host's kernel launches, so everything lens does per batch on the host shows. The
  bare forward's inputs sit on the GPU before timing starts; lens's inputs (and "HF tokenize +
  forward"'s) were copied each batch from pageable memory, a copy that waits for the device to go idle
  and so stops the host from queueing the next batch early. Commit 019b561 (after these runs) sends
  inputs, positions and row indices through pinned memory without that wait and gathers selected rows
  once per batch (measured in the H200 rows above).
- To disk: bound by the disk. Every `resid_post` in float32 is 28 x 1536 x 4 B = 172 KB per token for
  the 1.5B shape: 1.33 GB per run, written (and fsynced) at 0.8-1.05 GB/s, against a forward that reads
  44k tokens/s (7.6 GB/s of activations). Capture fewer sites or `dtype=bfloat16` (half the bytes);
  the disk-vs-memory target (>= 0.9x) is for the CPU, where the forward is the bottleneck.
- Hybrid: 18x the paper-style reference. On a GPU at this size the batched full recompute costs no more
  than the cached hybrid (the GPU is idle either way at 24 tokens); the KV cache pays off as sequences
  grow (the recompute is quadratic) and on the CPU (the batched full recompute rows of the hybrid
  section). This gate-always-fires case misses the 0.35x-of-plain target (0.21x; the bound is
  1 / (2 + 3 coefficient forwards) of a step of both models, ~0.2).
"""


def _pick(rows: list[dict], method: str) -> dict:
    return next(r for r in rows if r["method"] == method)


def h200_capture(d: dict) -> str:
    """The capture table of one gpu.sh run (time vs the bare forward, median and fastest round, per size)."""
    sizes = d["results"]["sizes"]
    names = list(sizes)
    methods = [r["method"] for r in sizes[names[0]]["capture"]]
    head = "| method (time vs bare HF forward: median, fastest round) | " + " | ".join(names) + " |"
    lines = [head, "|---|" + "---|" * len(names)]
    for m in methods:
        cells = []
        for n in names:
            r = _pick(sizes[n]["capture"], m)
            cells.append(f"1.0 ({r['seconds']:.3f} s, {r['tokens_per_s']:,} tokens/s)" if r["time_vs_bare"] == 1.0
                         and m.startswith("bare HF forward (") else f"{r['time_vs_bare']} ({r['fastest_vs_bare']})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _load(root: Path, name: str) -> dict:
    return json.loads((root / FOLDER / "gpu" / name).read_text())


def steering_table(root: Path) -> tuple[str, dict[str, list[float]]]:
    """Steered generation, speed vs plain HF generate, one column per (size, run); and lens steer's ratios."""
    cols = [(size, run, _load(root, f"steering_h200_{run}_{size.replace('.', '').replace('-', '_')}.json"))
            for size, runs in STEERING.items() for run in runs]
    methods = [r["method"] for r in cols[0][2]["results"]["sizes"][cols[0][0]]["steering"]]
    lines = ["| method (speed vs plain HF generate) | " + " | ".join(f"{s} {r}" for s, r, _ in cols) + " |",
             "|---|" + "---|" * len(cols)]
    lens_steer: dict[str, list[float]] = {}
    for m in methods:
        cells = []
        for size, _, d in cols:
            r = _pick(d["results"]["sizes"][size]["steering"], m)
            plain = m == "plain HF generate"
            cells.append(f"1.0 ({r['new_tokens_per_s']} tokens/s)" if plain else str(r["speed_vs_hf"]))
            if m.startswith("lens steer (every"):
                lens_steer.setdefault(size, []).append(r["speed_vs_hf"])
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines), lens_steer


def hybrid_table(d: dict) -> str:
    lines = ["| method | new tokens/s | ratio to plain base generate |", "|---|---|---|"]
    lines += [f"| {r['method']} | {r['new_tokens_per_s']} | {r['ratio_to_plain']} |"
              for r in d["results"]["hybrid"]["rows"]]
    return "\n".join(lines)


def sae_table(root: Path) -> tuple[str, list[float]]:
    lines = ["| SAE | d_in x d_sae | SAELens dense step, rows/s | lens sparse decode, rows/s | speed-up (median) |",
             "|---|---|---|---|---|"]
    ups = []
    for arch in ("topk", "batchtopk"):
        r = _load(root, f"sae_step_{arch}_h200.json")["results"]["rows"][0]
        ups.append(round(r["speedup_median"], 2))
        lines.append(f"| {arch} | {r['d_in']} x {r['d_sae']} | {r['dense_rows_per_s']:,.0f} | "
                     f"{r['sparse_rows_per_s']:,.0f} | {ups[-1]}x |")
    return "\n".join(lines), ups


def h200_section(d: dict, root: Path = ROOT) -> str:
    m, t, res = d["machine"], d["tests"], d["results"]
    runs = _load(root, "runs_h200.json")
    tests_log = (root / FOLDER / "gpu" / runs["tests"]["log"]).read_text().strip().splitlines()[-1]
    q = res["sizes"]["qwen1.5b-arch"]["capture"]
    s = res["sizes"]["smollm2-arch"]["capture"]
    bare, disk = _pick(q, "bare HF forward (token ids)"), _pick(q, "lens capture, token ids (to disk)")
    tokens = round(bare["seconds"] * bare["tokens_per_s"])
    gb = tokens * 28 * 1536 * 4 / 1e9
    kept = [_pick(x, "lens capture, token ids (kept on cuda)")["time_vs_bare"] for x in (q, s)]
    mem = [_pick(x, "lens capture, token ids (memory)")["time_vs_bare"] for x in (q, s)]
    nn = [_pick(x, "nnsight trace (save every layer)")["time_vs_bare"] for x in (q, s)]
    tl = [r["time_vs_bare"] for x in (q, s) for r in x if r["method"].startswith("TransformerLens")]
    steer, lens_steer = steering_table(root)
    hyb = _load(root, "hybrid_h200.json")
    hrows = hyb["results"]["hybrid"]["rows"]
    sae, ups = sae_table(root)
    s1 = _load(root, "steering_h200_run1_qwen15b_arch.json")
    return "\n".join([
        f"### Latest rows: one {m['gpu']}, {d['date'][:10]}", "",
        "Capture (commit 17bbb55):", "",
        "```bash", d["command"], "```", "",
        f"Steered generation, the hybrid, the SAE step and the tests ({runs['note']}):", "",
        "```bash", *[r["command"] for r in runs["runs"]], "```", "",
        f"- Capture: `{FOLDER}/{GPU_FILES[0]}`: torch {m['torch']}, transformers {m['transformers']}, "
        f"transformer-lens {m['transformer-lens']}, nnsight {m['nnsight']}, sae-lens {m['sae-lens']}; "
        f"{m['cpu_count']} cores, {m['torch_threads']} torch threads; models in {m['dtype']}. Source: {d['source']}.",
        f"- Steering, hybrid, SAE step: the JSON `benchmarks/run.py` and `benchmarks/sae_step_ab.py` wrote "
        f"(`{FOLDER}/gpu/*_h200*.json`; torch {s1['machine']['torch']}, Python {s1['machine']['python']}); "
        f"{runs['runs'][1]['cut']}.",
        f"- `{runs['tests']['command']}`: {tests_log} (every test, the SAE ones included; the capture run's: "
        f"{t['passed']} passed, {t['skipped']} skipped, {t['skipped_why']}).", "",
        "#### Capture of every `resid_post` on the GPU", "",
        f"{res['texts']} texts ({tokens:,} tokens), batch {res['batch']}; median of {res['repeats']} round-robin "
        "rounds, fastest round in brackets:", "",
        h200_capture(d), "",
        "#### Steered generation", "",
        f"Batch 4, {s1['results']['new_tokens']} new tokens, one `add` at the middle layer on every generated "
        f"position; median of {s1['results']['repeats']} rounds per run, each run a fresh process:", "",
        steer, "",
        "#### The hybrid", "",
        f"{hyb['results']['hybrid']['pair']}, 16 prompts, {hyb['results']['hybrid_tokens']} new tokens, paper "
        "mode (the 10-coefficient sweep batched as one forward per gated step). Two random models disagree on "
        "every token, so the gate fires on every token: the worst case.", "",
        hybrid_table(hyb), "",
        "#### SAE training step", "",
        "One optimiser step on a batch of activations, median of 6 rounds of 10 steps:", "",
        sae, "",
        "#### Reading (H200 rows)", "",
        f"- Steering: lens steer runs at {min(lens_steer['qwen1.5b-arch'])}-{max(lens_steer['qwen1.5b-arch'])}x "
        f"plain HF generate at the 1.5B shape and {min(lens_steer['smollm2-arch'])}-"
        f"{max(lens_steer['smollm2-arch'])}x at SmolLM2's over the runs: at batch 4 the GPU waits on the host "
        "(plain generate makes about 200 tokens/s whatever the shape), so a run's ratio moves by +-10% with the "
        "host's load; read the spread, not one run.",
        f"- Hybrid: {_pick(hrows, 'plain base generate')['new_tokens_per_s']} tokens/s plain; the cached hybrid "
        f"{hrows[1]['ratio_to_plain']}x of it when the gate fires on every token, {hrows[4]['ratio_to_plain']}x "
        f"the paper-style reference one prompt at a time and {hrows[5]['ratio_to_plain']}x the batched full "
        "recompute at 24 tokens (the recompute is quadratic: the cache pays off as sequences grow). Each gated "
        "step runs both models, then the sweep's 10 coefficients per gated row as one base forward on copies of "
        "the rows' KV caches.",
        f"- SAE step: lens's sparse decode trains at {ups[0]}x / {ups[1]}x SAELens's dense step (TopK / "
        "BatchTopK) at the 1.5B width.",
        f"- Capture with the rows kept on the GPU costs {kept[0]}x / {kept[1]}x the bare forward (qwen1.5b-arch / "
        f"smollm2-arch), at the <= 1.03x target for the 1.5B shape; copied to CPU memory {mem[0]}x / {mem[1]}x "
        f"(H100, before the pinned-memory copies: 1.42x both). nnsight takes {nn[0]}x / {nn[1]}x, "
        f"TransformerLens {min(tl)}-{max(tl)}x.",
        f"- The bare forward's own time is noisy at this size (the GPU waits on the host's kernel launches): "
        f"{bare['seconds']:.3f} s for qwen1.5b-arch (28 layers) and "
        f"{_pick(s, 'bare HF forward (token ids)')['seconds']:.3f} s for smollm2-arch (30 layers, 1/7 of the "
        "weights); read the ratios, which share the run's conditions.",
        f"- To disk: every `resid_post` in float32 of the 1.5B shape is {gb:.2f} GB per run, written in "
        f"{disk['seconds']:.1f} s ({gb / disk['seconds']:.2f} GB/s, {disk['time_vs_bare']}x the forward): this "
        "machine's disk, slower than the H100 machine's (0.8-1.05 GB/s). Capture fewer sites or in bfloat16 "
        "on a GPU.",
    ])


def gpu_section(root: Path = ROOT) -> str:
    """The whole GPU section: how to run, the latest JSON-backed run, the older fixed rows."""
    d = json.loads((root / FOLDER / GPU_FILES[0]).read_text())
    return "\n\n".join(p.strip("\n") for p in (HOW, h200_section(d, root), H100, H100_READING))
