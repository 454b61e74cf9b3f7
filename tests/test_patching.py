"""Per-example and per-position intervention vectors (activation patching), exact on padded batches and
under the KV cache: compared with a hand-written hook, with each row run alone, and with the clean run."""

from __future__ import annotations

import pytest
import torch

import lens
from lens import LensError
from lens.interventions import Intervention, Where

SITE = "blocks.1.hook_resid_post"
CLEAN = ["Q:12+34=?\n", "Q:17+28=?\n", "Q:40+25=?\n"]
CORRUPT = ["Q:19+34=?\n", "Q:17+21=?\n", "Q:41+25=?\n"]  # same lengths, one digit changed


@pytest.fixture(scope="module")
def m():
    return lens.load_model("organism:base")


def test_patching_every_position_reproduces_the_clean_logits(m):
    clean = lens.capture(m, CLEAN, SITE, "all", progress=False)
    n = len(m.tokenizer(CLEAN[0])["input_ids"])
    iv = Intervention.patch(SITE, clean, range(n))
    assert iv.vector.shape == (3, n, m.d_model) and iv.op == "set"
    with lens.steer(m, iv):
        patched = m(CORRUPT)
    for got, want, bad in zip(patched, m(CLEAN), m(CORRUPT), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        assert (bad - want).abs().max() > 1e-2  # the corruption mattered


def test_per_position_patch_equals_a_hand_written_hook_on_a_padded_batch(m):
    texts = ["Q:12+34=?\n", "Q:1+2+3+4+5=?\n", "Q:9=?\n"]  # different lengths: right-padded in one batch
    src = torch.randn(3, 2, m.d_model, generator=torch.Generator().manual_seed(0))
    positions = (2, 4)
    iv = Intervention(SITE, src, op="set", where=Where.absolute(*positions))
    with lens.steer(m, iv):
        got = m(texts)

    def hook(h):  # right padding: slot s of every row is absolute position s
        h = h.clone()
        for j, p in enumerate(positions):
            h[:, p] = src[:, j]
        return h

    want = []
    for b, t in enumerate(texts):  # each row alone (no padding), through a raw hook
        def one(h, b=b):
            h = h.clone()
            for j, p in enumerate(positions):
                h[:, p] = src[b, j]
            return h

        with lens.hooks(m, {SITE: one}):
            want.append(m(t))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


def test_per_example_vector_under_the_kv_cache_equals_each_row_alone(m):
    prompts = ["Q:12+34+5=?\n", "Q:1+2=?\n", "Q:47+38+26+19=?\n"]
    vecs = torch.randn(3, m.d_model, generator=torch.Generator().manual_seed(1)) * 3
    where = Where.generated(0, 6)  # the first six generated tokens
    with lens.steer(m, Intervention(SITE, vecs, where=where)):
        batched = lens.generate(m, prompts, max_new_tokens=12, batch_size=3).sequences()
    for b, p in enumerate(prompts):
        with lens.steer(m, Intervention(SITE, vecs[b], where=where)):
            alone = lens.generate(m, [p], max_new_tokens=12).sequences()[0]
        assert batched[b]["input_ids"] == alone["input_ids"]  # generate sorts prompts by length: rows follow them
    changed = 0
    for b, seq in enumerate(batched):  # a full recompute of each sequence, steered at the same absolute positions
        ids, plen = seq["input_ids"], seq["prompt_length"]
        with lens.steer(m, Intervention(SITE, vecs[b : b + 1], where=where), prompt_lengths=[plen]):
            (logits,) = m([ids])
        assert logits[plen - 1 : len(ids) - 1].argmax(-1).tolist() == ids[plen:]  # greedy: the same tokens
        changed += ids != lens.generate(m, [prompts[b]], max_new_tokens=12).sequences()[0]["input_ids"]
    assert changed  # the vectors changed some continuation


def test_bad_shapes_are_refused_with_the_fix(m):
    with pytest.raises(LensError, match="needs where=Where.absolute"):
        Intervention(SITE, torch.ones(2, 3, m.d_model), where=Where.last_prompt_token())
    with pytest.raises(LensError, match="has 3 positions but where names"):
        Intervention(SITE, torch.ones(2, 3, m.d_model), where=Where.absolute(1, 2))
    iv = Intervention(SITE, torch.ones(2, m.d_model))
    with pytest.raises(LensError, match="has 2 rows but the forward call has 3"), lens.steer(m, iv):
        m(CLEAN)
    clean = lens.capture(m, CLEAN, SITE, "last_prompt", progress=False)
    with pytest.raises(LensError, match="missing"):
        Intervention.patch(SITE, clean, [0, 1])
