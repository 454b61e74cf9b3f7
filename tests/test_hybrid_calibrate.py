"""Calibrated vector scales: chosen on training problems by the hybrid's own accuracy, ties kept at 1."""

import json
from types import SimpleNamespace

import pytest
import torch

from lens.hybrid.calibrate import Calibration, _best, calibrate_scales
from lens.hybrid.config import HybridConfig
from lens.studies import organism_inputs as O
from tests.helpers import run_cli


def test_ties_keep_the_scale_nearest_one_then_the_smaller():
    assert _best({0.0: 0.5, 1.0: 0.5, 2.0: 0.5}) == 1.0
    assert _best({0.0: 0.5, 0.5: 0.5, 2.0: 0.4}) == 0.5
    assert _best({0.0: 0.5, 0.5: 0.25, 3.0: 0.75}) == 3.0


def test_apply_scales_each_vector():
    cal = Calibration(2.0, {"a": 0.0, "b": 0.5}, n=4, grid=(0.0, 0.5, 2.0))
    bias, cats = cal.apply(torch.ones(3), {"a": torch.ones(3), "b": torch.full((3,), 4.0)})
    assert torch.equal(bias, torch.full((3,), 2.0))
    assert torch.equal(cats["a"], torch.zeros(3)) and torch.equal(cats["b"], torch.full((3,), 2.0))


def test_dev_problems_are_disjoint_from_the_heldout_set():
    prompts, answers = O.dev_problems(200)
    held = set(O.heldout(10**6)[0])
    assert len(prompts) == 200 and not held & set(prompts)
    assert O.dev_problems(200) == (prompts, answers)


def test_refuses_an_empty_or_negative_grid():
    from lens.errors import LensError

    cfg = HybridConfig("blocks.1.hook_resid_post", {"a": torch.zeros(4)})
    for grid in ((), (-1.0,), (float("nan"),)):
        with pytest.raises(LensError, match="calibration grid"):
            calibrate_scales(None, None, ["p"], lambda i, t: True, cfg, grid=grid)


@pytest.mark.parametrize("grid, message", [("abc", "--calibration-grid"), ("1,-2", "non-negative"), ("", "give")])
def test_cli_refuses_a_bad_grid(capsys, monkeypatch, grid, message):
    code, out, err = run_cli(monkeypatch, capsys, ["hybrid", "--n", "2", "--calibrate", "2", "--calibration-grid",
                                                   grid])
    assert code != 0 and message in err and "Traceback" not in err


def test_calibration_on_the_organism_finds_that_the_bias_matters(capsys, monkeypatch):
    """On the first organism pair the base opens its thinking format only with the bias: a dev run without it
    scores lower, so the bias keeps scale 1; the category vectors change nothing there and keep scale 1."""
    code, out, err = run_cli(monkeypatch, capsys, ["hybrid", "--n", "4", "--calibrate", "12", "--calibration-grid",
                                                   "0,1", "--max-new-tokens", "60", "--json"])
    assert code == 0, err
    res = json.loads(out)
    cal = res["vectors"]["calibration"]
    assert cal["n"] == 12 and cal["grid"] == [0.0, 1.0]
    bias_scores = {t["scale"]: t["accuracy"] for t in cal["tried"] if t["vector"] == "bias"}
    assert bias_scores[0.0] < bias_scores[1.0] and cal["bias_scale"] == 1.0
    assert set(cal["category_scales"]) == set(res["vectors"]["categories"])
    for name, scale in cal["category_scales"].items():
        scores = {t["scale"]: t["accuracy"] for t in cal["tried"] if t["vector"] == name}
        assert scores[scale] == max(scores.values())
        assert scale == 1.0 or scores[scale] > scores[1.0]


def test_lens_hybrid_all_positions_runs_and_says_so(capsys, monkeypatch):
    code, out, err = run_cli(monkeypatch, capsys, ["hybrid", "--n", "3", "--max-new-tokens", "30", "--steer-positions",
                                                   "all", "--json"])
    assert code == 0, err
    res = json.loads(out)
    assert res["steer_positions"] == "all" and res["runs"]["none"]["fraction_steered"] > 0
    code, _, err = run_cli(monkeypatch, capsys, ["hybrid", "--steer-positions", "every"])
    assert code != 0 and "Traceback" not in err


