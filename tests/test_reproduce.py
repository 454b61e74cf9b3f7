"""`lens reproduce` wiring: a tiny run writes the three files, same seed -> same numbers, tables, CLI."""

import json

import pytest

from lens.studies.reproduce import STEPS, Sizes, markdown, reproduce, tables

TINY = dict(n=4, samples=4, hybrid_n=4, cot_n=3, k=3, feature_n=4, n_contrast=8, max_new_tokens=12, batch_size=16)


def _numbers(res: dict) -> dict:
    return {k: v for k, v in res.items() if k != "meta"}


@pytest.fixture(scope="module")
def tiny_pair():
    from lens.tiny import tiny_model

    return tiny_model("llama", seed=0), tiny_model("llama", seed=1)


def test_tiny_run_writes_report_and_is_deterministic(tiny_pair, tmp_path):
    base, thinking = tiny_pair
    steps = ("sampling", "cot", "diff")
    a = reproduce(tmp_path / "a", base=base, thinking=thinking, sizes=Sizes(**TINY), steps=steps, progress=False)
    b = reproduce(tmp_path / "b", base=base, thinking=thinking, sizes=Sizes(**TINY), steps=steps, progress=False)
    for name in steps:
        assert a[name]["status"] == "ok", a[name]
    assert a["hybrid"]["status"] == a["feature"]["status"] == "skipped"
    assert json.dumps(_numbers(a), sort_keys=True, default=str) == json.dumps(_numbers(b), sort_keys=True, default=str)
    for f in ("index.html", "results.md", "results.json"):
        assert (tmp_path / "a" / f).stat().st_size > 0
    html = (tmp_path / "a" / "index.html").read_text()
    assert html.count("<script type=\"text/javascript\">") == 1  # plotly.js once
    assert 'id="sampling--0"' in html and "not selected (--steps)" in html
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["sampling"]["pass_at_k"]["base"]["1"] == a["sampling"]["pass_at_k"]["base"]["1"]
    md = (tmp_path / "a" / "results.md").read_text()
    for t in ("1. base models", "2. hybrid", "3. model-pair diff", "4. CoT-decoding", "5. SAE feature"):
        assert f"## {t}" in md
    assert "61.4" in md and "32.7" in md  # paper numbers next to ours


