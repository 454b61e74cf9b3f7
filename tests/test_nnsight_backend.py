"""The nnsight backend on padded batches: capture equals lens.capture, steered generation equals the lens engine
token for token (and each padded row equals that row alone), and `--backend nnsight` on the CLI gives what the
default backend gives."""

import json

import pytest
import torch

pytest.importorskip("nnsight", reason="nnsight is the optional extra reasoning-lens[nnsight]")

import lens  # noqa: E402
from lens.decoding.generate import encode_prompts, generate, left_pad
from lens.interventions import Intervention, Where, steer
from lens.interventions.backends.nnsight_backend import generate_nnsight, language_model
from lens.interventions.backends.nnsight_capture import capture_nnsight
from lens.interventions.spec import save_interventions
from lens.tiny import tiny_model
from tests.helpers import run_cli

NEW = 6
PROMPTS = ["Q:12+34=?", "hi", "hello world, how", "abc"]  # 10, 3, 17 and 4 tokens: padded on the left
TEXTS = ["Q:12+34=?\nA: 46. Done.", "hi", "hello world, how are you? Fine. Good!",
         {"prompt": "Q:1+2=?", "completion": " 3. Yes."}]
SITES = ["blocks.0.hook_resid_pre", "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post",
         "blocks.2.hook_resid_post"]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def setup(request):
    """Llama (rotary) and GPT-2 (learned absolute positions: wrong position ids on padded rows show at once)."""
    model = tiny_model(request.param)
    return model, language_model(model)


def _ivs(model):
    g = torch.Generator().manual_seed(0)
    v = [torch.randn(model.d_model, generator=g) * 3 for _ in range(6)]
    return [
        Intervention("blocks.1.hook_resid_post", v[0], where=Where.first_step()),
        Intervention("blocks.2.hook_resid_post", v[1], where=Where.generated(1, 3), scale=0.8),
        Intervention("blocks.3.hook_resid_post", v[2], op="project_out"),
        Intervention("blocks.0.hook_resid_pre", v[3], where=Where.absolute(1, 2)),
        Intervention("blocks.2.hook_mlp_out", v[4], op="clamp", scale=2.0, where=Where.prompt_last(2)),
        Intervention("blocks.1.hook_attn_out", v[5], op="set", scale=0.5, where=Where.absolute(4)),
        Intervention("blocks.2.hook_resid_post", torch.randn(len(PROMPTS), model.d_model, generator=g),
                     where=Where.first_generated_token()),  # per-example vectors follow the rows
    ]


@pytest.mark.parametrize("select", ["all", "last_prompt", "sentences"])
def test_capture_equals_lens_capture(setup, select):
    model, lm = setup
    want = lens.capture(model, TEXTS, SITES, select, batch_size=3, progress=False)
    got = capture_nnsight(lm, model, TEXTS, SITES, select, batch_size=3)
    assert got.sites == want.sites and len(got) == len(want) and got.labels == want.labels
    for key in ("example", "start", "end", "token_id"):
        assert torch.equal(getattr(got, key), getattr(want, key))
    for site in SITES:
        torch.testing.assert_close(got[site], want[site], rtol=0, atol=1e-5)
    assert got.n_tokens == want.n_tokens and got.model == want.model
    assert model.tokenizer.padding_side == "right"  # nnsight's left padding stays on its own copy


def test_padded_steering_equals_engine_and_rows_alone(setup):
    model, lm = setup
    ivs = _ivs(model)
    ids, mask = left_pad(encode_prompts(model, PROMPTS), 0)
    assert not bool(mask.all())
    got = generate_nnsight(lm, model, ivs, ids, NEW, mask, pad_token_id=0, eos_token_id=None)[:, ids.shape[1]:]
    with steer(model, ivs):
        want = [s.token_ids for s in generate(model, PROMPTS, NEW, eos_token_id=None).samples]
    assert got.tolist() == want
    plain = [s.token_ids for s in generate(model, PROMPTS, NEW, eos_token_id=None).samples]
    assert got.tolist() != plain
    for i, p in enumerate(PROMPTS):
        one = [iv if iv.vector.dim() == 1 else Intervention(iv.site, iv.vector[i : i + 1], where=iv.where)
               for iv in ivs]
        ids1 = torch.tensor(encode_prompts(model, [p]))
        alone = generate_nnsight(lm, model, one, ids1, NEW, pad_token_id=0, eos_token_id=None)[0, ids1.shape[1]:]
        assert alone.tolist() == got[i].tolist()


