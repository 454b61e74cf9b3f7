"""Experiment figures as plain Plotly specs (dicts), built from plain result dicts.

Every function returns ``{"data": [...], "layout": {...}}`` with a title and labelled axes (units
in the label), ready for :meth:`lens.dashboards.report.Page.figure`. No models, no plotly objects:
testable on synthetic dicts. Proportions are shown in percent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def layout(title: str, x: str, y: str, **extra) -> dict:
    """A layout with a title and axis titles; ``extra`` merges into it (``xaxis``/``yaxis`` dicts merge too)."""
    out = {"title": {"text": title}, "xaxis": {"title": {"text": x}}, "yaxis": {"title": {"text": y}}}
    for key in ("xaxis", "yaxis"):
        if key in extra:
            out[key].update(extra.pop(key))
    out.update(extra)
    return out


def _pct(v) -> float:
    v = float(v) if v is not None else float("nan")
    return 100.0 * v


def _est(e) -> tuple[float, float, float]:
    """(value, lo, hi) of an Estimate-like dict, or of a bare number (lo = hi = value)."""
    if isinstance(e, Mapping):
        v = e.get("value", float("nan"))
        return float(v), float(e.get("lo", v)), float(e.get("hi", v))
    v = float(e) if e is not None else float("nan")
    return v, v, v


def pass_at_k(curves: Mapping[str, Mapping], title: str = "pass@k with 95% bootstrap intervals",
              y: str = "pass@k (% of problems)") -> dict:
    """pass@k curves with shaded intervals: ``{model: {k: {value, lo, hi}}}`` (k as int or str)."""
    data = []
    all_ks: list[int] = []
    for i, (name, curve) in enumerate(curves.items()):
        ks = sorted(int(k) for k in curve)
        all_ks += ks
        est = [_est(curve[k] if k in curve else curve[str(k)]) for k in ks]
        v, lo, hi = (np.array([e[j] for e in est]) * 100 for j in range(3))
        color = COLORS[i % len(COLORS)]
        data.append({"type": "scatter", "x": ks + ks[::-1], "y": np.concatenate([hi, lo[::-1]]), "fill": "toself",
                     "mode": "lines", "fillcolor": _rgba(color, 0.15), "line": {"width": 0}, "hoverinfo": "skip",
                     "showlegend": False, "name": f"{name} 95% CI"})
        data.append({"type": "scatter", "mode": "lines+markers", "name": name, "x": ks, "y": v,
                     "line": {"color": color, "width": 2.5},
                     "customdata": np.stack([lo, hi], axis=1),
                     "hovertemplate": f"{name}<br>k=%{{x}}<br>pass@k=%{{y:.1f}}% "
                                      "[%{customdata[0]:.1f}, %{customdata[1]:.1f}]<extra></extra>"})
    ks = sorted(set(all_ks))
    return {"data": data, "layout": layout(
        title, "k (samples per problem, log scale)", y,
        xaxis={"type": "log", "tickvals": ks, "ticktext": [str(k) for k in ks]},
        yaxis={"range": [0, 102]}, legend={"x": 0.99, "xanchor": "right", "y": 0.02, "yanchor": "bottom"})}


def grouped_bars(groups: Mapping[str, Mapping[str, object]], title: str, y: str, x: str = "",
                 percent: bool = True) -> dict:
    """Grouped bars with error bars: ``{series: {category: Estimate-dict or number}}``."""
    data = []
    for i, (name, cats) in enumerate(groups.items()):
        names = list(cats)
        est = np.array([_est(cats[c]) for c in names], dtype=float).reshape(-1, 3) * (100 if percent else 1)
        bar = {"type": "bar", "name": name, "x": names, "y": est[:, 0], "marker": {"color": COLORS[i % len(COLORS)]},
               "hovertemplate": f"{name}<br>%{{x}}: %{{y:.3g}}<extra></extra>"}
        if np.any(est[:, 2] != est[:, 1]):
            bar["error_y"] = {"type": "data", "symmetric": False, "array": np.nan_to_num(est[:, 2] - est[:, 0]),
                              "arrayminus": np.nan_to_num(est[:, 0] - est[:, 1]), "color": "#444", "thickness": 1.2}
        data.append(bar)
    lay = layout(title, x, y, barmode="group")
    if percent:
        lay["yaxis"]["range"] = [0, 105]
    return {"data": data, "layout": lay}


def gap_vs_steered(runs: Mapping[str, Mapping], title: str = "Gap recovered vs tokens steered") -> dict:
    """One marker per hybrid run: x = % of generated tokens steered, y = % of the gap recovered (95% CI bars).

    runs: ``{name: {"gap_recovered": float, "gap_ci": [lo, hi], "fraction_steered": float}}``.
    """
    data = []
    for i, (name, r) in enumerate(runs.items()):
        g = _pct(r.get("gap_recovered"))
        lo, hi = (r.get("gap_ci") or [None, None])[:2]
        lo, hi = _pct(lo), _pct(hi)
        trace = {"type": "scatter", "mode": "markers", "name": name, "x": [_pct(r.get("fraction_steered"))],
                 "y": [g],
                 "marker": {"size": 13, "color": COLORS[i % len(COLORS)], "symbol": "diamond" if name in (
                     "none", "hybrid") else "circle"},
                 "hovertemplate": f"{name}<br>steered %{{x:.1f}}% of tokens<br>"
                                  "gap recovered %{y:.1f}%<extra></extra>"}
        if math.isfinite(lo) and math.isfinite(hi) and math.isfinite(g):
            trace["error_y"] = {"type": "data", "symmetric": False, "array": [max(hi - g, 0)],
                                "arrayminus": [max(g - lo, 0)], "color": COLORS[i % len(COLORS)]}
        data.append(trace)
    top = max([t["y"][0] for t in data if math.isfinite(t["y"][0])] + [100.0])
    return {"data": data, "layout": layout(title, "tokens steered (% of generated tokens)", "gap recovered (%)",
                                           yaxis={"range": [-5, top + 8]}, xaxis={"rangemode": "tozero"})}


def distributions(groups: Mapping[str, Sequence[float]], title: str, x: str, nbins: int = 30) -> dict:
    """Overlaid histograms (percent of each group) of several samples, pre-binned on shared edges."""
    vals = [np.asarray(list(v), dtype=float) for v in groups.values()]
    finite = np.concatenate([v[np.isfinite(v)] for v in vals]) if vals else np.array([])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1e-6
    edges = np.linspace(lo, hi, nbins + 1)
    mids, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    data = []
    for i, (name, v) in enumerate(zip(groups, vals, strict=True)):
        v = v[np.isfinite(v)]
        counts = np.histogram(v, edges)[0]
        pct = counts / max(v.size, 1) * 100
        mean = float(v.mean()) if v.size else float("nan")
        data.append({"type": "bar", "name": f"{name} (n={v.size}, mean {mean:.3f})", "x": mids, "y": pct,
                     "width": width, "opacity": 0.6, "marker": {"color": COLORS[i % len(COLORS)]},
                     "hovertemplate": f"{name}<br>%{{x:.3f}}: %{{y:.1f}}%<extra></extra>"})
    return {"data": data, "layout": layout(title, x, "share of the group (%)", barmode="overlay")}


def _layer(site: str) -> float:
    parts = [p for p in str(site).replace(" ", ".").split(".") if p.isdigit()]
    return float(parts[0]) if parts else float("nan")


def per_layer(rows: Sequence[Mapping], keys: Mapping[str, str], title: str, y: str,
              chance: float | None = None, percent: bool = False) -> dict:
    """Lines over layers: ``rows`` carry ``site`` (or ``layer``/``group``) and the fields named in ``keys``.

    keys: ``{field: legend name}``; ``chance`` draws a dashed reference line (e.g. AUROC 0.5).
    """
    layers = [r.get("layer", _layer(r.get("site", r.get("group", "")))) for r in rows]
    data = []
    for i, (k, name) in enumerate(keys.items()):
        ys = np.array([float(r.get(k, float("nan"))) for r in rows]) * (100 if percent else 1)
        data.append({"type": "scatter", "mode": "lines+markers", "name": name, "x": layers, "y": ys,
                     "line": {"color": COLORS[i % len(COLORS)], "width": 2.5, "dash": "solid" if i == 0 else "dot"}})
    lay = layout(title, "layer (residual stream after the block)", y, xaxis={"dtick": 1})
    if chance is not None and layers:
        finite = [x for x in layers if x == x]
        data.append({"type": "scatter", "mode": "lines", "name": f"chance ({chance:g})",
                     "x": [min(finite, default=0), max(finite, default=1)], "y": [chance, chance],
                     "line": {"color": "#999", "dash": "dash", "width": 1.5}, "hoverinfo": "skip"})
    return {"data": data, "layout": lay}


def bars(labels: Sequence[str], values: Sequence[float], title: str, x: str, y: str,
         horizontal: bool = False, color: str = COLORS[0], text: Sequence[str] | None = None) -> dict:
    """One bar series."""
    vals = np.asarray(list(values), dtype=float)
    trace = {"type": "bar", "marker": {"color": color}, "name": y}
    if horizontal:
        trace.update(y=list(labels), x=vals, orientation="h")
    else:
        trace.update(x=list(labels), y=vals)
    if text is not None:
        trace["text"] = list(text)
    lay = layout(title, x, y)
    if horizontal:
        lay["yaxis"]["autorange"] = "reversed"
    return {"data": [trace], "layout": lay}


def sweep(rows: Sequence[Mapping], x: str, y: str, group: str, title: str, xlabel: str, ylabel: str,
          percent: bool = True, dashed: Sequence[str] = ()) -> dict:
    """Lines of ``y`` against ``x`` for each value of ``group`` (e.g. accuracy vs alpha per feature)."""
    series: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r.get(x) is None or r.get(y) is None:
            continue
        series.setdefault(str(r.get(group)), []).append((float(r[x]), float(r[y])))
    data = []
    for i, (name, pts) in enumerate(series.items()):
        pts.sort()
        xs = [p[0] for p in pts]
        ys = np.array([p[1] for p in pts]) * (100 if percent else 1)
        data.append({"type": "scatter", "mode": "lines+markers", "name": name, "x": xs, "y": ys,
                     "line": {"color": COLORS[i % len(COLORS)], "dash": "dash" if name in dashed else "solid"}})
    return {"data": data, "layout": layout(title, xlabel, ylabel)}
