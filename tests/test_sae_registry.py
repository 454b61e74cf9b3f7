"""Every SAE architecture in sae_lens's training registry trains through lens, checkpoints, resumes and loads
back; unknown names and options are refused with what is known (tiny, CPU, offline)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from lens.errors import LensError  # noqa: E402
from saes.config import TrainConfig, registered_architectures, training_sae  # noqa: E402
from saes.io import load_sae  # noqa: E402
from saes.train import train_sae  # noqa: E402

SITE = "blocks.1.hook_resid_post"
TINY = dict(d_sae=32, k=4, total_rows=768, batch_size=64, buffer_rows=256, checkpoint_every=4, lr=1e-2)
# Settings an architecture cannot train without (sae_lens gives no default); every other architecture
# trains on lens's defaults alone.
REQUIRED_OPTIONS = {"matryoshka_batchtopk": {"matryoshka_widths": [8, 32]}}
ARCHS = registered_architectures()


def test_the_registry_holds_sae_lens_builtins():
    assert {"standard", "topk", "batchtopk", "jumprelu", "gated", "matryoshka_batchtopk"} <= set(ARCHS)


@pytest.mark.parametrize("arch", ARCHS)
def test_each_registered_architecture_trains_resumes_and_loads(tmp_path, arch):
    from sae_lens import SAE

    x = torch.randn(1024, 16, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(architecture=arch, options=REQUIRED_OPTIONS.get(arch, {}), **TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sae_lens's notes on its own defaults
        full = train_sae(x, tmp_path / "full", cfg, site=SITE, progress=False, log_every=1)
        part = train_sae(x, tmp_path / "resumed", cfg, site=SITE, progress=False, log_every=1, stop_after=5)
        assert part.steps == 5 and (tmp_path / "resumed" / "checkpoints" / "latest.json").exists()
        done = train_sae(x, tmp_path / "resumed", cfg, site=SITE, progress=False, log_every=1)
    assert full.steps == cfg.total_steps == 12 and done.resumed_from == 5 and done.steps == 12
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in full.log)
    ours = load_sae(full.path)
    assert ours.site == SITE and ours.d_in == 16 and ours.d_sae == 32
    assert ours.meta["train"]["architecture"] == arch
    theirs = SAE.load_from_disk(str(full.path))  # sae_lens reads the folder too
    with torch.no_grad():
        rec = ours.reconstruct(x[:32])
        assert rec.shape == (32, 16) and torch.isfinite(rec).all()
        assert torch.allclose(theirs.decode(theirs.encode(x[:32])), rec, atol=1e-5)
    a, b = ours.sae.state_dict(), load_sae(done.path).sae.state_dict()
    assert a.keys() == b.keys()
    for k in a:  # interrupted + resumed = uninterrupted
        assert torch.allclose(a[k], b[k], atol=1e-5), (arch, k)
    assert cfg.options == REQUIRED_OPTIONS.get(arch, {})  # sae_lens's edits to its config do not leak back


def test_a_newly_registered_architecture_trains_with_no_lens_change(tmp_path, monkeypatch):
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY

    monkeypatch.setitem(SAE_TRAINING_CLASS_REGISTRY, "my_l1", (StandardTrainingSAE, StandardTrainingSAEConfig))
    assert "my_l1" in registered_architectures()
    cfg = TrainConfig(architecture="my_l1", l1_coefficient=0.25, **TINY)
    assert training_sae(cfg, 16).cfg.l1_coefficient == 0.25  # lens's shared settings reach its config
    res = train_sae(torch.randn(512, 16), tmp_path / "sae", cfg, site=SITE, progress=False)
    assert load_sae(res.path).d_sae == 32


def test_unknown_architecture_lists_the_registered_ones(tmp_path):
    cfg = TrainConfig(architecture="gated2")  # plain data until validated against the registry
    with pytest.raises(LensError, match="unknown SAE architecture 'gated2'") as e:
        cfg.validate()
    for arch in ARCHS:
        assert arch in str(e.value)
    with pytest.raises(LensError, match="unknown SAE architecture 'gated2'"):
        train_sae(torch.randn(64, 16), tmp_path / "sae", cfg, progress=False)
    assert not (tmp_path / "sae").exists()  # refused before anything is written


def test_a_config_made_before_its_architecture_is_registered_trains(tmp_path, monkeypatch):
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY

    cfg = TrainConfig(architecture="my_late_l1", **TINY)
    monkeypatch.setitem(SAE_TRAINING_CLASS_REGISTRY, "my_late_l1", (StandardTrainingSAE, StandardTrainingSAEConfig))
    assert train_sae(torch.randn(512, 16), tmp_path / "sae", cfg, site=SITE, progress=False).steps == 12


def test_making_a_config_does_not_import_sae_lens():
    import subprocess
    import sys

    code = ("import sys; from saes.config import TrainConfig; "
            "import saes.ondemand, lens.studies.find_feature_organism; "
            "TrainConfig(architecture='matryoshka_batchtopk', options={'matryoshka_widths': [8]}); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sae_lens', 'transformer_lens')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.stdout.strip() == "[]", r.stdout[-500:]


@pytest.mark.filterwarnings("ignore::UserWarning")  # sae_lens notes the matryoshka widths it extends
def test_options_reach_the_config_class_and_bad_ones_are_refused():
    cfg = TrainConfig(architecture="topk", d_sae=32, k=4, options={"aux_loss_coefficient": 0.5})
    assert training_sae(cfg, 16).cfg.aux_loss_coefficient == 0.5
    sae = training_sae(TrainConfig(architecture="batchtopk", d_sae=32, k=4), 16)
    assert sae.cfg.k == 4.0 and isinstance(sae.cfg.k, float)  # batchtopk's k is a float in sae_lens
    with pytest.raises(LensError, match="not a setting of the topk SAE; its settings: .*aux_loss_coefficient"):
        TrainConfig(architecture="topk", options={"matryoshka_widths": [8]}).validate()
    with pytest.raises(LensError, match="set by lens"):
        TrainConfig(architecture="topk", options={"k": 3})
    with pytest.raises(LensError, match="JSON values"):
        TrainConfig(architecture="topk", options={"aux_loss_coefficient": torch.tensor(0.5)})
    bad = TrainConfig(architecture="matryoshka_batchtopk", d_sae=32, k=4, options={"matryoshka_widths": [16, 8]})
    with pytest.raises(LensError, match="sae_lens refused the matryoshka_batchtopk settings"):
        training_sae(bad, 16)
    with pytest.raises(LensError, match="larger than d_sae"):
        TrainConfig(architecture="matryoshka_batchtopk", d_sae=4, k=8).validate()
    with pytest.raises(LensError, match="not a setting of the topk SAE"):  # training_sae validates too
        training_sae(TrainConfig(architecture="topk", d_sae=32, k=4, options={"matryoshka_widths": [8]}), 16)


def test_options_are_part_of_the_settings_compared_on_resume():
    a = TrainConfig(architecture="topk", options={"aux_loss_coefficient": 0.5})
    b = TrainConfig(architecture="topk", options={"aux_loss_coefficient": 0.25})
    assert a.differs(b) == ["options"] and not a.differs(TrainConfig.from_json(a.to_json()))
    assert TrainConfig.from_json({k: v for k, v in a.to_json().items() if k != "options"}).options == {}


def test_the_static_list_of_builtins_is_the_registry():
    from saes.config import BUILTIN_ARCHITECTURES

    assert set(BUILTIN_ARCHITECTURES) == set(ARCHS) and list(BUILTIN_ARCHITECTURES) == sorted(BUILTIN_ARCHITECTURES)


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    from lens.capture_folder import capture_to_disk
    from lens.tiny import tiny_model

    torch.manual_seed(0)
    texts = [f"row {i}: the quick brown fox jumps over {i * 7} lazy dogs." for i in range(12)]
    return capture_to_disk(tiny_model("llama", n_layers=2, d_model=16), texts, [SITE], "all", batch_size=4,
                           out=tmp_path_factory.mktemp("cap") / "cap", progress=False).path


def _train_cli(monkeypatch, capsys, capture, out, *argv):
    from tests.helpers import run_cli

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return run_cli(monkeypatch, capsys, ["sae", "train", "-c", capture, "-o", out, "--d-sae", "32", "--k", "4",
                                             "--total-rows", "128", "--batch-size", "32", "--buffer-rows", "64",
                                             "--checkpoint-every", "0", "--json", *argv])


def test_cli_help_lists_every_registered_architecture(monkeypatch, capsys):
    from tests.helpers import run_cli

    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli(monkeypatch, capsys, ["sae", "train", "--help"])
    assert code == 0 and "--option" in out and "--import" in out
    for arch in ARCHS:
        assert arch in out, arch


def test_cli_options_reach_the_architecture(tmp_path, monkeypatch, capsys, capture):
    import json

    code, out, err = _train_cli(monkeypatch, capsys, capture, tmp_path / "sae", "--arch", "matryoshka_batchtopk",
                                "--option", "matryoshka_widths=[8, 32]", "--option", "use_matryoshka_aux_loss=true",
                                "--option", "aux_loss_coefficient=0.5", "--option", "apply_b_dec_to_input=false")
    assert code == 0, err
    train = json.loads((tmp_path / "sae" / "lens.json").read_text())["train"]
    assert train["architecture"] == "matryoshka_batchtopk" and json.loads(out)["d_sae"] == 32
    assert train["options"] == {"matryoshka_widths": [8, 32], "use_matryoshka_aux_loss": True,
                                "aux_loss_coefficient": 0.5, "apply_b_dec_to_input": False}  # JSON values
    code, _, err = _train_cli(monkeypatch, capsys, capture, tmp_path / "mp", "--arch", "matching_pursuit",
                              "--option", "max_iterations=3")
    assert code == 0, err
    assert json.loads((tmp_path / "mp" / "cfg.json").read_text())["architecture"] == "matching_pursuit"


def test_cli_trains_an_architecture_a_user_module_registers(tmp_path, monkeypatch, capsys, capture):
    import sys

    import sae_lens.registry

    # the user's module registers into a copy of the registry, restored after the test
    registry = dict(sae_lens.registry.SAE_TRAINING_CLASS_REGISTRY)
    monkeypatch.setattr(sae_lens.registry, "SAE_TRAINING_CLASS_REGISTRY", registry)
    (tmp_path / "my_lens_arch.py").write_text(
        "from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig, register_sae_training_class\n"
        "register_sae_training_class('my_cli_l1', StandardTrainingSAE, StandardTrainingSAEConfig)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        code, _, err = _train_cli(monkeypatch, capsys, capture, tmp_path / "sae", "--arch", "my_cli_l1")
        assert code == 2 and "--arch 'my_cli_l1' is not in sae_lens's training registry" in err
        code, out, err = _train_cli(monkeypatch, capsys, capture, tmp_path / "sae", "--import", "my_lens_arch",
                                    "--arch", "my_cli_l1", "--l1", "0.25", "--option", "lp_norm=2")
        assert code == 0, err
    finally:
        sys.modules.pop("my_lens_arch", None)
    train = load_sae(tmp_path / "sae").meta["train"]
    assert train["architecture"] == "my_cli_l1" and train["l1_coefficient"] == 0.25
    assert train["options"] == {"lp_norm": 2} and "my_cli_l1" in registry