def test_generation_ending_early_and_fired_records(setup):
    """Rows end at an EOS before some planned steps (the trace ends without reaching them, and its result is
    still read); the completions and fired records equal the engine's for each prompt run alone."""
    from lens.decoding.nnsight_generate import generate_nnsight_prompts

    model, lm = setup
    ivs = _ivs(model)[:2]
    with steer(model, ivs):
        eos = [generate(model, PROMPTS[:1], NEW, eos_token_id=None).samples[0].token_ids[1]]  # prompt 0 ends at 2
    gen, fired = generate_nnsight_prompts(model, PROMPTS, NEW, ivs, lm=lm, eos_token_id=eos, batch_size=3)
    want, want_fired = [], []
    for i, p in enumerate(PROMPTS):
        with steer(model, ivs) as h:
            want += generate(model, [p], NEW, eos_token_id=eos).samples
        want_fired += [{"row": i, "step": r["step"], "position": r["position"], "site": r["site"]}
                       for r in h.log.records]
    assert [s.token_ids for s in gen.samples] == [s.token_ids for s in want]
    assert [s.finish_reason for s in gen.samples] == [s.finish_reason for s in want]
    assert "eos" in {s.finish_reason for s in want} and fired == want_fired


def test_gates_refused(setup):
    model, lm = setup
    iv = Intervention("blocks.1.hook_resid_post", torch.ones(model.d_model), where=Where.on_gate("g"))
    with pytest.raises(lens.LensError, match="lens engine only"):
        generate_nnsight(lm, model, [iv], torch.tensor([[1, 5, 6]]), 2)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny"
    m = tiny_model("llama", n_layers=2)
    m.hf.save_pretrained(path)
    m.tokenizer.save_pretrained(path)
    g = torch.Generator().manual_seed(1)
    save_interventions(path.parent / "spec", [
        Intervention("blocks.0.hook_resid_post", torch.randn(m.d_model, generator=g) * 4, where=Where.first_step()),
        Intervention("blocks.1.hook_resid_post", torch.randn(m.d_model, generator=g) * 2, where=Where.generated(0, 3)),
    ], m)
    return path


def _count_traces(monkeypatch) -> list:
    """Record every nnsight trace or generation that assembles its inputs (so a test knows the nnsight path ran)."""
    from nnsight.modeling.transformers import TransformersModel

    calls, real = [], TransformersModel._batch

    def spy(self, invokes, fn):
        calls.append("generate" if getattr(fn, "__name__", "") == "generate" else "trace")
        return real(self, invokes, fn)

    monkeypatch.setattr(TransformersModel, "_batch", spy)
    return calls


def test_cli_steer_nnsight_equals_default(capsys, monkeypatch, folder):
    args = ["steer", "-m", folder, "--spec", folder.parent / "spec", "-p", "Q:12+34=?", "-p", "hi", "-p",
            "hello world", "--max-new-tokens", NEW, "--random-control", 1, "--json"]
    code, out, err = run_cli(monkeypatch, capsys, args)
    assert code == 0, err
    calls = _count_traces(monkeypatch)
    code2, out2, err2 = run_cli(monkeypatch, capsys, [*args, "--backend", "nnsight"])
    assert code2 == 0, err2
    assert calls == ["generate"] * 3  # plain, steered, random control: all prompts in one padded batch each
    want, got = json.loads(out), json.loads(out2)
    assert got == want and want["fired"] and want["summary"]["steered"]["changed"] > 0


