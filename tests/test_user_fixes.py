"""What a new user hit (issue 20): outlier first-token rows, named positions, help texts as written."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import warnings  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from lens.capture_folder import capture_to_disk
from lens.capture_memory import capture  # noqa: E402
from lens.outliers import OutlierWarning  # noqa: E402
from lens.selection import parse_select  # noqa: E402
from tests.helpers import generate_steered  # noqa: E402

TEXTS = ["Q:12+34=?\nA:46", "short one", "Q:5+5=?\nA:10", "another line of text."]
SITE = "blocks.1.hook_resid_post"


@contextmanager
def first_token_outlier(model, scale=1000.0):
    """Plant an attention-sink-like outlier: the embedding at position 0 of every row scaled up."""
    emb = model.hf.get_input_embeddings()

    def hook(mod, args, out):
        out = out.clone()
        out[:, 0] *= scale  # right padding: every row's first token sits in slot 0
        return out

    h = emb.register_forward_hook(hook)
    try:
        yield
    finally:
        h.remove()


def _outlier_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, OutlierWarning)]


def test_from_selection_parses_and_round_trips():
    s = parse_select("from:1")
    assert s.spec == "from:1" and parse_select(s.spec) == s
    assert parse_select("from:0").spec == "from:0"
    from lens.errors import LensError

    for bad in ("from:", "from:-1", "from:x"):
        with pytest.raises(LensError, match="bad selection"):
            parse_select(bad)


def test_capture_warns_about_first_token_outlier_and_from_1_skips_it(tiny, tmp_path):
    m = tiny("llama")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        clean = capture(m, TEXTS, [SITE], "all", progress=False)
    assert not _outlier_warnings(rec)  # no planted outlier: no warning
    with first_token_outlier(m):
        with pytest.warns(OutlierWarning, match=r"position\(s\) 0 \(4 rows\).*from:1") as rec:
            acts = capture(m, TEXTS, [SITE], "all", progress=False)
        assert len(_outlier_warnings(rec)) == 1
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            skipped = capture(m, TEXTS, [SITE], "from:1", progress=False)
        assert not _outlier_warnings(rec)
        # the streamed capture warns as well (and the batched, non-`all` path)
        with pytest.warns(OutlierWarning, match="position"):
            folder = capture_to_disk(m, TEXTS, [SITE], "all", out=tmp_path / "cap", progress=False)
        with pytest.warns(OutlierWarning, match=r"position\(s\) 0"):
            capture(m, TEXTS, [SITE], "positions:0,1,2,-1", batch_size=2, progress=False)
    keep = acts.start > 0
    torch.testing.assert_close(skipped[SITE], acts[SITE][keep])
    assert skipped.start.tolist() == acts.start[keep].tolist()
    assert len(clean) == len(acts)
    # sae training on the folder warns, naming the selection that skips the outlier
    from saes.config import TrainConfig
    from saes.train import train_sae

    cfg = TrainConfig(d_sae=32, k=4, total_rows=64, batch_size=16, buffer_rows=32, checkpoint_every=0)
    with pytest.warns(OutlierWarning, match=r"position\(s\) 0.*from:1"):
        train_sae(folder, tmp_path / "sae", cfg, progress=False)


# --- named positions: the last prompt token (P-1) vs the first generated token (P) ---

PROMPTS = ["Q:12+3=?", "hello there my friend", "ab"]
NEW = 5


def _generate(model, prompts, ivs):
    return generate_steered(model, prompts, ivs, NEW)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("name,step,offset", [("last_prompt_token", 0, -1), ("first_step", 0, -1),
                                              ("first_generated_token", 1, 0)])
def test_named_positions_touch_exactly_their_position_under_the_kv_cache(tiny, family, name, step, offset):
    from lens.interventions import Intervention, Where, steer

    model = tiny(family)
    vec = torch.randn(model.d_model, generator=torch.Generator().manual_seed(1)) * 3
    where = getattr(Where, name)()
    assert where.kind == name
    ivs = [Intervention("blocks.1.hook_resid_post", vec, where=where)]
    enc, out, h = _generate(model, PROMPTS, ivs)
    plen = enc["attention_mask"].sum(-1).tolist()
    assert sorted((r["row"], r["position"], r["step"]) for r in h.log.records) == [
        (i, plen[i] + offset, step) for i in range(len(PROMPTS))]
    # the cached run equals a full recompute (no cache) of prompt + generated tokens, steered at the same position
    width = enc["input_ids"].shape[1]
    mask = torch.cat([enc["attention_mask"], torch.ones(len(PROMPTS), NEW, dtype=torch.long)], dim=1)
    with torch.no_grad(), steer(model, ivs, prompt_lengths=torch.tensor(plen)) as h2:
        full = model.hf(input_ids=out.sequences, attention_mask=mask,
                        position_ids=(mask.cumsum(-1) - 1).clamp(min=0), use_cache=False).logits
    torch.testing.assert_close(full[:, width - 1: width - 1 + NEW], torch.stack(out.logits, 1), atol=1e-4, rtol=1e-4)
    assert sorted((r["row"], r["position"]) for r in h2.log.records) == [
        (i, plen[i] + offset) for i in range(len(PROMPTS))]
    # the generated token the position shapes: P-1 changes the first one, P only later ones
    _, plain, _ = _generate(model, PROMPTS, [])
    first = torch.stack(out.logits, 1)[:, 0]
    if offset == 0:
        torch.testing.assert_close(first, torch.stack(plain.logits, 1)[:, 0])
    else:
        assert not torch.allclose(first, torch.stack(plain.logits, 1)[:, 0])


def test_named_positions_say_which_one_they_are():
    from lens.interventions import Where

    assert "P-1" in str(Where.last_prompt_token()) and "last prompt token" in str(Where.last_prompt_token())
    assert "position P," in str(Where.first_generated_token()) and "first generated token" in str(
        Where.first_generated_token())
    assert "last prompt token" in str(Where.first_step()) and "P-1" in str(Where.first_step())
    for w in (Where.last_prompt_token(), Where.first_generated_token(), Where.first_step()):
        assert Where.from_json(w.to_json()) == w
    assert "last prompt token" in Where.first_step.__doc__.replace("\n", " ").lower()


def test_steer_check_at_the_first_generated_token(tiny):
    from test_find_feature import handmade_sae

    from lens.interventions import Where
    from saes.steer_check import steer_check

    m = tiny("llama")
    d, _ = handmade_sae(d_in=64, d_sae=16)
    prompts = ["Q:12+34=?\n", "Q:5+6+7=?\n", "hi"]
    for where, name in ((Where.first_generated_token(), "first_generated_token"), (None, "first_step")):
        rows = steer_check(m, d, [3], prompts, lambda i, t: False, alphas=(50.0,), n_random=1, max_new_tokens=4,
                           is_reasoning=lambda t: "=" in t, where=where)
        for r in rows[1:]:
            assert r["where"] == name and r["only_at_where"] is True and r["fired"] == len(prompts)
    from lens.errors import LensError

    with pytest.raises(LensError, match="one named position"):
        steer_check(m, d, [3], prompts, lambda i, t: False, alphas=(1.0,), where=Where.generated(0, 2))


def test_capture_selections_named_like_the_positions(tiny):
    from lens.errors import LensError

    assert parse_select("last_prompt_token") == parse_select("last_prompt")
    tiny = tiny("llama")
    items = [{"prompt": "Q:12+34=?\n", "completion": "A:46"}, {"prompt": "Q:5=?\n", "completion": "<think>5"}]
    last = capture(tiny, items, SITE, "last_prompt_token", progress=False)
    first = capture(tiny, items, SITE, "first_generated_token", progress=False)
    assert (first.start == last.start + 1).all()  # P and P-1 of each example
    whole = capture(tiny, items, SITE, "all", progress=False)
    for i in range(len(items)):
        row = whole[SITE][(whole.example == i) & (whole.start == first.start[i])]
        torch.testing.assert_close(first[SITE][i], row[0])
    with pytest.raises(LensError, match="needs inputs with a prompt and a completion"):
        capture(tiny, ["no split here"], SITE, "first_generated_token", progress=False)


def test_a_capture_refused_before_its_first_shard_leaves_nothing(tiny, tmp_path, monkeypatch):
    from lens import capture_to_disk
    from lens.errors import LensError

    tiny = tiny("llama")
    out = tmp_path / "caps"
    with pytest.raises(LensError, match="needs inputs with a prompt and a completion"):
        capture_to_disk(tiny, ["no split here"], SITE, "first_generated_token", out=out, progress=False)
    assert not out.exists()  # the folder it made is gone: a rerun with another selection needs no --overwrite
    mine = tmp_path / "mine"
    mine.mkdir()  # an empty folder the user made stays, with no manifest in it
    with pytest.raises(LensError, match="needs inputs with a prompt and a completion"):
        capture_to_disk(tiny, ["no split here"], SITE, "first_generated_token", out=mine, progress=False)
    assert mine.is_dir() and not (mine / "manifest.json").exists()
    got = capture_to_disk(tiny, ["no split here"], SITE, "last", out=out, progress=False)
    assert got.n_rows == 1 and got.complete

    import lens.capture_folder as CF

    def interrupted(path):  # Ctrl-C after the first shard is in place, before the manifest lists it
        raise KeyboardInterrupt

    monkeypatch.setattr(CF, "file_digest", interrupted)
    with pytest.raises(KeyboardInterrupt):
        capture_to_disk(tiny, ["no split here"], SITE, "last", out=tmp_path / "cut", progress=False)
    assert not (tmp_path / "cut").exists()  # no orphan shard that would make the folder "other files"
    monkeypatch.undo()
    assert capture_to_disk(tiny, ["no split here"], SITE, "last", out=tmp_path / "cut", progress=False).complete


def test_cli_steer_where_names():
    from lens.cli.steer_cmd import parse_where
    from lens.errors import LensError

    assert parse_where("last_prompt_token").kind == "last_prompt_token"
    assert parse_where("first_generated_token").kind == "first_generated_token"
    assert parse_where("first_step").kind == "first_step"
    assert parse_where("last_prompt").kind == "last_prompt_token"  # the selection's name works here too
    with pytest.raises(LensError, match="first_generated_token"):
        parse_where("first_token")


def test_the_last_prompt_token_has_the_same_names_as_selection_and_as_where():
    from lens.cli.steer_cmd import parse_where
    from lens.selection import LastPromptToken, parse_select

    for name in ("last_prompt", "last_prompt_token", "first_step"):
        assert isinstance(parse_select(name), LastPromptToken), name
        assert parse_where(name).kind in ("last_prompt_token", "first_step"), name


# --- help texts render as written ---


def _commands():
    import typer

    from lens.cli.main import app

    def walk(cmd, path):
        yield path, cmd
        if hasattr(cmd, "commands"):  # a group (typer may bundle its own click)
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("path", [" ".join(p) or "(lens)" for p, _ in _commands()])
def test_every_help_text_renders_as_written(path):
    """`lens ... --help` shows each option's help and the command's docstring literally: no rich markup or
    emoji codes (`generated:A:B` once rendered as "generated🅰B")."""
    import inspect

    from typer.testing import CliRunner

    from lens.cli.main import app

    args = [] if path == "(lens)" else path.split()
    cmd = dict((" ".join(p) or "(lens)", c) for p, c in _commands())[path]
    res = CliRunner().invoke(app, [*args, "--help"], terminal_width=100)
    assert res.exit_code == 0, res.output
    out = _flat(res.output)
    assert "\U0001f170" not in res.output and not any(ord(ch) > 0x2500 for ch in res.output)  # no emoji, no boxes
    for param in cmd.params:
        if getattr(param, "help", None):
            assert _flat(param.help) in out, (path, param.name)
    if cmd.help:
        first = inspect.cleandoc(cmd.help).partition("\f")[0].split("\n\n")[0]
        assert _flat(first) in out
    if path == "steer":
        assert "generated:A:B" in out and "positions:0,5" in out and "first_generated_token" in out
    if path == "capture":
        assert "from:N" in out and "regex:P" in out


# --- lens steer: random-direction controls and a custom behaviour metric ---


def test_random_like_keeps_everything_but_the_direction():
    from lens.interventions import Intervention, Where

    iv = Intervention("blocks.1.hook_resid_post", torch.arange(64.0), 3.0, Where.first_generated_token(),
                      source="dir")
    a, b, c = iv.random_like(0), iv.random_like(0), iv.random_like(1)
    assert torch.equal(a.vector, b.vector) and not torch.equal(a.vector, c.vector)
    assert float(a.vector.norm()) == pytest.approx(float(iv.vector.norm()), rel=1e-6)
    assert (a.site, a.op, a.scale, a.where) == (iv.site, iv.op, iv.scale, iv.where)
    assert abs(float(torch.nn.functional.cosine_similarity(a.vector, iv.vector, dim=0))) < 0.5
    rows = torch.randn(3, 64, generator=torch.Generator().manual_seed(5)) * torch.tensor([[1.0], [4.0], [9.0]])
    per = Intervention("blocks.1.hook_resid_post", rows, 1.0, Where.last_prompt_token()).random_like(2)
    assert per.vector.shape == rows.shape  # one random direction per example, each of that example's norm
    torch.testing.assert_close(per.vector.norm(dim=-1), rows.norm(dim=-1))
    assert abs(float(torch.nn.functional.cosine_similarity(per.vector[0], per.vector[1], dim=0))) < 0.5


def test_cli_steer_random_control_and_metric(tmp_path, capsys, monkeypatch):
    import json
    import sys

    from lens.cli.main import main
    from lens.directions import Direction
    from lens.tiny import tiny_model

    m = tiny_model("llama", n_layers=2)
    m.hf.save_pretrained(tmp_path / "m")
    m.tokenizer.save_pretrained(tmp_path / "m")
    vec = torch.randn(m.d_model, generator=torch.Generator().manual_seed(0))
    Direction("blocks.1.hook_resid_post", vec, m.facts(), "test").save(tmp_path / "dir")

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["lens", *map(str, args)])
        try:
            main()
        except SystemExit as e:
            assert not e.code, capsys.readouterr().err
        return capsys.readouterr().out

    args = ["steer", "-m", tmp_path / "m", "--direction", tmp_path / "dir", "--scale", 30, "-p", "Q:12+3=?",
            "-p", "ab", "--max-new-tokens", 4, "--where", "first_generated_token"]
    res = json.loads(run(*args, "--random-control", 2, "--seed", 7, "--metric", "regex:[0-9]", "--json"))
    assert sorted((f["row"], f["step"]) for f in res["fired"]) == [(0, 1), (1, 1)]
    assert [c["seed"] for c in res["random_controls"]] == [7, 1007]
    norms = [c["interventions"][0] for c in res["random_controls"]]
    assert all(n["scale"] == 30 and n["where"]["kind"] == "first_generated_token" for n in norms)
    s = res["summary"]
    assert set(s) == {"plain", "steered", "random_controls"} and 0 <= s["steered"]["metric_rate"] <= 1
    assert s["steered"]["metric_rate"] == sum(any(ch.isdigit() for ch in r["steered"]) for r in res["results"]) / 2
    assert res["metric"] == "regex:[0-9]" and len(res["random_controls"][0]["texts"]) == 2
    again = json.loads(run(*args, "--random-control", 2, "--seed", 7, "--json"))
    assert [c["texts"] for c in again["random_controls"]] == [c["texts"] for c in res["random_controls"]]
    text = run(*args, "--random-control", 1, "--metric", "regex:[0-9]")
    assert "random (seed 0)" in text and "regex:[0-9]" in text
    from lens.cli.steer_cmd import parse_metric
    from lens.errors import LensError

    assert parse_metric("py:os.path:isabs")("/x") and parse_metric("regex:^a")("ab")
    for bad in ("regex:(", "nope", "py:no_such_module_x:f"):
        with pytest.raises(LensError, match="--metric"):
            parse_metric(bad)


def test_smollm2_first_token_outlier_is_named(smollm2):
    """The reported case: SmolLM2-135M's first-token residual (norm ~24,000 vs ~170) is warned about."""
    texts = ["Think step by step: what is 12+30?", "Answer with just the number: 7*6?"]
    with pytest.warns(OutlierWarning, match=r"position\(s\) 0 \(2 rows\)"):
        acts = capture(smollm2, texts, ["blocks.15.hook_resid_post"], "all", progress=False)
    n = acts["blocks.15.hook_resid_post"].norm(dim=-1)
    assert float(n[acts.start == 0].min()) > 50 * float(n.median())
