"""Dashboards from synthetic dicts: one plotly.js copy, every figure div, valid Plotly specs, vectorised features."""

import json
import re

import numpy as np
import pytest
import torch

from lens.dashboards import Report, build_report, dense_from_rows, feature_data
from lens.dashboards.synthetic import synthetic_features, synthetic_results

FAKE_JS = "/* plotly.js stand-in */ window.Plotly = {newPlot: function () {}};"


def _payload(html: str) -> dict:
    m = re.search(r"<script>window\.LENS = (.*?);</script>", html, re.S)
    assert m, "no LENS payload in the page"
    return json.loads(m.group(1).replace("<\\/", "</").replace("NaN", "null"))


@pytest.fixture(scope="module")
def report():
    return build_report(synthetic_results(), synthetic_features(6))


def test_plotlyjs_embedded_once_and_every_figure_has_a_div(report):
    html = report.render()
    # the real bundle, once
    assert html.count("<script type=\"text/javascript\">") == 1
    assert html.count("plotly.js v") >= 1 and len(html) > 3_000_000
    marker = "Plotly=" if "Plotly=" in html else "plotly.js v"
    first = html.find(marker)
    assert html.find(marker, first + 10_000_000) == -1
    data = _payload(html)
    divs = re.findall(r'<div class="fig" id="([^"]+)"', html)
    assert sorted(divs) == sorted(data["figs"]) and len(divs) == report.n_figures()
    ctx = re.findall(r'<div class="ctx" id="([^"]+)"', html)
    assert sorted(ctx) == sorted(data["ctx"]) and len(ctx) == 6
    # every page is in the nav, ids are unique
    pages = re.findall(r'<section class="page" id="([^"]+)"', html)
    assert len(pages) == len(set(pages)) == 7 + 6  # overview, five findings (3: diff and rl), 6 features
    for p in pages:
        assert f'href="#{p}"' in html


def test_figures_are_valid_plotly_with_titles_and_axis_labels(report):
    import plotly.graph_objects as go

    data = _payload(report.render(plotlyjs=FAKE_JS))
    for fid, spec in data["figs"].items():
        fig = go.Figure({"data": spec["data"], "layout": spec["layout"]})  # validates every attribute
        assert fig.layout.title.text, f"{fid} has no title"
        assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text, f"{fid} lacks axis labels"
        assert len(fig.data) >= 1


def test_skipped_steps_say_why_and_render():
    res = synthetic_results()
    res["hybrid"] = {"status": "skipped", "reason": "organism-only: needs labelled traces"}
    res["feature"] = {"status": "skipped", "reason": "saes.search is not importable"}
    html = build_report(res).render(plotlyjs=FAKE_JS)
    assert "organism-only: needs labelled traces" in html and "saes.search is not importable" in html


def test_nan_and_script_tags_survive():
    r = Report("t</script><b>")
    r.page("p").figure({"data": [{"type": "scatter", "x": [1, 2], "y": [float("nan"), 1.0], "name": "</script>"}],
                        "layout": {"title": {"text": "x"}}})
    html = r.render(plotlyjs=FAKE_JS)
    assert html.count("</script>") == 3  # plotly, payload, page script: nothing injected
    assert "NaN" in html


def test_feature_data_matches_a_per_feature_loop():
    g = torch.Generator().manual_seed(1)
    n_seq, seq_len, n_feat, vocab = 10, 20, 5, 30
    ids = torch.randint(0, vocab, (n_seq, seq_len), generator=g)
    mask = torch.ones(n_seq, seq_len, dtype=torch.bool)
    mask[0, 15:] = False
    acts = torch.relu(torch.randn(n_seq, seq_len, n_feat, generator=g))
    acts[0, 15:, :] = 100.0  # padding must be ignored
    dec, wu = torch.randn(n_feat, 8, generator=g), torch.randn(8, vocab, generator=g)
    words = [f"t{i}" for i in range(vocab)]
    out = feature_data(acts, ids, mask, words, [7, 8, 9, 10, 11], decoder=dec, unembed=wu, n_bins=10, per_band=3,
                       window=(3, 2))
    assert [d["feature"] for d in out] == [7, 8, 9, 10, 11]
    for f, d in enumerate(out):
        a = acts[..., f][mask]
        active = a[a > 0]
        assert d["stats"]["max"] == pytest.approx(float(a.max()))
        assert d["stats"]["density"] == pytest.approx(active.numel() / a.numel())
        assert int(np.sum(d["hist"]["counts"])) == active.numel()
        ref = np.histogram(active.numpy(), bins=10, range=(0, float(a.max())))[0]
        assert np.abs(np.asarray(d["hist"]["counts"]) - ref).sum() <= 2  # float edge effects only
        top = d["contexts"][0]["rows"]
        assert [r["value"] for r in top] == pytest.approx(torch.sort(a, descending=True).values[:3].tolist())
        for band in d["contexts"]:
            for r in band["rows"]:
                assert len(r["tokens"]) == len(r["acts"]) <= 6
                assert r["acts"][r["center"]] == pytest.approx(r["value"])
        eff = dec[f] @ wu
        assert d["logits"]["boosted"]["tokens"][0] == words[int(eff.argmax())]
        assert d["logits"]["suppressed"]["tokens"][0] == words[int(eff.argmin())]


def test_dense_from_rows_roundtrip():
    vals = torch.arange(6.0).reshape(3, 2)
    dense = dense_from_rows(vals, torch.tensor([0, 1, 1]), torch.tensor([2, 0, 3]), 2, 4)
    assert dense.shape == (2, 4, 2) and dense[1, 3, 1] == 5 and dense[0, 0].sum() == 0


def test_build_is_deterministic():
    a = build_report(synthetic_results(), synthetic_features(3)).render(plotlyjs=FAKE_JS)
    b = build_report(synthetic_results(), synthetic_features(3)).render(plotlyjs=FAKE_JS)
    assert a == b


def test_write_folder(tmp_path):
    path = build_report(synthetic_results()).write(tmp_path / "rep")
    assert path.name == "index.html" and path.stat().st_size < 8_000_000