def test_cli_capture_nnsight_equals_default(capsys, monkeypatch, tmp_path, folder):
    from lens.capture_folder import open_capture

    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps(t) + "\n" for t in TEXTS))
    calls = _count_traces(monkeypatch)
    for select in ("all", "sentences"):
        outs = []
        for backend in ("lens", "nnsight"):
            out = tmp_path / f"{select}-{backend}"
            code, text, err = run_cli(monkeypatch, capsys, ["capture", "-m", folder, "-i", inputs, "-s",
                                                            "blocks.0.hook_resid_pre,blocks.1.hook_resid_post",
                                                            "--select", select, "--batch-size", 3, "-o", out,
                                                            "--backend", backend, "--json"])
            assert code == 0, err
            outs.append((json.loads(text), open_capture(out).load()))
        (s1, a), (s2, b) = outs
        def same(s):  # where, when and by which backend it was written differ; everything else must not
            return {k: v for k, v in s.items() if k not in ("path", "created", "backends")}

        assert same(s1) == same(s2)
        assert s1["backends"] == ["lens"] and s2["backends"] == ["nnsight"]
        for key in ("example", "start", "end", "token_id"):
            assert torch.equal(getattr(a, key), getattr(b, key))
        for site in a.sites:
            torch.testing.assert_close(b[site], a[site], rtol=0, atol=1e-5)
    assert calls == ["trace"] * 4  # two batches of 3 + 1 inputs per selection, through nnsight only


@pytest.mark.parametrize("args, message", [
    (["steer", "-m", "MODEL", "--spec", "SPEC", "-p", "hi", "--remote"], "add --backend nnsight"),
    (["capture", "-m", "MODEL", "-i", "IN", "-o", "OUT", "--remote"], "add --backend nnsight"),
    (["capture", "-m", "MODEL", "-i", "IN", "-o", "OUT", "--backend", "lens", "--remote"], "add --backend nnsight"),
    (["capture", "-m", "MODEL", "-i", "IN", "-o", "OUT", "--backend", "nnsight", "--remote"], "hub models on NDIF"),
    (["steer", "-m", "MODEL", "--spec", "SPEC", "-p", "hi", "--backend", "tl"], "--backend must be one of"),
])
def test_cli_remote_refused(capsys, monkeypatch, tmp_path, folder, args, message):
    (tmp_path / "in.jsonl").write_text('"hello"\n')
    subs = {"MODEL": folder, "SPEC": folder.parent / "spec", "IN": tmp_path / "in.jsonl", "OUT": tmp_path / "out"}
    code, out, err = run_cli(monkeypatch, capsys, [subs.get(a, a) for a in args])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("lens: error:") and message in lines[0], err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def _weightless(folder, dest):
    """A copy of the model folder without its weights file: config and tokenizer only."""
    import shutil

    dest.mkdir()
    for f in folder.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors"):
            shutil.copy(f, dest / f.name)
    return dest


def test_remote_model_loads_no_weights(tmp_path, folder):
    """`remote_model`: nnsight's meta build from the config and tokenizer (the folder has no weights to read) and a
    lens Model over the same module: sites, width, vocabulary and facts work; every tensor is meta."""
    from lens.interventions.backends.nnsight_backend import envoy, remote_model
    from lens.sites import all_sites

    path = _weightless(folder, tmp_path / "remote")
    lm, m = remote_model(str(path))
    tensors = {**dict(m.hf.named_parameters()), **dict(m.hf.named_buffers())}
    assert tensors and all(t.is_meta for t in tensors.values()) and not lm.dispatched
    assert lm._module is m.hf and m.fingerprint == f"remote:{path}"
    assert (m.n_layers, m.d_model, m.vocab_size, m.causal) == (2, 64, len(m.tokenizer), True)
    assert m.facts()["fingerprint"] == f"remote:{path}" and len(all_sites(m)) == 2
    assert envoy(lm, m, "blocks.1.hook_resid_post")[0]._module is m.hf.model.layers[1]
    assert lm.tokenizer.padding_side == "left" and m.tokenizer is not lm.tokenizer


