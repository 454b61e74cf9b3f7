"""Capture benchmark rows: lens vs bare HF forward, TransformerLens and nnsight, plus disk capture memory.

Each row is measured in this run on the same texts and batches (median of `repeats` timings).
Peak memory of capture-to-disk is measured in fresh subprocesses (ru_maxrss) at 1x and 10x inputs.
"""

from __future__ import annotations

import copy
import functools
import gc
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from lens.capture_folder import capture_to_disk
from lens.capture_memory import capture
from lens.families import family_of
from lens.models import Model


def _texts(n: int) -> list[str]:
    base = "Q:47+38+26+19=?\n<think>47+38+26+19=85+26+19=111+19=130</think>A:130. The model answers. "
    return [(base * 2)[: 100 + (i % 5) * 10] for i in range(n)]


def _all_times(fns: list, repeats: int) -> list[list[float]]:
    """Seconds of every run of each fn, one of each per round in a shuffled order, so drift hits all alike.

    As `timeit` does, the garbage collector is paused while a run is timed (and run before it), so
    one method's garbage is not collected on another's clock.
    """
    from benchmarks.models import sync

    for fn in fns:
        fn()  # warm up
        sync()
    times: list[list[float]] = [[] for _ in fns]
    order = list(range(len(fns)))
    rng = random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)  # a new order each round: no method always runs right after the same one
        for i in order:
            fn = fns[i]
            gc.collect()
            gc.disable()
            try:
                sync()
                t0 = time.perf_counter()
                fn()
                sync()  # accelerator work queued by fn counts towards fn
                times[i].append(time.perf_counter() - t0)
            finally:
                gc.enable()
    return times


def interleaved_times(fns: list, repeats: int) -> list[float]:
    """Median seconds of each fn over `repeats` round-robin rounds."""
    return [statistics.median(t) for t in _all_times(fns, repeats)]


def capture_rows(model: Model, n_texts: int = 64, batch_size: int = 8, repeats: int = 5) -> list[dict]:
    """Time every capture method on `n_texts` texts; returns rows with seconds and ratio to bare forward."""
    texts = _texts(n_texts)
    sites = [f"blocks.{i}.hook_resid_post" for i in range(model.n_layers)]
    tok = model.tokenizer
    tok.padding_side = "right"
    dev = model.device
    batches = [tok(texts[i : i + batch_size], return_tensors="pt", padding=True) for i in range(0, n_texts, batch_size)]
    n_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    ids = [row[m.bool()].tolist() for b in batches for row, m in zip(b["input_ids"], b["attention_mask"], strict=True)]
    batches = [{k: v.to(dev) for k, v in b.items()} for b in batches]  # the bare forward gets its inputs in place

    def bare():
        with torch.no_grad():
            for b in batches:
                model.hf(**b, use_cache=False)

    def bare_no_mask():  # what lens runs on right-padded batches: causal attention never sees right pads
        with torch.no_grad():
            for b in batches:
                model.hf(input_ids=b["input_ids"], use_cache=False)

    def lens_mem(inputs, device="cpu"):
        return lambda: capture(model, inputs, sites, "all", batch_size=batch_size, progress=False, device=device)

    def lens_disk(inputs):
        def run():
            with tempfile.TemporaryDirectory() as d:
                capture_to_disk(model, inputs, sites, "all", batch_size=batch_size, out=d, progress=False)

        return run

    def bare_tok():
        with torch.no_grad():
            for i in range(0, n_texts, batch_size):
                enc = tok(texts[i : i + batch_size], return_tensors="pt", padding=True)
                model.hf(**{k: v.to(dev) for k, v in enc.items()}, use_cache=False)

    rows = [("bare HF forward (token ids)", bare), ("bare HF forward, no attention mask", bare_no_mask),
            ("lens capture, token ids (memory)", lens_mem(ids)),
            ("lens capture, token ids (to disk)", lens_disk(ids)), ("HF tokenize + forward (texts)", bare_tok),
            ("lens capture, texts (memory)", lens_mem(texts)), ("lens capture, texts (to disk)", lens_disk(texts))]
    if dev.type != "cpu":  # as run_with_cache and nnsight's .save() keep them: rows left on the accelerator
        rows.insert(3, (f"lens capture, token ids (kept on {dev.type})", lens_mem(ids, dev)))
    def run_with_cache(tl_model):
        def run():
            with torch.no_grad():
                for b in batches:
                    tl_model.run_with_cache(b["input_ids"], attention_mask=b["attention_mask"],
                                            names_filter=lambda n: n.endswith("hook_resid_post"))

        return run

    def bridge():
        from transformer_lens.model_bridge import TransformerBridge

        return TransformerBridge.boot_transformers("bench", hf_model=copy.deepcopy(model.hf), tokenizer=tok)

    for name, build in (("TransformerLens Bridge", bridge), ("TransformerLens HookedTransformer",
                                                             lambda: hooked_transformer(model))):
        try:
            rows.append((f"{name} run_with_cache", run_with_cache(build())))
        except Exception as e:  # noqa: BLE001 - a peer failing is a row, not a crash
            print(f"{name} unavailable: {e}", file=sys.stderr)
    try:
        from nnsight import LanguageModel

        lm = LanguageModel(copy.deepcopy(model.hf), tokenizer=tok)
        layers = functools.reduce(getattr, family_of(model.family).layers.split("."), lm)  # the same modules

        def nn_trace():
            for b in batches:
                with torch.no_grad(), lm.trace(b["input_ids"], attention_mask=b["attention_mask"]):
                    [layer.output.save() for layer in layers]  # noqa: B018

        rows.append(("nnsight trace (save every layer)", nn_trace))
    except Exception as e:  # noqa: BLE001
        print(f"nnsight unavailable: {e}", file=sys.stderr)
    runs = _all_times([fn for _, fn in rows], repeats)
    med, fast = [statistics.median(t) for t in runs], [min(t) for t in runs]
    return [{"method": name, "seconds": round(m, 4), "tokens_per_s": round(n_tokens / m),
             "time_vs_bare": round(m / med[0], 3), "fastest_vs_bare": round(f / fast[0], 3),
             "runs_s": [round(x, 4) for x in t]}
            for (name, _), m, f, t in zip(rows, med, fast, runs, strict=True)]


