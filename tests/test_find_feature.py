"""Feature search (planted feature, AUROC, memory) and the first-step steer-check (tiny, offline)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import pytest  # noqa: E402
import torch  # noqa: E402

from lens.errors import LensError  # noqa: E402
from saes.io import Dictionary  # noqa: E402
from saes.search import (  # noqa: E402
    FeatureAccumulator,
    auroc_from_hist,
    default_edges,
    exact_auroc,
    hist_auroc_error_bound,
    rank_features,
)


def handmade_sae(d_in=16, d_sae=32, seed=0, site="blocks.1.hook_resid_post"):
    """A ReLU SAE whose decoder rows are known directions and whose encoder reads them back; and those rows."""
    from saes.handmade import handmade_dictionary

    d = handmade_dictionary(d_in, site, d_sae, seed=seed)
    return d, d.sae.W_dec.detach().clone()


def test_planted_feature_ranks_first():
    d, dirs = handmade_sae()
    g = torch.Generator().manual_seed(1)
    neg = torch.randn(3000, 16, generator=g) * 0.4
    pos = torch.randn(2000, 16, generator=g) * 0.4 + 2.0 * dirs[11]
    r = rank_features(d, pos, neg, batch_rows=256)
    assert r.features[0] == 11
    top = r.rows[0]
    assert top["auroc"] > 0.95 and top["freq_pos"] > 0.9 and top["effect_size"] > 2
    assert set(top) >= {"feature", "mean_diff", "auroc", "freq_pos", "freq_neg", "effect_size"}
    assert r.n_pos == 2000 and r.n_neg == 3000
    assert rank_features(d, pos, neg, sort_by="auroc").features[0] == 11
    # streamed in pieces gives the same numbers
    r2 = rank_features(d, iter(pos.split(77)), iter(neg.split(101)))
    assert r2.rows[0] == pytest.approx(top)


def brute_auroc(x: torch.Tensor, y: torch.Tensor) -> float:
    """P(x > y) + 0.5 P(x == y) over every pair."""
    x, y = x.double()[:, None], y.double()[None, :]
    return float(((x > y).double() + 0.5 * (x == y).double()).mean())


def test_exact_auroc_equals_pairwise_on_ties():
    g = torch.Generator().manual_seed(3)
    for n_pos, n_neg, d in ((40, 55, 7), (1, 3, 2), (200, 150, 5)):
        # few distinct values (heavy ties), zeros, and some negative values (zeros are not the minimum)
        a = torch.randint(-2, 4, (n_pos, d), generator=g).float() * 0.5
        b = torch.randint(-2, 4, (n_neg, d), generator=g).float() * 0.5
        a[:, 0] = 0  # a feature that never fires in pos
        b[:, 1] = 1.5  # constant in neg
        ra, fa = torch.nonzero(a, as_tuple=True)
        rb, fb = torch.nonzero(b, as_tuple=True)
        got = exact_auroc(fa, a[ra, fa], n_pos, fb, b[rb, fb], n_neg, d)
        for f in range(d):
            assert float(got[f]) == pytest.approx(brute_auroc(a[:, f], b[:, f]), abs=1e-12)


def test_rank_features_auroc_is_exact_for_features_that_fire_everywhere():
    """The reported failure: a feature active on every row in both conditions, two separated clusters
    (mean 12.27 vs 10.78) within one ~19% histogram bin. The exact AUROC is 1.0 (the histogram gave 0.588)."""
    from sae_lens import StandardSAE, StandardSAEConfig

    sae = StandardSAE(StandardSAEConfig(d_in=2, d_sae=2, apply_b_dec_to_input=False))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(2))
        sae.W_dec.copy_(torch.eye(2))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    d = Dictionary(sae, "blocks.0.hook_resid_post", {"model": {}}, "identity")
    g = torch.Generator().manual_seed(0)
    pos = torch.stack([12.27 + 0.2 * torch.rand(22, generator=g), torch.rand(22, generator=g) + 1], 1)
    neg = torch.stack([10.78 + 0.2 * torch.rand(22, generator=g), torch.rand(22, generator=g) + 1], 1)
    r = rank_features(d, pos, neg)
    assert r.auroc_method == "exact"
    row = {x["feature"]: x for x in r.rows}
    assert row[0]["auroc"] == 1.0 and row[0]["auroc_method"] == "exact" and row[0]["auroc_max_error"] == 0.0
    assert row[1]["auroc"] == pytest.approx(brute_auroc(pos[:, 1], neg[:, 1]))
    # over the exact limit: the histogram, its error bound reported and holding
    h = rank_features(d, pos, neg, exact_limit=10)
    assert h.auroc_method == "histogram"
    hrow = {x["feature"]: x for x in h.rows}
    assert hrow[0]["auroc"] < 0.9 and hrow[0]["auroc_max_error"] > 0.1
    for f in (0, 1):
        assert abs(hrow[f]["auroc"] - row[f]["auroc"]) <= hrow[f]["auroc_max_error"] + 1e-12


def test_exact_limit_spills_midstream_to_the_same_histogram():
    d, dirs = handmade_sae()
    g = torch.Generator().manual_seed(5)
    pos = torch.randn(600, 16, generator=g) * 0.6 + dirs[3]
    neg = torch.randn(500, 16, generator=g) * 0.6
    exact = rank_features(d, pos, neg, batch_rows=64)
    assert exact.auroc_method == "exact"
    spilled = rank_features(d, pos, neg, batch_rows=64, exact_limit=3000)  # spills part-way through pos
    hist = rank_features(d, pos, neg, batch_rows=64, exact_limit=0)
    assert spilled.auroc_method == hist.auroc_method == "histogram"
    by = {r["feature"]: r for r in hist.rows}
    for r in spilled.rows:
        assert r["auroc"] == pytest.approx(by[r["feature"]]["auroc"], abs=1e-9)
    ex = {r["feature"]: r["auroc"] for r in exact.rows}
    for r in hist.rows:
        assert abs(r["auroc"] - ex[r["feature"]]) <= r["auroc_max_error"] + 1e-9


def test_histogram_auroc_within_its_bound():
    g = torch.Generator().manual_seed(0)
    a = torch.relu(torch.randn(500, 3, generator=g) + torch.tensor([0.5, 0.0, -0.5]))
    b = torch.relu(torch.randn(700, 3, generator=g))
    edges = default_edges(256)
    pa, pb = FeatureAccumulator(3, edges, exact_limit=0), FeatureAccumulator(3, edges, exact_limit=0)
    pa.update(a)
    pb.update(b)
    approx = auroc_from_hist(pa.pmf(), pb.pmf())
    bound = hist_auroc_error_bound(pa.pmf(), pb.pmf())
    for f in range(3):
        exact = brute_auroc(a[:, f], b[:, f])
        assert abs(float(approx[f]) - exact) <= float(bound[f]) + 1e-12


def test_search_memory_does_not_grow_with_rows():
    d, _ = handmade_sae(d_sae=64)
    a = FeatureAccumulator(64, default_edges(), exact_limit=0)
    size = a.hist.numel()
    for _ in range(5):
        a.update(torch.relu(torch.randn(1000, 64)))
    assert a.hist.numel() == size and a.n == 5000


def test_width_mismatch_in_search():
    d, _ = handmade_sae()
    with pytest.raises(LensError, match="width 8"):
        rank_features(d, torch.randn(10, 8), torch.randn(10, 8))


def test_steer_check_touches_exactly_the_first_step(tiny):
    from lens.decoding.generate import generate
    from lens.interventions import Intervention, Where, steer
    from saes.steer_check import first_step_log_ok, steer_check

    m = tiny("llama")
    d, dirs = handmade_sae(d_in=64, d_sae=16)
    prompts = ["Q:12+34=?\n", "Q:5+6+7=?\n", "hi"]
    rows = steer_check(m, d, [3], prompts, lambda i, t: False, alphas=(50.0,), n_random=2, max_new_tokens=6,
                       is_reasoning=lambda t: "=" in t)
    kinds = [r["kind"] for r in rows]
    assert kinds == ["baseline", "feature", "random", "random"]
    leans = [r["max_cos_to_tested"] for r in rows if r["kind"] == "random"]
    assert all(-1.0 <= c <= 1.0 for c in leans) and all("max_cos_to_tested" not in r for r in rows
                                                            if r["kind"] != "random")
    for r in rows[1:]:
        assert r["first_step_only"] is True and r["fired"] == len(prompts)
        assert r["tokens_mean"] > 0 and 0 <= r["reasoning_rate"] <= 1
    assert {r["feature"] for r in rows[2:]}.isdisjoint({3})
    # the log itself: one record per prompt, step 0, position P-1
    iv = Intervention(d.site, d.direction(3), 50.0, Where.first_step())
    with steer(m, iv) as h:
        out = generate(m, prompts, 6)
    plens = [len(t) for t in m.tokenizer(prompts)["input_ids"]]
    assert first_step_log_ok(h.log, len(prompts), plens)
    assert sorted(r["position"] for r in h.log.records) == sorted(p - 1 for p in plens)
    assert all(r["step"] == 0 for r in h.log.records)
    assert not first_step_log_ok(h.log, len(prompts) + 1, plens)
    plain = generate(m, prompts, 6)
    assert [s.text for s in out.samples] != [s.text for s in plain.samples]  # it did change something


def test_prompt_rows_bounded_batches(tiny):
    from saes.search import prompt_rows

    m = tiny("llama")
    parts = list(prompt_rows(m, [f"Q:{i}+1=?\n" for i in range(10)], "blocks.1.hook_resid_post", batch_size=4))
    assert [p.shape[0] for p in parts] == [4, 4, 2] and parts[0].shape[1] == 64


def test_cli_sae_train_info_and_find_feature(tiny, tmp_path):
    import json

    import typer
    from typer.testing import CliRunner

    from lens.capture_folder import capture_to_disk
    from lens.cli.find_feature_cmd import find_feature_cmd
    from lens.cli.sae_cmd import app as sae_app

    m = tiny("llama")
    folder = tmp_path / "model"
    m.hf.save_pretrained(folder)
    m.tokenizer.save_pretrained(folder)
    texts = [f"Q:{a}+{b}=?\nA:{a + b}" for a in range(10, 30) for b in range(10, 13)]
    capture_to_disk(m, texts, ["blocks.1.hook_resid_post"], "all", out=tmp_path / "cap", progress=False)
    app = typer.Typer()
    app.command("find-feature")(find_feature_cmd)
    app.add_typer(sae_app, name="sae")
    run = CliRunner().invoke
    r = run(app, ["sae", "train", "-c", str(tmp_path / "cap"), "-o", str(tmp_path / "sae"), "--d-sae", "128",
                  "--k", "4", "--total-rows", "4096", "--batch-size", "256", "--buffer-rows", "1024", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["d_sae"] == 128 and info["site"] == "blocks.1.hook_resid_post" and info["evals"]["l0"] == 4
    r = run(app, ["sae", "info", str(tmp_path / "sae"), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["architecture"] == "topk"
    r = run(app, ["sae", "train", "-c", str(tmp_path / "cap"), "-o", str(tmp_path / "dense"), "--d-sae", "128",
                  "--k", "4", "--total-rows", "4096", "--batch-size", "256", "--buffer-rows", "1024",
                  "--dense-decode", "--json"])  # sae_lens's own step: the same SAE up to float rounding
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "sae" / "lens.json").read_text())["train"]["sparse_decode"] is True
    assert json.loads((tmp_path / "dense" / "lens.json").read_text())["train"]["sparse_decode"] is False
    assert json.loads(r.stdout)["evals"]["explained_variance"] == pytest.approx(info["evals"]["explained_variance"],
                                                                                 abs=1e-3)
    pos, neg = tmp_path / "pos.jsonl", tmp_path / "neg.jsonl"
    pos.write_text("\n".join(json.dumps(f"Think step by step: {i}+{i}=?\n") for i in range(10, 30)))
    neg.write_text("\n".join(json.dumps(f"Answer now: {i}+{i}=?\n") for i in range(10, 30)))
    r = run(app, ["find-feature", "-m", str(folder), "--sae", str(tmp_path / "sae"), "--pos", str(pos), "--neg",
                  str(neg), "--top", "5", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert len(out["ranking"]) == 5 and out["contrast"]["n_pos"] == 20
    assert out["ranking"][0]["mean_diff"] >= out["ranking"][-1]["mean_diff"]
    r = run(app, ["find-feature", "-m", str(folder), "--sae", str(tmp_path / "sae"), "--pos", str(pos), "--neg",
                  str(neg), "--top", "5", "--exact-limit", "0", "--json"])  # the streamed histogram, bounded
    hist = json.loads(r.stdout)["ranking"]
    assert {x["auroc_method"] for x in hist} == {"histogram"}
    assert {x["auroc_method"] for x in out["ranking"]} == {"exact"}
    raw_pos, raw_neg = tmp_path / "raw_pos.jsonl", tmp_path / "raw_neg.jsonl"  # --template builds the same texts
    raw_pos.write_text("\n".join(json.dumps(f"Think step by step: {i}+{i}") for i in range(10, 30)))
    raw_neg.write_text("\n".join(json.dumps(f"Answer now: {i}+{i}") for i in range(10, 30)))
    r = run(app, ["find-feature", "-m", str(folder), "--sae", str(tmp_path / "sae"), "--pos", str(raw_pos), "--neg",
                  str(raw_neg), "--template", "{question}=?\n", "--top", "5", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["ranking"] == out["ranking"]
    ev = tmp_path / "eval.jsonl"
    ev.write_text("\n".join(json.dumps({"prompt": f"Q:{i}+1=?\n", "answer": i + 1}) for i in range(4)))
    r = run(app, ["find-feature", "-m", str(folder), "--sae", str(tmp_path / "sae"), "--pos", str(pos), "--neg",
                  str(neg), "--steer-check", "--steer-top", "1", "--n-random", "1", "--alphas", "5",
                  "--eval", str(ev), "--max-new-tokens", "4", "--json"])
    assert r.exit_code == 0, r.output
    sc = json.loads(r.stdout)["steer_check"]
    assert [x["kind"] for x in sc] == ["baseline", "feature", "random"]
    assert all(x["first_step_only"] for x in sc[1:])
    assert all(x["where"] == "last_prompt_token" for x in sc[1:]) and "P-1" in json.loads(r.stdout)["steered_at"]
    assert {x["auroc_method"] for x in json.loads(r.stdout)["ranking"]} == {"exact"}
    # the first generated token (P, step 1) instead, and a custom behaviour metric
    r = run(app, ["find-feature", "-m", str(folder), "--sae", str(tmp_path / "sae"), "--pos", str(pos), "--neg",
                  str(neg), "--steer-check", "--steer-top", "1", "--n-random", "1", "--alphas", "5",
                  "--eval", str(ev), "--max-new-tokens", "4", "--where", "first_generated_token",
                  "--metric", "regex:[0-9]", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert all(x["where"] == "first_generated_token" and x["only_at_where"] for x in got["steer_check"][1:])
    assert got["metric"] == "regex:[0-9]" and "position P," in got["steered_at"]
    r = run(app, ["find-feature", "-m", str(folder), "--sae", str(tmp_path / "sae"), "--pos", str(pos), "--neg",
                  str(neg), "--steer-check", "--steer-top", "1", "--n-random", "1", "--alphas", "5",
                  "--eval", str(ev), "--max-new-tokens", "4", "--top", "3", "--dashboard", str(tmp_path / "dash"),
                  "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    html = (tmp_path / "dash" / "index.html").read_text()
    for row in out["ranking"]:
        page, anchor = row["dashboard"].split("#")
        assert page == str(tmp_path / "dash" / "index.html") and anchor == f"feature-{row['feature']}"
        assert f'<section class="page" id="{anchor}">' in html
    r = run(app, ["find-feature", "--sae", str(tmp_path / "sae"), "--pos", str(tmp_path / "cap"), "--neg",
                  str(tmp_path / "cap"), "--dashboard", str(tmp_path / "dash2")])
    assert r.exit_code != 0 and "--dashboard needs --model and JSONL" in str(r.exception or r.output)


def test_random_controls_come_from_features_that_do_not_separate_the_conditions():
    from saes.search import Ranking

    rows = [{"feature": 3, "auroc": 1.0}, {"feature": 7, "auroc": 0.92}, {"feature": 1, "auroc": 0.55},
            {"feature": 5, "auroc": 0.5}, {"feature": 2, "auroc": 0.1}]
    r = Ranking(rows, n_pos=4, n_neg=4, seconds=1.0, d_sae=8, sort_by="mean_diff")
    assert r.neutral() == [1, 5]
    assert r.neutral(margin=0.45) == [7, 1, 5, 2]


def test_control_pool_widens_to_neutral_features_when_too_few_are_alive():
    from saes.steer_check import control_pool

    pool, kind = control_pool(alive=[3, 5, 6], neutral=[1, 2, 5, 6, 9], exclude=[3], n=2)
    assert pool == [5, 6] and kind.startswith("alive")
    pool, kind = control_pool(alive=[3, 5], neutral=[1, 5, 9], exclude=[5], n=2)  # only feature 5 alive: it is tested
    assert pool == [1, 9] and "too few" in kind  # never a separating feature (3), never a tested one (5)



def test_reproduce_sae_evals_skip_each_texts_first_token(tmp_path, tiny):
    """The feature step's SAE evaluation reads every token but each text's first (the attention-sink row the
    on-demand SAEs are not trained on), so an outlier at position 0 cannot set its explained variance."""
    import warnings

    from lens.outliers import OutlierWarning
    from lens.studies.feature_study import sae_evals
    from saes.handmade import handmade_dictionary
    from saes.io import save_sae

    model = tiny("llama")
    d = handmade_dictionary(model.d_model, "blocks.1.hook_resid_post", d_sae=16)
    save_sae(d.sae, tmp_path / "sae", site=d.site, model=model.facts())
    texts = ["one two three four", "five six seven", "eight nine ten eleven twelve"]
    tokens = sum(len(model.tokenizer(t)["input_ids"]) for t in texts)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutlierWarning)
        out = sae_evals(model, str(tmp_path / "sae"), texts, n_spliced=2)
    assert out["rows"] == tokens - len(texts)