@pytest.fixture
def remote(monkeypatch, tmp_path, folder):
    """`--remote` on a local folder standing for a hub id: lens builds from a weightless copy (so any local weight
    load fails); nnsight's remote backend is replaced by a stand-in for NDIF that records the call and runs the
    trace in-process on the real weights, put into the copy only then (the server holds them, lens never does)."""
    import shutil

    from nnsight.modeling.mixins.remotable import Remotable

    import lens.models
    from lens.interventions.backends import nnsight_backend

    path = _weightless(folder, tmp_path / "remote")
    state = {"calls": [], "models": []}
    resolve, build = lens.models._resolve_spec, nnsight_backend.remote_model
    monkeypatch.setattr(lens.models, "_resolve_spec",
                        lambda spec: ("hub", spec, None) if spec == str(path) else resolve(spec))

    def built(repo_id):
        lm, m = build(repo_id)
        assert all(t.is_meta for t in m.hf.state_dict().values()) and not lm.dispatched
        state["models"].append(m)
        return lm, m

    def ndif(self, remote, blocking, job_id, verbose):
        state["calls"].append(remote)
        if not (path / "model.safetensors").exists():
            shutil.copy(folder / "model.safetensors", path / "model.safetensors")
        return None  # no backend: nnsight runs the trace here, dispatching the weights as the server would

    monkeypatch.setattr(nnsight_backend, "remote_model", built)
    monkeypatch.setattr(Remotable, "_remote_backend", ndif)
    state["path"] = path
    return state


def test_cli_steer_remote(capsys, monkeypatch, folder, remote):
    """`lens steer --backend nnsight --remote`: no weights loaded by lens, every generation a remote one (remote=True
    reaches nnsight's trace), and the same JSON as the local nnsight backend."""
    args = ["steer", "--spec", folder.parent / "spec", "-p", "Q:12+34=?", "-p", "hi", "--max-new-tokens", NEW,
            "--backend", "nnsight", "--json"]
    code, out, err = run_cli(monkeypatch, capsys, [args[0], "-m", folder, *args[1:]])
    assert code == 0, err
    code2, out2, err2 = run_cli(monkeypatch, capsys, [args[0], "-m", remote["path"], *args[1:], "--remote"])
    assert code2 == 0, err2
    assert remote["calls"] == [True, True] and len(remote["models"]) == 1  # plain and steered
    assert all(t.is_meta for t in remote["models"][0].hf.state_dict().values())  # still: NDIF ran the weights
    assert json.loads(out2) == json.loads(out)


def test_cli_capture_remote(capsys, monkeypatch, tmp_path, folder, remote):
    """`lens capture --backend nnsight --remote`: every batch a remote trace, shards marked nnsight-remote, the rows
    the local nnsight backend writes; lens's model stays on the meta device."""
    from lens.capture_folder import open_capture

    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps(t) + "\n" for t in TEXTS))
    got = []
    for spec, extra in ((folder, []), (remote["path"], ["--remote"])):
        out = tmp_path / f"out-{len(got)}"
        code, text, err = run_cli(monkeypatch, capsys, ["capture", "-m", spec, "-i", inputs, "-s",
                                                        "blocks.0.hook_resid_pre,blocks.1.hook_resid_post",
                                                        "--batch-size", 3, "-o", out, "--backend", "nnsight",
                                                        "--json", *extra])
        assert code == 0, err
        got.append((json.loads(text), open_capture(out).load()))
    (s1, a), (s2, b) = got
    assert remote["calls"] == [True, True] and s1["backends"] == ["nnsight"] and s2["backends"] == ["nnsight-remote"]
    assert all(t.is_meta for t in remote["models"][0].hf.state_dict().values())
    for key in ("example", "start", "end", "token_id"):
        assert torch.equal(getattr(a, key), getattr(b, key))
    for site in a.sites:
        torch.testing.assert_close(b[site], a[site], rtol=0, atol=1e-5)


def test_cli_remote_refuses_placement(capsys, monkeypatch, remote):
    code, out, err = run_cli(monkeypatch, capsys, ["--device", "cpu", "steer", "-m", remote["path"], "--direction",
                                                   remote["path"], "-p", "hi", "--backend", "nnsight", "--remote"])
    assert code == 2 and "drop --device" in err and remote["calls"] == [] and not remote["models"], err