def test_real_task_sets_run_the_unsupervised_hybrid_and_train_an_sae_without_one(tiny_pair, tmp_path, monkeypatch):
    base, thinking = tiny_pair
    rows = tmp_path / "t.jsonl"
    rows.write_text("\n".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": str(2 * i)})
                              for i in range(40)))
    sizes = Sizes(**{**TINY, "hybrid_n": 16, "max_new_tokens": 16, "sae_texts": 12, "sae_rows": 1024,
                     "read_layer": 0,  # the taxonomy read apart from the steer layer (the middle one)
                     "hybrid_vectors_dir": str(tmp_path / "vec")})
    monkeypatch.setenv("LENS_CACHE", str(tmp_path / "cache"))
    res = reproduce(tmp_path / "r", base=base, thinking=thinking, tasks=str(rows), sizes=sizes,
                    steps=("hybrid", "feature", "diff"), progress=False)
    hyb = res["hybrid"]
    assert hyb["status"] == "ok", hyb.get("reason")
    assert hyb["read_site"] == "blocks.0.hook_resid_post" != hyb["site"]
    assert hyb["settings"]["from"] == {"steer_layer": "default", "read_layer": "given", "categories": "default"}
    assert hyb["prompt_templates"]["base"] == "user_assistant" != res["meta"]["pair"]["prompt_templates"]["base"]
    assert hyb["n"] == 16 and set(hyb["runs"]) == {"none", "bias_only", "random_category", "random_vector",
                                                    "random_guardrail", "no_guardrail", "random_vector_per_step",
                                                    "unsteered_allowed", "live_only"}
    vec = hyb["vectors"]
    assert vec["selector"] == "taxonomy" and vec["n_traces"] == 16 and "disjoint" in vec["trace_prompts"]
    assert len(vec["categories"]) >= 2 and set(vec["taxonomy"]["top_sentences"]) == set(vec["categories"])
    assert 0.0 <= hyb["hybrid"]["fraction_steered"] == hyb["hybrid"]["fraction_gated"] <= 1.0  # mode paper
    lens_mode = hyb["runs"]["unsteered_allowed"]
    assert 0.0 <= lens_mode["fraction_steered"] <= lens_mode["fraction_gated"] <= 1.0
    feat = res["feature"]  # no --sae: a small SAE trained on the base's captures of the task prompts
    assert feat["status"] == "ok", feat.get("reason")
    src = feat["sae_source"]
    assert src["kind"] == "trained" and src["layer"] == base.n_layers // 2 and not src["cached"]
    assert src["texts"]["problems"] == 12 and src["texts"]["texts"] == 36 and src["texts"]["tokens"] > 36
    assert src["config"]["k"] == sizes.sae_k and feat["sae"]["d_sae"] == sizes.sae_expansion * base.d_model
    assert feat["sae"]["evals"] and len(feat["ranking"]) > 0 and feat["steer_check"]
    assert res["diff"]["status"] == "ok" and len(res["diff"]["separability"]) == base.n_layers
    assert vec["vectors_folder"] == "saved" and (tmp_path / "vec" / "vectors.json").is_file()
    again = reproduce(tmp_path / "r2", base=base, thinking=thinking, tasks=str(rows), sizes=sizes, steps=("hybrid",),
                      progress=False)["hybrid"]  # the kept vectors are loaded, and the hybrid runs as before
    assert again["vectors"]["vectors_folder"] == "loaded"
    same = [json.dumps(x[k], sort_keys=True) for x in (again, hyb) for k in ("hybrid", "runs")]  # NaN gaps as text
    assert same[:2] == same[2:]


def test_hybrid_calibration_runs_on_the_problems_after_the_evaluated_and_trace_ones(tiny_pair, tmp_path,
                                                                                     monkeypatch):
    """--hybrid-calibrate N: the vectors' scales (and other steer layers) are chosen on the N task-set problems after
    the evaluated and the trace ones, and the report records every setting tried."""
    import lens.studies.hybrid_generic as G

    base, thinking = tiny_pair
    rows = tmp_path / "t.jsonl"
    rows.write_text("\n".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": str(2 * i)})
                              for i in range(40)))
    seen = []
    real = G.calibrate_vectors

    def spy(base_, thinking_, dev, *a, **kw):
        seen.append(list(dev))
        return real(base_, thinking_, dev, *a, **kw)

    monkeypatch.setattr(G, "calibrate_vectors", spy)
    import lens.evaluation.tasks as T

    reads, load = [], T.load_tasks
    monkeypatch.setattr(T, "load_tasks", lambda *a, **kw: reads.append(a) or load(*a, **kw))
    sizes = Sizes(**{**TINY, "hybrid_n": 16, "max_new_tokens": 16, "hybrid_calibrate": 3,
                     "hybrid_calibration_grid": (0.0, 1.0), "hybrid_calibration_layers": (1,)})
    res = reproduce(tmp_path / "r", base=base, thinking=thinking, tasks=str(rows), sizes=sizes, steps=("hybrid",),
                    progress=False)
    hyb = res["hybrid"]
    assert hyb["status"] == "ok", hyb.get("reason")
    assert seen == [[f"User: What is {i} plus {i}?\nAssistant:" for i in (32, 33, 34)]]  # 0-15 evaluated, 16-31 traces
    cal = hyb["vectors"]["calibration"]
    assert cal["n"] == 3 and cal["grid"] == [0.0, 1.0]
    tried = {(t["vector"], t["site"], t["scale"]) for t in cal["tried"]}
    assert ("bias", hyb["site"], 0.0) in tried and ("c0", "blocks.1.hook_resid_post", 1.0) in tried
    assert res["meta"]["sizes"]["hybrid_calibrate"] == 3
    assert len(reads) == 1  # the hybrid's own prompts ("User: ...") come from the problems read once


