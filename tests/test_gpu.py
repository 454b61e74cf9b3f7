"""The same exactness checks on a CUDA GPU, and with layers split between the GPU and the CPU.

Skipped where no GPU is visible (CI has none). On a GPU: capture equals the CPU capture (in memory,
kept on the GPU, streamed to disk); steering under the KV cache equals a full recompute on a padded
batch; a model whose layers sit on cuda:0 and the CPU (an accelerate device_map) reads, steers and
runs the hybrid exactly as the same model held on one device; bfloat16 runs end to end.
"""

import pytest
import torch

from lens import load_model
from lens.capture_folder import capture_to_disk
from lens.capture_memory import capture
from lens.hybrid import HybridConfig, hybrid_generate, hybrid_generate_reference
from lens.interventions import Intervention, Where, steer
from lens.tiny import tiny_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TEXTS = ["Q:12+3=?", "hello there my friend", "ab"]
SITES = [f"blocks.{i}.hook_resid_post" for i in range(4)]
NEW = 6


def _on(model, device):
    """A second Model over a copy of the weights on `device` (the first stays where it is)."""
    import copy

    from lens.models import Model

    return Model(hf=copy.deepcopy(model.hf).to(device), tokenizer=model.tokenizer, spec=model.spec, source="object")


@pytest.fixture(scope="module")
def cpu_model():
    return tiny_model("llama", d_model=64)


@pytest.fixture(scope="module")
def split_model(cpu_model, tmp_path_factory):
    """The same weights loaded with layers 0-1 (and the embedding) on cuda:0, layers 2-3 and the head on the CPU."""
    d = tmp_path_factory.mktemp("m")
    cpu_model.hf.save_pretrained(d)
    cpu_model.tokenizer.save_pretrained(d)
    dm = {"model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": 0, "model.layers.2": "cpu",
          "model.layers.3": "cpu", "model.norm": "cpu", "model.rotary_emb": 0, "lm_head": "cpu"}
    m = load_model(str(d), device_map=dm, dtype="float32")
    assert m.hf.model.layers[0].mlp.up_proj.weight.is_cuda and not m.hf.model.layers[3].mlp.up_proj.weight.is_cuda
    return m


