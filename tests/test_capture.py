"""Capture: exact rows under padding, every selection, streaming to disk, resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from lens import LensError
from lens.capture_folder import capture_to_disk, open_capture
from lens.capture_memory import capture
from lens.selection import Example, parse_select

TEXTS = [
    "Q:12+34=?\n<think>12+34=46. Wait, check 46.</think>A:46",
    "short",
    "Q:5+5=?\nA:10",
    "a much longer line of text, with punctuation! And two sentences.",
]
SITES = ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]


def _alone(model, texts, sites, select):
    return [capture(model, [t], sites, select, progress=False) for t in texts]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_unpadded_rows(tiny, family, side):
    model = tiny(family)
    batched = capture(model, TEXTS, SITES, "all", batch_size=4, padding_side=side, progress=False)
    alone = _alone(model, TEXTS, SITES, "all")
    for s in SITES:
        torch.testing.assert_close(batched[s], torch.cat([a[s] for a in alone]), atol=1e-5, rtol=1e-5)
    assert batched.example.tolist() == [i for i, a in enumerate(alone) for _ in range(len(a))]
    assert batched.start.tolist() == [p for a in alone for p in a.start.tolist()]


def test_selections_pick_the_right_tokens(tiny):
    model = tiny("llama")
    tok = model.tokenizer
    ex = {"prompt": "Q:12+34=?\n", "completion": "<think>12+34=46. Wait.</think>A:46", "spans": [[10, 16, "open"]]}
    text = ex["prompt"] + ex["completion"]
    n = len(tok(text)["input_ids"])  # char tokenizer + BOS: n = len(text) + 1
    assert n == len(text) + 1

    def rows(select):
        return capture(model, [ex], "blocks.1.hook_resid_post", select, progress=False)

    assert rows("all").start.tolist() == list(range(n))
    last_prompt = rows("last_prompt")
    assert last_prompt.start.tolist() == [len(ex["prompt"])]  # BOS shifts by one: last prompt char
    assert last_prompt.token_id.tolist() == [tok.convert_tokens_to_ids("\n")]
    assert rows("positions:0,3,-1").start.tolist() == [0, 3, n - 1]
    assert rows("last:3").start.tolist() == [n - 3, n - 2, n - 1]
    span = rows("spans")
    assert (span.start.tolist(), span.end.tolist(), span.labels) == ([11], [17], ["open"])
    wait = rows("regex:Wait")
    assert [text[s - 1] for s in wait.start.tolist()] == list("Wait")
    sent = rows("sentences")
    sentences = [text[s - 1 : e - 1] for s, e in zip(sent.start.tolist(), sent.end.tolist(), strict=True)]
    assert sentences == ["<think>12+34=46.", " Wait.", "</think>A:46"]
    full = rows("all")["blocks.1.hook_resid_post"]
    torch.testing.assert_close(sent["blocks.1.hook_resid_post"][1], full[sent.start[1] : sent.end[1]].mean(0))
    with pytest.raises(LensError, match="outside an example"):
        rows("positions:500")
    with pytest.raises(LensError, match="unknown selection"):
        parse_select("middle")


def test_errors_are_clear(tiny):
    model = tiny("llama")
    with pytest.raises(LensError, match="empty"):
        capture(model, [], SITES, progress=False)
    with pytest.raises(LensError, match="out of range"):
        capture(model, TEXTS, "blocks.7.hook_resid_post", progress=False)
    with pytest.raises(LensError, match="cannot read input"):
        Example.of(42)


def test_streamed_capture_equals_in_memory_and_is_described(tiny, tmp_path):
    model = tiny("qwen2")
    texts = TEXTS * 5
    mem = capture(model, texts, SITES, "last:2", batch_size=3, progress=False)
    folder = capture_to_disk(model, texts, SITES, "last:2", batch_size=3, out=tmp_path / "cap", shard_rows=7,
                             progress=False)
    assert len(folder.manifest["shards"]) > 2 and folder.complete
    for s in SITES:
        torch.testing.assert_close(folder[s], mem[s])
    m = json.loads((tmp_path / "cap" / "manifest.json").read_text())
    assert m["model"]["fingerprint"] == model.fingerprint and m["sites"] == SITES and m["select"] == "last:2"
    assert m["n_rows"] == len(mem) == 2 * len(texts) and m["n_examples_done"] == len(texts)
    streamed = list(folder.iter_rows(SITES[0], 5))
    assert [b.shape[0] for b in streamed] == [5] * 8
    torch.testing.assert_close(torch.cat(streamed), mem[SITES[0]])
    # the same call again is a no-op that returns the folder; other inputs are refused
    again = capture_to_disk(model, texts, SITES, "last:2", out=tmp_path / "cap", progress=False)
    assert again.n_rows == len(mem)
    with pytest.raises(LensError, match="other inputs"):
        capture_to_disk(model, list(reversed(texts)), SITES, "last:2", out=tmp_path / "cap", progress=False)
    with pytest.raises(LensError, match="other select"):
        capture_to_disk(model, texts, SITES, "all", out=tmp_path / "cap", progress=False)


def test_corrupt_shard_and_manifest_give_clear_errors(tiny, tmp_path):
    model = tiny("llama")
    folder = capture_to_disk(model, TEXTS, SITES, out=tmp_path / "c", progress=False)
    shard = tmp_path / "c" / folder.manifest["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(LensError, match="corrupt or truncated|truncated or changed"):
        open_capture(tmp_path / "c").load()
    (tmp_path / "c" / "manifest.json").write_text('{"format": "lens-cap')
    with pytest.raises(LensError, match="corrupt or truncated|truncated or changed"):
        open_capture(tmp_path / "c")


_CHILD = """
import os, sys, time
os.environ["HF_HUB_OFFLINE"] = "1"
import torch
from lens.tiny import tiny_model
from lens.capture_memory import capture
from lens.capture_folder import capture_to_disk
model = tiny_model("llama")
texts = [f"example number {i} with some text" for i in range(400)]
def slow():
    for i, t in enumerate(texts):
        if i >= 40:
            time.sleep(0.05)  # give the parent time to kill us mid-capture
        yield t