def hooked_transformer(model: Model):
    """TransformerLens's HookedTransformer built from the same weights, offline.

    HookedTransformer only loads models it knows by hub name; here the weights are saved to a
    temporary folder and TransformerLens's name lookup is bypassed for the duration of the load
    (restored afterwards), so its config conversion reads that folder.
    """
    import transformer_lens.loading_from_pretrained as loading
    from transformer_lens import HookedTransformer

    folder = tempfile.mkdtemp(prefix="lens-bench-ht-")
    hf = copy.deepcopy(model.hf)  # only the config is read from the folder; weights come from hf_model
    if hasattr(hf.config, "quantization_config"):
        # transformers dequantizes GGUF weights into plain float tensors at load; the leftover
        # "gguf" tag would make HookedTransformer refuse (and the config unsaveable)
        del hf.config.quantization_config
    hf.config.architectures = hf.config.architectures or [type(hf).__name__]  # unset on GGUF-loaded configs
    hf.config.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    original = loading.get_official_model_name
    loading.get_official_model_name = lambda name: name
    try:
        return HookedTransformer.from_pretrained_no_processing(folder, hf_model=hf, tokenizer=model.tokenizer,
                                                               device=str(model.device), dtype=model.dtype)
    finally:
        loading.get_official_model_name = original


_MEM_CHILD = """
import json, resource, sys, tempfile, torch
sys.path.insert(0, {root!r})
from benchmarks.capture import _texts
from lens.capture_memory import capture
from lens.capture_folder import capture_to_disk
from lens.families import family_of
from lens import load_model
from lens.tiny import tiny_model
spec, n = sys.argv[1], int(sys.argv[2])
model = tiny_model("llama", d_model=128) if spec == "tiny" else load_model(spec)
sites = [f"blocks.{{i}}.hook_resid_post" for i in range(model.n_layers)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with tempfile.TemporaryDirectory() as d:
    capture_to_disk(model, (t for t in _texts(n)), sites, "all", batch_size=8, out=d, shard_rows=4096, progress=False)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"peak_mib": after / 1024, "growth_mib": (after - before) / 1024}}))
"""


def disk_memory(spec: str, n: int) -> dict:
    """Peak RSS (MiB) of a fresh process streaming `n` texts to disk (all resid_post sites)."""
    import pathlib

    root = str(pathlib.Path(__file__).resolve().parent.parent)
    res = subprocess.run([sys.executable, "-c", _MEM_CHILD.format(root=root), spec, str(n)], capture_output=True,
                         text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