@pytest.mark.parametrize("select", ["all", "last", "last:3"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_capture_on_gpu_equals_cpu(cpu_model, select, side):
    gpu = _on(cpu_model, "cuda")
    a = capture(cpu_model, TEXTS, SITES, select, progress=False)
    b = capture(gpu, TEXTS, SITES, select, padding_side=side, progress=False)
    kept = capture(gpu, TEXTS, SITES, select, padding_side=side, progress=False, device="cuda")
    for s in SITES:
        assert b[s].device.type == "cpu" and kept[s].device.type == "cuda"
        torch.testing.assert_close(b[s], a[s], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(kept[s].cpu(), b[s], atol=0, rtol=0)
    assert torch.equal(a.start, b.start) and torch.equal(a.example, b.example)


def test_streamed_gpu_capture_equals_in_memory(cpu_model, tmp_path):
    gpu = _on(cpu_model, "cuda")
    texts = TEXTS * 7  # several groups of batches, several shards
    mem = capture(gpu, texts, SITES, progress=False, batch_size=2)
    folder = capture_to_disk(gpu, texts, SITES, progress=False, batch_size=2, out=tmp_path / "c", shard_rows=40)
    for s in SITES:
        torch.testing.assert_close(folder[s], mem[s], atol=0, rtol=0)


def _steer_case(model):
    g = torch.Generator().manual_seed(0)
    return [Intervention("blocks.1.hook_resid_post", torch.randn(model.d_model, generator=g) * 2,
                         where=Where.generated(1, 4)),
            Intervention("blocks.2.hook_resid_post", torch.randn(model.d_model, generator=g) * 2,
                         where=Where.first_step()),
            Intervention("blocks.3.hook_resid_post", torch.randn(model.d_model, generator=g), op="project_out")]


def _generate(model, ivs, record=True):
    tok = model.tokenizer
    tok.padding_side = "left"
    enc = tok(TEXTS, return_tensors="pt", padding=True).to(model.device)
    with torch.no_grad(), steer(model, ivs, record=record) as h:
        out = model.hf.generate(**enc, max_new_tokens=NEW, do_sample=False, output_logits=True,
                                return_dict_in_generate=True, pad_token_id=tok.pad_token_id, eos_token_id=None)
    return enc, out, h


@pytest.mark.parametrize("record", [True, False])
def test_kv_cache_steering_equals_full_recompute_on_gpu(cpu_model, record):
    gpu = _on(cpu_model, "cuda")
    ivs = _steer_case(gpu)
    enc, out, h = _generate(gpu, ivs, record)
    width = enc["input_ids"].shape[1]
    mask = torch.cat([enc["attention_mask"], torch.ones(len(TEXTS), NEW, dtype=torch.long, device="cuda")], dim=1)
    plen = enc["attention_mask"].sum(-1)
    with torch.no_grad(), steer(gpu, ivs, prompt_lengths=plen) as h2:
        full = gpu.hf(input_ids=out.sequences, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                      use_cache=False).logits[:, width - 1 : width - 1 + NEW]
    torch.testing.assert_close(torch.stack(out.logits, 1), full, atol=1e-4, rtol=1e-4)
    assert torch.equal(full.argmax(-1), out.sequences[:, width:])
    if record:
        for row in range(len(TEXTS)):
            last = int(plen[row]) + NEW - 1
            assert h.log.positions(row) == [p for p in h2.log.positions(row) if p < last] != []
    # the same steered generation on the CPU
    _, cpu_out, _ = _generate(cpu_model, _steer_case(cpu_model))
    assert torch.equal(cpu_out.sequences, out.sequences.cpu())
    _, plain, _ = _generate(gpu, [])
    assert not torch.equal(plain.sequences, out.sequences), "the case must change the generation"


def test_split_across_gpu_and_cpu_reads_and_steers_the_same(cpu_model, split_model):
    assert split_model.fingerprint == cpu_model.fingerprint
    a = capture(cpu_model, TEXTS, SITES, progress=False)
    b = capture(split_model, TEXTS, SITES, progress=False)
    for s in SITES:
        torch.testing.assert_close(b[s], a[s], atol=1e-4, rtol=1e-4)
    ivs = _steer_case(cpu_model)  # sites on both devices
    _, ref, h_ref = _generate(cpu_model, ivs)
    _, got, h = _generate(split_model, ivs)
    assert torch.equal(got.sequences.cpu(), ref.sequences)
    torch.testing.assert_close(torch.stack(got.logits, 1).cpu(), torch.stack(ref.logits, 1), atol=1e-4, rtol=1e-4)
    assert [r["position"] for r in h.log.records] == [r["position"] for r in h_ref.log.records]


def _cfg(model):
    g = torch.Generator().manual_seed(3)
    cats = {f"c{i}": torch.randn(model.d_model, generator=g) * 4 for i in range(3)}
    return HybridConfig("blocks.2.hook_resid_post", cats, bias=torch.randn(model.d_model, generator=g))


def test_hybrid_on_gpu_and_split_equals_reference(cpu_model, split_model):
    thinking_cpu = tiny_model("llama", d_model=64, seed=1)
    ref = hybrid_generate_reference(cpu_model, thinking_cpu, TEXTS, _cfg(cpu_model), max_new_tokens=10)
    assert ref.steered.any(), "the case must actually steer"
    gpu_base, gpu_thinking = _on(cpu_model, "cuda"), _on(thinking_cpu, "cuda")
    for base, thinking in ((gpu_base, gpu_thinking), (split_model, gpu_thinking), (gpu_base, thinking_cpu)):
        fast = hybrid_generate(base, thinking, TEXTS, _cfg(cpu_model), max_new_tokens=10)
        assert fast.tokens == ref.tokens
        assert torch.equal(fast.steered, ref.steered) and torch.equal(fast.category, ref.category)
    on_gpu_ref = hybrid_generate_reference(gpu_base, gpu_thinking, TEXTS, _cfg(cpu_model), max_new_tokens=10)
    assert on_gpu_ref.tokens == ref.tokens


def test_bfloat16_on_gpu_captures_and_steers(cpu_model):
    m = _on(cpu_model, "cuda")
    m.hf.to(torch.bfloat16)
    acts = capture(m, TEXTS, SITES, progress=False, dtype=torch.bfloat16, device="cuda")
    ref = capture(cpu_model, TEXTS, SITES, progress=False)
    for s in SITES:
        assert acts[s].dtype == torch.bfloat16 and torch.isfinite(acts[s]).all()
        cos = torch.nn.functional.cosine_similarity(acts[s].float().cpu(), ref[s], dim=-1)
        assert cos.min() > 0.98, (s, cos.min())
    _, out, h = _generate(m, _steer_case(m))
    assert out.sequences.shape[1] == len(TEXTS[1]) + 1 + NEW and len(h.log) > 0


def test_sae_training_and_feature_ranking_on_gpu(tmp_path):
    """An SAE trains on the GPU from a capture folder on the host, and ranks features there: the same
    ranking as the SAE on the CPU (added in session 4 after the GPU time was spent; first GPU run pending)."""
    pytest.importorskip("sae_lens")  # carry its wheels to the GPU machine (docs/benchmarks.md, GPU rows)
    from saes.config import TrainConfig
    from saes.io import load_sae
    from saes.search import rank_features
    from saes.train import train_sae

    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(16, 32, generator=g), dim=-1)
    pick = torch.randint(16, (4096, 2), generator=g)
    rows = (torch.rand(4096, 2, 1, generator=g) * 3 + 1).mul(dirs[pick]).sum(1)  # sparse sums of 16 directions
    rows[:2048] += 3.0 * dirs[0]  # a direction only the first half carries
    cfg = TrainConfig(architecture="topk", d_sae=64, k=4, total_rows=32768, batch_size=256, buffer_rows=2048,
                      checkpoint_every=0, device="cuda")
    res = train_sae(rows, tmp_path / "sae", cfg, site="blocks.0.hook_resid_post", progress=False)
    assert res.log[-1]["explained_variance"] > 0.3
    on_gpu = load_sae(res.path, device="cuda")
    on_cpu = load_sae(res.path)
    a = rank_features(on_gpu, rows[:2048], rows[2048:])
    b = rank_features(on_cpu, rows[:2048], rows[2048:])
    assert a.features[:5] == b.features[:5]


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_sparse_decode_step_on_gpu_equals_the_dense_step(arch):
    """The TopK / BatchTopK training step's sparse decode (embedding_bag) on CUDA: sae_lens's dense step's
    outputs, losses (AuxK with dead latents) and gradients (written in session 6 without a GPU; first
    run pending)."""
    pytest.importorskip("sae_lens")  # carry its wheels to the GPU machine (docs/benchmarks.md, GPU rows)
    from sae_lens.saes.sae import TrainStepInput

    from saes.config import TrainConfig, training_sae

    cfg = TrainConfig(architecture=arch, d_sae=512, k=16, device="cuda")
    sparse = training_sae(cfg, 64)
    dense = training_sae(TrainConfig(**{**cfg.to_json(), "sparse_decode": False}), 64)
    dense.load_state_dict(sparse.state_dict())
    x = torch.randn(300, 64, device="cuda") * 3
    mask = torch.zeros(512, dtype=torch.bool, device="cuda")
    mask[:100] = True
    outs = []
    for sae in (sparse, dense):
        out = sae.training_forward_pass(TrainStepInput(x, {}, mask, 1, False))
        out.loss.backward()
        outs.append(out)
    torch.testing.assert_close(outs[0].sae_out, outs[1].sae_out, atol=1e-4, rtol=1e-4)
    for k in outs[1].losses:
        torch.testing.assert_close(outs[0].losses[k], outs[1].losses[k], atol=1e-4, rtol=1e-4)
    for p, q in zip(sparse.parameters(), dense.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-3)
    assert torch.equal(outs[0].feature_acts, outs[1].feature_acts)
    if arch == "batchtopk":
        assert torch.equal(sparse.topk_threshold, dense.topk_threshold)


def test_lens_decoding_loop_on_the_gpu_and_split_equals_hf_generate(cpu_model, split_model):
    """`lens.decoding.generate` (its own loop) on the GPU and on the GPU+CPU split model, steered: greedy and
    with a stop string, the tokens of HF generate on the CPU; sampled, those of HF generate on the same
    model (CUDA generators draw other numbers than CPU ones)."""
    from lens.decoding import generate

    gpu = _on(cpu_model, "cuda")
    ivs = _steer_case(cpu_model)
    for kw in (dict(eos_token_id=None), dict(stop_strings=["1"], eos_token_id=None),
               dict(greedy=False, n=2, seed=5, eos_token_id=None)):
        with steer(cpu_model, ivs):
            ref = generate(cpu_model, TEXTS, 12, backend="hf", **kw)
        for m in (gpu, split_model):
            with steer(m, ivs):
                got = generate(m, TEXTS, 12, **kw)
                if "seed" in kw:
                    ref = generate(m, TEXTS, 12, backend="hf", **kw)
            assert [s.token_ids for s in got.samples] == [s.token_ids for s in ref.samples], (m.device, kw)
