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


def test_patch_and_stack_read_a_capture_folder_as_they_read_activations(m, tmp_path):
    sites = ["blocks.0.hook_resid_post", SITE]
    mem = lens.capture(m, CLEAN, sites, "positions:1,3,5", progress=False, batch_size=1)  # the folder's batches:
    # a float sum's last bits depend on the batch's shape on some CPUs
    folder = lens.capture_to_disk(m, CLEAN, sites, "positions:1,3,5", out=tmp_path / "clean", progress=False,
                                  batch_size=1, shard_rows=3)
    assert len(folder.manifest["shards"]) > 1  # the patch is gathered across shards
    a, b = Intervention.patch(SITE, mem, [1, 3, 5]), Intervention.patch(SITE, folder, [1, 3, 5])
    assert torch.equal(a.vector, b.vector) and a.where == b.where
    assert torch.equal(folder.stack("resid_post"), mem.stack("resid_post")) and folder.layers() == [0, 1]


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


def _hand_recompute(m, ids: list[int], adds: dict[str, dict[int, torch.Tensor]]) -> torch.Tensor:
    """Logits of one unpadded sequence with raw hooks (no lens engine) adding `adds[site][position]` there."""
    def at(site):
        def fn(h):
            h = h.clone()
            for p, v in adds.get(site, {}).items():
                if p < h.shape[1]:
                    h[:, p] += v.to(h.dtype)
            return h
        return fn

    with lens.hooks(m, {site: at(site) for site in adds}):
        (logits,) = m([ids])
    return logits


def _same_tokens_as_hand_recompute(m, seqs, adds_of) -> int:
    """Each generated sequence's greedy tokens equal a hand-hooked full recompute; returns how many rows the
    steering changed (so a test can check it did something)."""
    changed = 0
    for b, seq in enumerate(seqs):
        ids, plen = seq["input_ids"], seq["prompt_length"]
        logits = _hand_recompute(m, ids, adds_of(b, plen))
        assert logits[plen - 1 : len(ids) - 1].argmax(-1).tolist() == ids[plen:], b
        span = slice(plen - 1, len(ids) - 1)
        changed += logits[span].argmax(-1).tolist() != _hand_recompute(m, ids, {})[span].argmax(-1).tolist()
    return changed


PROMPTS = ["Q:12+34+5=?\n", "Q:1+2=?\n", "Q:47+38+26+19=?\n"]  # different lengths: a padded batch


def test_per_example_vectors_under_the_kv_cache_equal_a_hand_written_hook(m):
    vecs = torch.randn(3, m.d_model, generator=torch.Generator().manual_seed(1)) * 3
    with lens.steer(m, Intervention(SITE, vecs, where=Where.generated(0, 6))):
        seqs = lens.generate(m, PROMPTS, max_new_tokens=12, batch_size=3).sequences()
    # Where.generated(0, 6): the positions of generated tokens 0..5, i.e. absolute P .. P + 5
    assert _same_tokens_as_hand_recompute(m, seqs, lambda b, plen: {SITE: {p: vecs[b] for p in range(plen, plen + 6)}})


def test_per_position_vectors_under_the_kv_cache_equal_a_hand_written_hook(m):
    positions = (3, 9, 12)  # a prompt position of every row, then positions some rows reach only by generating
    src = torch.randn(3, len(positions), m.d_model, generator=torch.Generator().manual_seed(2)) * 4
    with lens.steer(m, Intervention(SITE, src, op="add", where=Where.absolute(*positions))):
        seqs = lens.generate(m, PROMPTS, max_new_tokens=12, batch_size=3).sequences()
    assert _same_tokens_as_hand_recompute(
        m, seqs, lambda b, plen: {SITE: {p: src[b, j] for j, p in enumerate(positions)}})


def test_direction_apply_over_two_sites_under_the_kv_cache_equals_a_hand_written_hook(m):
    g = torch.Generator().manual_seed(3)
    a0, a1 = "blocks.0.hook_resid_post", SITE
    d0 = lens.Direction(a0, torch.randn(m.d_model, generator=g), m.facts(), "random")
    d1 = lens.Direction(a1, torch.randn(m.d_model, generator=g), m.facts(), "random")
    r1 = lens.Direction(a1, torch.randn(m.d_model, generator=g), m.facts(), "random")
    both = lens.Directions([d0, d1 - r1 * 0.5])
    with both.apply(m, 4.0, Where.last_prompt_token()):
        seqs = lens.generate(m, PROMPTS, max_new_tokens=12, batch_size=3).sequences()
    want = {a0: 4.0 * d0.vector, a1: 4.0 * (d1.vector - 0.5 * r1.vector)}
    # the last prompt token only, P - 1, in the forward that produces generated token 0
    assert _same_tokens_as_hand_recompute(m, seqs, lambda b, plen: {s: {plen - 1: v} for s, v in want.items()})


def test_patch_needs_a_position(m):
    clean = lens.capture(m, CLEAN, SITE, "all", progress=False)
    with pytest.raises(LensError, match="at least one position"):
        Intervention.patch(SITE, clean, [])