def test_sampling_preset_and_both_reflection_detectors_are_reported(tiny_pair, tmp_path):
    base, thinking = tiny_pair
    rows = tmp_path / "t.jsonl"
    rows.write_text("\n".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": str(2 * i)})
                              for i in range(8)))
    sizes = Sizes(**TINY).use_sampling("yue")
    res = reproduce(tmp_path / "y", base=base, thinking=thinking, tasks=str(rows), sizes=sizes,
                    steps=("sampling", "cot"), progress=False)
    st = res["sampling"]
    assert st["status"] == "ok" and (st["temperature"], st["top_p"]) == (0.6, 0.95)
    assert st["sampling_preset"]["name"] == "yue" and st["sampling_preset"]["matches"]
    assert res["meta"]["sizes"]["sampling"] == "yue"
    assert st["reflection_detector"] == "oat_zero" and set(st["reflection"]) == {"oat_zero", "words"}
    assert st["reflection"]["oat_zero"]["detector"]["match"] == "substring"
    assert st["reflection"]["words"]["detector"]["match"] == "word"
    for det in ("oat_zero", "words"):
        q = st["reflection"][det]["models"]["base"]["questions"]
        assert q["questions"] == TINY["n"] and q["samples"] == TINY["n"] * TINY["samples"]
    assert st["reflection"]["oat_zero"]["models"]["base"]["reflection_rate"] == st["behaviour"]["base"][
        "reflection_rate"]
    rows = [r["metric"] for r in res["tables"][0]["rows"]]
    assert any(r.startswith("base, oat_zero:") for r in rows) and any(r.startswith("base, words:") for r in rows)
    assert "0.6 / 0.95 (yue)" in (tmp_path / "y" / "results.md").read_text()
    assert res["cot"]["status"] == "ok" and res["cot"]["answer_prompt"] == "\nSo the answer is"


def test_tables_show_errors_and_skips():
    res = {"sampling": {"status": "error", "reason": "boom"}, "hybrid": {"status": "skipped", "reason": "why"}}
    ts = tables(res)
    assert [t["title"][0] for t in ts] == ["1", "2", "3", "3", "4", "5"]  # 3: the model diff and the RL runs
    assert ts[0]["rows"][0]["this run"] == "boom" and ts[1]["rows"][0]["this run"] == "why"
    assert "| error | boom | - |" in markdown({"tables": ts})


def test_unknown_step_is_refused(tmp_path):
    from lens.errors import LensError

    with pytest.raises(LensError, match="unknown steps"):
        reproduce(tmp_path, steps=("sampling", "nope"), progress=False)


def test_cli_help_lists_sizes():
    import typer
    from typer.testing import CliRunner

    from lens.cli.reproduce_cmd import reproduce_cmd

    app = typer.Typer()
    app.command("reproduce")(reproduce_cmd)
    app.command("other")(lambda: None)
    out = CliRunner().invoke(app, ["reproduce", "--help"]).output
    for flag in ("--out", "--base", "--thinking", "--tasks", "--n", "--samples", "--json", "--steps", "--sae",
                 "--top-p", "--sampling"):
        assert flag in out
    assert set(STEPS) == {"sampling", "hybrid", "cot", "feature", "diff", "rl"}


