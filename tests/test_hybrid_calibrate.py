"""Calibrated vector scales: chosen on training problems by the hybrid's own accuracy, ties kept at 1."""

import json

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