def test_apply_takes_each_category_from_its_chosen_site():
    alt = {"blocks.2.hook_resid_post": (torch.full((3,), 5.0), {"a": torch.full((3,), 7.0), "b": torch.ones(3)})}
    cal = Calibration(2.0, {"a": 0.5, "b": 1.0}, n=4, grid=(0.5, 1.0, 2.0),
                      category_sites={"a": "blocks.2.hook_resid_post"})
    bias, cats = cal.apply(torch.ones(3), {"a": torch.ones(3), "b": torch.full((3,), 4.0)}, alt)
    assert torch.equal(cats["a"], torch.full((3,), 3.5)) and torch.equal(cats["b"], torch.full((3,), 4.0))
    assert torch.equal(cal.site_biases(alt)["blocks.2.hook_resid_post"], torch.full((3,), 10.0))
    assert Calibration(1.0, {"a": 1.0}, n=1, grid=(1.0,)).site_biases(alt) is None


def test_each_category_moves_to_the_site_and_scale_that_score_best(monkeypatch):
    """A fake hybrid that is right only when category a steers at layer 2 at scale 2 and b stays at its site:
    the search finds exactly that, tries every (site, scale) of each category, and keeps b's site on ties."""
    import lens.hybrid.calibrate as C

    site, other = "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"
    a1, a2, b1, b2 = (torch.full((2,), float(v)) for v in (1, 10, 3, 30))
    seen = []

    def fake(base, thinking, prompts, cfg, **kw):
        seen.append(cfg)
        where = cfg.category_sites or {}
        right = where.get("a") == other and torch.equal(cfg.categories["a"], a2 * 2) and "b" not in where
        assert where.get("a") != other or torch.equal(cfg.site_biases[other], torch.full((2,), 9.0))
        return SimpleNamespace(texts=["yes" if right else "no"] * len(prompts))

    monkeypatch.setattr(C, "hybrid_generate", fake)
    cfg = HybridConfig(site, {"a": a1, "b": b1}, bias=torch.ones(2))
    cal = calibrate_scales(None, None, ["p", "q"], lambda i, t: t == "yes", cfg, grid=(1.0, 2.0),
                           alternatives={other: (torch.full((2,), 9.0), {"a": a2, "b": b2})})
    assert cal.category_sites == {"a": other} and cal.category_scales == {"a": 2.0, "b": 1.0}
    a_tries = {(t["site"], t["scale"]) for t in cal.tried if t["vector"] == "a"}
    assert a_tries == {(site, 1.0), (site, 2.0), (other, 1.0), (other, 2.0)}
    assert {t["site"] for t in cal.tried if t["vector"] == "b"} == {site, other}
    with pytest.raises(Exception, match="must cover"):
        calibrate_scales(None, None, ["p"], lambda i, t: True, cfg, alternatives={other: (None, {"a": a2})})


def test_lens_hybrid_calibration_layers(capsys, monkeypatch):
    code, out, err = run_cli(monkeypatch, capsys, ["hybrid", "--n", "3", "--calibrate", "4", "--calibration-grid",
                                                   "1", "--calibration-layers", "2", "--max-new-tokens", "40",
                                                   "--json"])
    assert code == 0, err
    res = json.loads(out)
    cal = res["vectors"]["calibration"]
    assert {t["site"] for t in cal["tried"] if t["vector"] != "bias"} == {"blocks.1.hook_resid_post",
                                                                           "blocks.2.hook_resid_post"}
    assert res["category_sites"] == cal["category_sites"]
    for bad, message in ((["--calibration-layers", "2"], "--calibrate"),
                         (["--calibrate", "2", "--calibration-layers", "9"], "--calibration-layers"),
                         (["--calibrate", "2", "--calibration-layers", "x"], "--calibration-layers")):
        code, _, err = run_cli(monkeypatch, capsys, ["hybrid", "--n", "2", *bad])
        assert code != 0 and message in err and "Traceback" not in err