def test_organism_smoke(tmp_path):
    """All five steps on the bundled organism at small sizes (needs lens/organism/models/).

    About 15 s once the organism SAE is cached; a fresh machine trains it first (about 20 s more).
    """
    from lens.organism import bundled_path

    if not (bundled_path("base") / "config.json").exists():
        pytest.skip("the bundled organism is not built yet (lens organism train)")
    sizes = Sizes(n=12, samples=4, hybrid_n=12, cot_n=8, k=4, feature_n=8, n_contrast=32, top_features=1,
                  n_random=1, feature_pages=2, rl_steps=6, rl_n=8, rl_pass_k=4, rl_experiments=("one_shot", "format"))
    res = reproduce(tmp_path, sizes=sizes, progress=False)
    for name in STEPS:
        assert res[name]["status"] in ("ok", "skipped"), (name, res[name].get("reason"))
    assert res["sampling"]["status"] == res["cot"]["status"] == res["diff"]["status"] == res["rl"]["status"] == "ok"
    rl = res["rl"]["models"]
    assert set(rl) == {"base", "control"} and set(rl["base"]["runs"]) == {"one_shot", "format"}
    assert [c["step"] for c in rl["base"]["runs"]["one_shot"]["curve"]] == [0, 2, 4, 6]
    assert set(rl["control"]["pass_at_k"]["after"]) == {"1", "2", "4"} and res["rl"]["targets"]
    for name in ("base", "control"):  # where each run moved its start model, per layer
        assert set(rl[name]["diffs"]) == {"one_shot", "format"}
        for d in rl[name]["diffs"].values():
            shift = d["activations"]
            assert len(shift) == 4 and all(-1 <= a["cosine_with_direction"] <= 1 for a in shift)
    assert "RL with verifiable" in (tmp_path / "index.html").read_text()
    assert any("MATH500 36.0" in p.read_text() for p in tmp_path.rglob("*.html"))  # the RL page's papers' numbers
    if res["hybrid"]["status"] == "ok":  # the organism's known answer: the hybrid closes most of the gap
        assert res["hybrid"]["hybrid"]["gap_recovered"] > 0.5
        assert res["hybrid"]["runs"]["random_vector_per_step"]["gap_recovered"] < 0.5  # nothing without the bias


@pytest.mark.parametrize("args, message", [(["--organism", "nope"], "the bundled pairs are sums, verifier"),
                                           (["--organism", "verifier", "--base", "organism:control"],
                                            "drop --base/--thinking"),
                                           (["--tasks", "gsm8k", "--hybrid-force-thinking"],
                                            "--hybrid-force-thinking runs on the bundled organism pairs only")])
def test_organism_option_is_checked(capsys, monkeypatch, tmp_path, args, message):
    from tests.helpers import run_cli

    code, _, err = run_cli(monkeypatch, capsys, ["reproduce", "--out", tmp_path / "r", *args])
    assert code != 0 and message in err and "Traceback" not in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize("extra, vectors, forced", [([], "optimised", True),
                                                    (["--hybrid-vectors", "means", "--no-hybrid-force-thinking"],
                                                     "means", False)])
def test_verifier_pairs_run_the_hybrid_with_optimised_vectors_inside_forced_thinking(capsys, monkeypatch, tmp_path,
                                                                                      extra, vectors, forced):
    """--organism verifier-rl: the hybrid step defaults to optimised vectors and forced thinking (the setting in
    which the pair's hybrid closes the gap, docs/organism.md); both can be turned back."""
    import lens.studies.reproduce as R
    from lens.errors import LensError
    from tests.helpers import run_cli

    seen = {}

    def fake(out, **kw):
        seen.update(kw)
        raise LensError("stopped by the test")

    monkeypatch.setattr(R, "reproduce", fake)
    code, _, err = run_cli(monkeypatch, capsys, ["reproduce", "--out", tmp_path / "r", "--organism", "verifier-rl",
                                                 "--steps", "hybrid", *extra])
    assert code != 0 and "stopped by the test" in err
    assert seen["base"].spec == "organism:verifier-base" and seen["thinking"].spec == "organism:verifier-thinking-rl"
    assert seen["sizes"].hybrid_vectors == vectors and seen["sizes"].hybrid_force_thinking is forced
    assert seen["sizes"].max_new_tokens == 220