capture_to_disk(model, slow(), ["blocks.1.hook_resid_post"], "last:2", batch_size=4, shard_rows=8,
        out=sys.argv[1], progress=False)
"""


def test_killed_capture_resumes_without_lost_or_duplicated_rows(tiny, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(out)], start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            mpath = out / "manifest.json"
            if mpath.exists() and json.loads(mpath.read_text())["n_examples_done"] >= 60:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    partial = json.loads((out / "manifest.json").read_text())
    assert 0 < partial["n_examples_done"] < 400 and not partial["complete"]
    from lens.tiny import tiny_model

    model = tiny_model("llama")  # same seed, same weights as the child's
    texts = [f"example number {i} with some text" for i in range(400)]
    folder = capture_to_disk(model, texts, ["blocks.1.hook_resid_post"], "last:2", batch_size=4, shard_rows=8, out=out,
                     progress=False)
    assert folder.complete and folder.n_rows == 800
    acts = folder.load()
    assert acts.example.tolist() == [i // 2 for i in range(800)]  # every example once, in order
    ref = capture(model, texts[::37], ["blocks.1.hook_resid_post"], "last:2", progress=False)
    picked = torch.cat([acts.acts["blocks.1.hook_resid_post"][2 * i : 2 * i + 2] for i in range(0, 400, 37)])
    torch.testing.assert_close(picked, ref["blocks.1.hook_resid_post"])
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("side", ["left", "right"])
def test_token_id_inputs_equal_text_inputs_and_mix_in_a_batch(tiny, tmp_path, side):
    model = tiny("llama")
    ids = [model.tokenizer(t)["input_ids"] for t in TEXTS]
    text = capture(model, TEXTS, SITES, "all", batch_size=4, padding_side=side, progress=False)
    mixed = [ids[0], TEXTS[1], torch.tensor(ids[2]), {"input_ids": ids[3], "source": "gen"}]
    for inputs in (ids, mixed):
        got = capture(model, inputs, SITES, "all", batch_size=4, padding_side=side, progress=False)
        for s in SITES:
            assert torch.equal(got[s], text[s])
        assert torch.equal(got.token_id, text.token_id) and torch.equal(got.start, text.start)
    # the general per-batch path (streamed to disk, and a token selection) reads the same rows
    folder = capture_to_disk(model, mixed, SITES, "all", batch_size=3, padding_side=side, out=tmp_path / "c",
                             progress=False)
    last = capture(model, mixed, SITES, "positions:0,-1", batch_size=3, padding_side=side, progress=False)
    ends = torch.tensor([0, len(ids[0]) - 1])
    for s in SITES:
        torch.testing.assert_close(folder[s], text[s], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(last[s][:2], text[s][ends], atol=1e-5, rtol=1e-5)


def test_token_id_inputs_refuse_text_selections_and_foreign_ids(tiny):
    model = tiny("llama")
    ids = model.tokenizer(TEXTS[0])["input_ids"]
    with pytest.raises(LensError, match="reads text"):
        capture(model, [ids], SITES, "sentences", progress=False)
    for select in ("all", "last:2"):
        with pytest.raises(LensError, match="outside the model's vocabulary"):
            capture(model, [ids, [5, model.vocab_size + 3]], SITES, select, progress=False)
    with pytest.raises(LensError, match="must be ints"):
        Example.of([1, 2.5])
    with pytest.raises(LensError, match="1-D integer"):
        Example.of(torch.ones(2, 3, dtype=torch.long))


def test_streamed_every_token_capture_spans_groups_and_shards(tiny, tmp_path):
    model = tiny("llama")
    texts = TEXTS * 10  # 40 inputs: groups of 8 batches of 1, a shard per group
    mem = capture(model, texts, SITES, "all", batch_size=3, progress=False)
    folder = capture_to_disk(model, texts, SITES, "all", batch_size=1, out=tmp_path / "c", shard_rows=50,
                             progress=False)
    assert len(folder.manifest["shards"]) > 3 and folder.n_rows == len(mem)
    for s in SITES:
        torch.testing.assert_close(folder[s], mem[s], atol=1e-5, rtol=1e-5)
    rows = torch.cat([b for b in folder.iter_rows(SITES[0], 1000)])
    assert rows.shape[0] == len(mem)
    from lens.artifacts import load_tensors

    ex = torch.cat([load_tensors(tmp_path / "c" / sh["file"])[0]["example"] for sh in folder.manifest["shards"]])
    assert torch.equal(ex, mem.example) and int(ex.max()) == len(texts) - 1


@pytest.mark.parametrize("select", ["last:2", "all"])
def test_inputs_generated_lazily_by_the_same_model_are_untouched(tiny, tmp_path, select):
    """A lazy input generator may run the model (e.g. generate the texts): capture's hooks leave it alone."""
    from lens.decoding import generate

    model = tiny("llama")
    outputs = []

    def produce():
        for t in TEXTS:
            gen = generate(model, [t], max_new_tokens=3, eos_token_id=-1)  # runs the model mid-capture
            outputs.append(gen.samples[0].token_ids)
            yield gen.sequences()[0]

    lazy = capture(model, produce(), SITES, select, batch_size=2, progress=False)
    assert outputs == [generate(model, [t], max_new_tokens=3, eos_token_id=-1).samples[0].token_ids for t in TEXTS]
    eager = capture(model, [{"input_ids": TEXTS_IDS} for TEXTS_IDS in
                            [model.tokenizer(t)["input_ids"] + o for t, o in zip(TEXTS, outputs, strict=True)]],
                    SITES, select, batch_size=2, progress=False)
    for s in SITES:
        torch.testing.assert_close(lazy[s], eager[s])
    folder = capture_to_disk(model, produce(), SITES, select, batch_size=2, out=tmp_path / "c", progress=False)
    for s in SITES:
        torch.testing.assert_close(folder[s], eager[s], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("select", ["all", "last"])
@pytest.mark.parametrize("to_disk", [False, True])
def test_nan_in_activations_names_the_site_and_input(tmp_path, select, to_disk):
    """A NaN embedding row for one character: only the input that holds it is named."""
    from lens.tiny import tiny_model

    m = tiny_model("llama")
    z = m.tokenizer.convert_tokens_to_ids("z")
    with torch.no_grad():
        m.hf.get_input_embeddings().weight[z] = float("nan")
    texts = ["ab", "cd", "xyz", "ef"]
    sites = ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]
    with pytest.raises(LensError, match=r"NaN or inf in blocks\.0\.hook_resid_post for input(s)? 2"):
        if to_disk:
            capture_to_disk(m, texts, sites, select, out=tmp_path / "c", batch_size=2, progress=False)
        else:
            capture(m, texts, sites, select, batch_size=2, progress=False)
    acts = capture(m, ["ab", "cd"], "blocks.2.hook_resid_post", select, progress=False)  # clean inputs pass
    assert torch.isfinite(acts["blocks.2.hook_resid_post"]).all()


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_right_padded_batches_run_without_a_padding_mask(tiny, family):
    """On a causal model right pads come after every real token, so capture's forward gets no padding mask
    (GPT-2: an all-ones one, which HF skips alike); left-padded batches get the mask."""
    model = tiny(family)
    seen = []
    handle = model.hf.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("attention_mask")),
                                                with_kwargs=True)
    try:
        for side in ("right", "left"):
            capture(model, ["a longer text here", "ab"], "blocks.0.hook_resid_post", batch_size=2,
                    padding_side=side, progress=False)
    finally:
        handle.remove()
    right, left = seen
    assert right is None if family == "llama" else bool(right.all())
    assert left is not None and not bool(left.all())
