"""The sparse-decode TopK training step is sae_lens's dense TopK step: same losses, outputs, gradients."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "disabled"

import pytest  # noqa: E402
import torch  # noqa: E402
from sae_lens import BatchTopKTrainingSAE, TopKTrainingSAE  # noqa: E402
from sae_lens.saes.sae import TrainStepInput  # noqa: E402

from saes.config import TrainConfig, training_sae  # noqa: E402
from saes.io import load_sae  # noqa: E402
from saes.sparse_decode import SparseDecodeBatchTopKTrainingSAE, SparseDecodeTopKTrainingSAE  # noqa: E402
from saes.train import train_sae  # noqa: E402

CLASSES = {"topk": (SparseDecodeTopKTrainingSAE, TopKTrainingSAE),
           "batchtopk": (SparseDecodeBatchTopKTrainingSAE, BatchTopKTrainingSAE)}


def _pair(arch="topk", **kw):
    cfg = TrainConfig(architecture=arch, d_sae=256, k=8, **kw)
    sparse, dense = training_sae(cfg, 32), training_sae(TrainConfig(**{**cfg.to_json(), "sparse_decode": False}), 32)
    assert (type(sparse), type(dense)) == CLASSES[arch]
    dense.load_state_dict(sparse.state_dict())
    return sparse, dense


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
@pytest.mark.parametrize("dead", [0, 40])
@pytest.mark.parametrize("rescale", [True, False])
def test_one_step_equals_the_dense_step(arch, dead, rescale):
    """Outputs, every loss (AuxK included when latents are dead) and every parameter's gradient, with
    and without decoder-norm rescaling (sae_lens's training default is with); BatchTopK's threshold."""
    sparse, dense = _pair(arch)
    assert sparse.cfg.rescale_acts_by_decoder_norm  # the default the runs below use
    sparse.cfg.rescale_acts_by_decoder_norm = dense.cfg.rescale_acts_by_decoder_norm = rescale
    with torch.no_grad():  # decoder rows of unequal norms, so the rescaling matters
        for sae in (sparse, dense):
            sae.W_dec.mul_(torch.linspace(0.5, 2.0, 256)[:, None])
    x = torch.randn(200, 32, generator=torch.Generator().manual_seed(1)) * 3
    mask = torch.zeros(256, dtype=torch.bool)
    mask[:dead] = True
    outs = []
    for sae in (sparse, dense):
        out = sae.training_forward_pass(TrainStepInput(x, {}, mask, 1, False))
        out.loss.backward()
        outs.append(out)
    a, b = outs
    assert torch.allclose(a.sae_out, b.sae_out, atol=1e-5)
    assert torch.equal(a.feature_acts, b.feature_acts) and torch.equal(a.hidden_pre, b.hidden_pre)
    assert a.losses.keys() == b.losses.keys() and (dead == 0) == (b.losses["auxiliary_reconstruction_loss"].item() == 0)
    for k in a.losses:
        assert torch.allclose(a.losses[k], b.losses[k], rtol=1e-5), k
    for (name, p), q in zip(sparse.named_parameters(), dense.parameters(), strict=True):
        assert p.grad is not None and torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-4), name
    if arch == "batchtopk":
        assert a.metrics.keys() == b.metrics.keys()
        assert torch.equal(sparse.topk_threshold, dense.topk_threshold) and float(dense.topk_threshold) > 0
        assert len(set((a.feature_acts > 0).sum(-1).tolist())) > 1  # rows hold different numbers of latents


def test_other_shapes_hooks_autocast_and_sparse_activations_run_the_dense_step():
    sparse, dense = _pair()
    assert sparse.sparse_path(torch.zeros(4, 32)) and not sparse.sparse_path(torch.zeros(2, 4, 32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not sparse.sparse_path(torch.zeros(4, 32))
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(2))
    outs = []
    for sae in (sparse, dense):  # a hook that edits feature_acts: the sparse class runs the dense step
        handle = sae.hook_sae_acts_post.register_forward_hook(lambda _m, _i, out: out * 0.5)
        assert sae is dense or not sae.sparse_path(x)
        outs.append(sae.training_forward_pass(TrainStepInput(x, {}, None, 1, False)).sae_out)
        handle.remove()
    assert sparse.sparse_path(x) and torch.allclose(outs[0], outs[1], atol=1e-6)
    handle = sparse.hook_sae_acts_post.register_full_backward_hook(lambda *_: None)  # TransformerLens dir="bwd"
    assert not sparse.sparse_path(x)
    handle.remove()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *_: None)  # on every module
    assert not sparse.sparse_path(x)
    handle.remove()
    assert sparse.sparse_path(x)
    sparse.cfg.use_sparse_activations = True
    assert not sparse.sparse_path(torch.zeros(4, 32))


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_training_runs_match_and_save_the_same_sae_lens_folder(tmp_path, arch):
    """A whole run (SAETrainer, Adam, dead-latent bookkeeping) ends at the dense run's weights."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 16, generator=g) @ torch.randn(16, 16, generator=g)
    common = dict(architecture=arch, d_sae=64, k=4, total_rows=4096, batch_size=128, buffer_rows=1024,
                  checkpoint_every=0, lr=1e-3, dead_feature_window=8)
    a = train_sae(x, tmp_path / "sparse", TrainConfig(**common), progress=False)
    b = train_sae(x, tmp_path / "dense", TrainConfig(**common, sparse_decode=False), progress=False)
    sa, sb = load_sae(a.path).sae.state_dict(), load_sae(b.path).sae.state_dict()
    for k in sb:
        assert torch.allclose(sa[k], sb[k], atol=1e-4), (k, (sa[k] - sb[k]).abs().max())
    assert (tmp_path / "sparse" / "cfg.json").read_text() == (tmp_path / "dense" / "cfg.json").read_text()
