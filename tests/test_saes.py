"""SAE training, resume, sae_lens folder format, loading checks and evals (tiny, CPU, offline)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import pytest  # noqa: E402
import torch  # noqa: E402

from lens.errors import LensError  # noqa: E402
from saes.buffer import RowSource, shuffled_batches  # noqa: E402
from saes.config import TrainConfig  # noqa: E402
from saes.io import load_sae  # noqa: E402
from saes.train import train_sae  # noqa: E402


def sparse_data(n=4096, d=16, m=48, p=0.06, seed=0):
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(m, d, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)
    z = (torch.rand(n, m, generator=g) < p).float() * (1 + torch.rand(n, m, generator=g))
    return z @ dirs


SMALL = dict(d_sae=48, k=3, total_rows=6144, batch_size=128, buffer_rows=1024, checkpoint_every=8, lr=1e-2)


def test_buffer_full_batches_and_every_row_once_per_epoch():
    x = torch.arange(1000, dtype=torch.float32)[:, None].repeat(1, 4)
    src = RowSource.of(x, chunk_rows=96)
    it = shuffled_batches(src, batch_size=100, buffer_rows=300, seed=1)
    first = torch.cat([next(it) for _ in range(10)])
    assert first.shape == (1000, 4)
    assert sorted(first[:, 0].tolist()) == list(range(1000))  # every row exactly once in the first epoch
    assert first[:100, 0].tolist() != list(range(100))  # and shuffled
    again = torch.cat([next(shuffled_batches(RowSource.of(x, chunk_rows=96), 100, 300, seed=1)) for _ in range(1)])
    assert torch.equal(again, first[:100])  # deterministic given the seed


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "jumprelu", "standard"])
def test_training_reduces_loss_and_sae_lens_loads_it(tmp_path, arch):
    from sae_lens import SAE

    x = sparse_data()
    cfg = TrainConfig(architecture=arch, l1_coefficient=0.05, l0_coefficient=0.05, **SMALL)
    res = train_sae(x, tmp_path / arch, cfg, site="blocks.1.hook_resid_post", progress=False, log_every=2)
    assert res.log[-1]["mse"] < 0.7 * res.log[0]["mse"], res.log
    for f in ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "lens.json"):
        assert (res.path / f).exists()
    assert not (res.path / "checkpoints").exists()
    theirs = SAE.load_from_disk(str(res.path))  # sae_lens itself reads what we saved
    ours = load_sae(res.path)
    assert ours.site == "blocks.1.hook_resid_post" and theirs.cfg.metadata.hook_name == ours.site
    assert ours.d_in == 16 and ours.d_sae == 48
    with torch.no_grad():
        assert torch.allclose(theirs.decode(theirs.encode(x[:64])), ours.reconstruct(x[:64]), atol=1e-5)
    if arch == "topk":  # inference TopK folds decoder norms: unit rows
        assert torch.allclose(ours.sae.W_dec.norm(dim=1), torch.ones(48), atol=1e-4)


def test_resume_after_interruption_gives_the_same_weights(tmp_path):
    x = sparse_data(seed=3)
    cfg = TrainConfig(**SMALL)
    full = train_sae(x, tmp_path / "full", cfg, progress=False)
    part = train_sae(x, tmp_path / "resumed", cfg, progress=False, stop_after=10)
    assert part.steps == 10 and (tmp_path / "resumed" / "checkpoints" / "latest.json").exists()
    assert not (tmp_path / "resumed" / "cfg.json").exists()
    done = train_sae(x, tmp_path / "resumed", cfg, progress=False)
    assert done.resumed_from == 10 and done.steps == cfg.total_steps
    a, b = load_sae(full.path).sae.state_dict(), load_sae(done.path).sae.state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    # other settings on the same folder are refused
    with pytest.raises(LensError, match="other settings"):
        train_sae(x, tmp_path / "resumed", TrainConfig(**{**SMALL, "k": 5}), progress=False)


def test_resume_refuses_other_settings_mid_run(tmp_path):
    x = sparse_data()
    train_sae(x, tmp_path / "r", TrainConfig(**SMALL), progress=False, stop_after=4)
    with pytest.raises(LensError, match="interrupted run with other settings"):
        train_sae(x, tmp_path / "r", TrainConfig(**{**SMALL, "lr": 5e-3}), progress=False)


def test_train_from_capture_folder_and_evals(tiny, tmp_path):
    from lens.capture_folder import capture_to_disk
    from saes.evals import evaluate

    m = tiny("llama")
    texts = [f"Q:{a}+{b}=?\nA:{a + b}" for a in range(10, 40) for b in range(10, 14)]
    folder = capture_to_disk(m, texts, ["blocks.1.hook_resid_post"], "all", out=tmp_path / "cap", shard_rows=500,
                     progress=False)
    assert len(folder.manifest["shards"]) > 1
    cfg = TrainConfig(d_sae=256, k=8, total_rows=8192, batch_size=256, buffer_rows=1024, checkpoint_every=0)
    res = train_sae(folder, tmp_path / "sae", cfg, progress=False)
    d = load_sae(res.path, m, "blocks.1.hook_resid_post")
    assert d.meta["model"]["fingerprint"] == m.fingerprint
    ev = evaluate(d, folder, model=m, texts=texts[:16])
    assert 0.3 < ev["explained_variance"] <= 1.0
    assert abs(ev["l0"] - 8) < 1e-6
    assert 0 <= ev["dead_fraction"] <= 1 and 0 <= ev["dense_fraction"] <= 1
    sp = ev["spliced"]
    assert 0 <= sp["kl_sae"] < sp["kl_zero"], sp  # a random model: CE is near uniform, KL still orders them
    assert load_sae(res.path).meta["evals"]["l0"] == ev["l0"]  # stored in lens.json


def test_spliced_identity_recovers_everything(tiny):
    from saes.evals import spliced_metrics
    from saes.io import Dictionary

    m = tiny("llama")

    class Identity(Dictionary):
        def reconstruct(self, x):
            return x

    d = Identity(_standard_sae(64, 8), "blocks.1.hook_resid_post")
    out = spliced_metrics(d, m, ["Q:12+13=?\nA:25", "hello world"])
    assert abs(out["ce_recovered"] - 1) < 1e-6 and out["kl_sae"] < 1e-6


def _standard_sae(d_in, d_sae):
    from sae_lens import StandardSAE, StandardSAEConfig

    return StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))


def test_width_and_site_mismatch_refused(tiny, tmp_path):
    m = tiny("llama")  # d_model 64
    x = sparse_data(d=16)
    res = train_sae(x, tmp_path / "s", TrainConfig(**SMALL), site="blocks.1.hook_resid_post", progress=False)
    with pytest.raises(LensError, match="width 16.*d_model 64"):
        load_sae(res.path, m)
    y = torch.randn(2048, 64)
    res64 = train_sae(y, tmp_path / "s64", TrainConfig(**{**SMALL, "total_rows": 512}), site="blocks.1.hook_resid_post",
                      progress=False)
    load_sae(res64.path, m, "blocks.1.hook_resid_post")  # fine
    with pytest.raises(LensError, match="trained at blocks.1.hook_resid_post, not blocks.2.hook_resid_post"):
        load_sae(res64.path, m, "blocks.2.hook_resid_post")
    with pytest.raises(LensError, match="not an SAE folder"):
        load_sae(tmp_path, m)


def test_registry_needs_the_hub():
    with pytest.raises(LensError, match="hub is offline"):
        load_sae("gpt2-small-res-jb/blocks.8.hook_resid_pre")


def test_bad_config_is_refused():
    with pytest.raises(LensError, match="unknown SAE architecture"):
        TrainConfig(architecture="gated2").validate()
    with pytest.raises(LensError, match="buffer_rows"):
        TrainConfig(batch_size=1024, buffer_rows=1024)


def test_taxonomy_recovers_planted_categories():
    from saes.taxonomy import fit_taxonomy, purity

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 32, generator=g) * 3
    labels = [["restate", "computation", "backtrack", "verification"][i % 4] for i in range(400)]
    x = torch.stack([centres[i % 4] + 0.3 * torch.randn(32, generator=g) for i in range(400)]) + 5.0
    tax = fit_taxonomy(x, 4, k=1, texts=[f"s{i}" for i in range(400)], labels=labels, epochs=40)
    p = purity(tax.categories.tolist(), labels)
    assert p["purity"] >= 0.95, p
    assert p["majority_baseline"] == 0.25
    tops = tax.top_sentences(3)
    assert sum(len(v) for v in tops.values()) <= 12
    assert all(r["label"] == tops[c][0]["label"] for c in tops for r in tops[c])


def test_registry_path_with_the_hub_stubbed(tmp_path, monkeypatch):
    """The registry branch (names, site, provenance, width check) with sae_lens's download replaced by a
    local folder: what runs online, minus the network."""
    from sae_lens import SAE

    x = sparse_data()
    res = train_sae(x, tmp_path / "sae", TrainConfig(**SMALL), site="blocks.1.hook_resid_post", progress=False)
    calls = []

    def from_pretrained(release, sae_id, device="cpu"):
        calls.append((release, sae_id, device))
        return SAE.load_from_disk(str(res.path), device=device)

    monkeypatch.setattr(SAE, "from_pretrained", staticmethod(from_pretrained))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    for name in ("my-release/blocks.1.hook_resid_post", "sae_lens:my-release:blocks.1.hook_resid_post"):
        d = load_sae(name)
        assert d.site == "blocks.1.hook_resid_post" and d.d_in == 16 and d.d_sae == 48
        assert d.meta["release"] == "my-release" and d.meta["id"] == "blocks.1.hook_resid_post"
    assert calls == [("my-release", "blocks.1.hook_resid_post", "cpu")] * 2
    with pytest.raises(LensError, match="site"):
        load_sae("my-release/x", site="blocks.0.hook_resid_post")


def test_behaviour_purity_merges_the_given_labels():
    """A slip is counted as the computation it is: a category holding computations and slips is pure once merged."""
    from saes.taxonomy import behaviour_purity, purity

    cats = [0, 0, 0, 0, 1, 1]
    labels = ["computation", "computation", "error", "error", "verification", "verification"]
    assert purity(cats, labels)["purity"] == 4 / 6
    b = behaviour_purity(cats, labels, {"error": "computation"})
    assert b["purity"] == 1.0 and b["majority_baseline"] == 4 / 6 and b["merged"] == {"error": "computation"}
    assert b["labels_with_own_category"] == ["computation", "verification"]