def test_lens_hybrid_force_thinking_opens_every_prompt_for_both_models(capsys, monkeypatch):
    """--force-thinking: the runs' prompts (and so both models' inputs) end with the think tag; the base run is
    the base in its thinking format. Refused on pairs other than the organism's."""
    import lens.studies.hybrid_organism as H
    from lens.organism import corpus as C

    seen = {}
    real = H.run_study

    def spy(base, thinking, prompts, *a, **kw):
        seen["prompts"] = list(prompts)
        return real(base, thinking, prompts, *a, **kw)

    monkeypatch.setattr(H, "run_study", spy)
    code, out, err = run_cli(monkeypatch, capsys, ["hybrid", "--n", "3", "--max-new-tokens", "30", "--force-thinking",
                                                   "--json"])
    assert code == 0, err
    res = json.loads(out)
    assert res["force_thinking"] is True
    assert len(seen["prompts"]) == 3 and all(p.endswith(C.THINK_OPEN) and p.count(C.THINK_OPEN) == 1
                                             for p in seen["prompts"])
    code, _, err = run_cli(monkeypatch, capsys, ["hybrid", "--base", "organism:base", "--thinking", "organism:thinking",
                                                 "--tasks", "gsm8k", "--force-thinking"])
    assert code != 0 and "--force-thinking" in err and "Traceback" not in err


def test_calibration_on_another_pair_uses_problems_apart_from_the_evaluated_and_traced(monkeypatch):
    """Other pairs calibrate on the task set's problems after the evaluated and trace ones, each model through
    its own prompt; with another layer offered, the evaluation runs what the calibration chose."""
    import lens.hybrid.calibrate as C
    from lens.errors import LensError
    from lens.evaluation.templates import model_prompts
    from lens.studies import hybrid_generic
    from lens.tiny import tiny_pair

    base, thinking = tiny_pair("qwen")
    qs = [f"What is {i} plus {i}?" for i in range(40)]
    prompts, t_prompts = [f"Q: {q}\nA:" for q in qs], model_prompts(thinking, qs)
    seen = {}
    real = C.calibrate_scales

    def spy(b, t, dev, is_correct, cfg, **kw):
        seen.update(dev=list(dev), t_dev=list(kw["thinking_prompts"]), sites=sorted(kw["alternatives"]))
        seen["graded"] = [is_correct(i, str(2 * (32 + i))) and not is_correct(i, "0") for i in range(len(dev))]
        return real(b, t, dev, is_correct, cfg, **kw)

    monkeypatch.setattr(C, "calibrate_scales", spy)
    answers = [str(2 * i) for i in range(40)]
    res = hybrid_generic.run(base, thinking, prompts, lambda i, t: t.strip() == answers[i], prompts[:4],
                             prompts[4:8], n=16, thinking_prompts=t_prompts, layer=1, n_categories=3,
                             max_new_tokens=10, calibrate=4, calibration_grid=(1.0, 2.0), calibration_layers=(0,),
                             ablations=("none",))
    assert seen["dev"] == prompts[32:36] and seen["t_dev"] == t_prompts[32:36]  # 0-15 evaluated, 16-31 traced
    assert seen["graded"] == [True] * 4  # graded against problems 32..35
    assert seen["sites"] == ["blocks.0.hook_resid_post"]
    cal = res["vectors"]["calibration"]
    assert cal["n"] == 4 and {t["site"] for t in cal["tried"] if t["vector"] != "bias"} == {
        "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}
    assert res["category_sites"] == cal["category_sites"]
    with pytest.raises(LensError, match="--calibrate 9 needs 9 problems after the 32"):
        hybrid_generic.run(base, thinking, prompts, lambda i, t: False, prompts[:4], prompts[4:8], n=16,
                           thinking_prompts=t_prompts, calibrate=9)
