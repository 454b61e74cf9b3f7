"""A report: pages of figures, tables and token contexts, rendered to ONE self-contained HTML file.

plotly.js is embedded once per report (about 4.8 MB, so the file works with no network); each
figure is a plain Plotly spec ``{"data": [...], "layout": {...}}`` stored in one JSON object and
drawn by ``Plotly.newPlot`` when its page is shown. Figure layouts share one template
(:data:`lens.dashboards.assets.TEMPLATE`) sent once. Open ``index.html#<page id>`` for one page or
``index.html#all`` for every page.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LensError
from . import assets

GENERATOR = "lens dashboard"


def is_lens_html(path: Path) -> bool:
    """Whether the HTML file at `path` was written by a lens Report (its generator tag)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return f'content="{GENERATOR}"'.encode() in head


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "page"


def clean(obj: Any) -> Any:
    """JSON-ready copy: numpy/torch arrays and scalars to lists/floats; floats rounded to 5 significant digits."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        if obj and isinstance(obj[0], str) and isinstance(obj[-1], str):
            return list(obj)  # token strings: kept as they are (no per-token Python work)
        return [clean(v) for v in obj]
    if hasattr(obj, "detach"):  # torch tensor
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "f":
            return _round(obj).tolist()
        return obj.tolist()
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return float(f"{obj:.5g}") if math.isfinite(obj) else obj
    return obj


def _round(a: np.ndarray, digits: int = 5) -> np.ndarray:
    """Round to ``digits`` significant digits (vectorised; keeps nan/inf)."""
    a = a.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(np.isfinite(a) & (a != 0), np.floor(np.log10(np.abs(a))), 0)
    scale = 10.0 ** (digits - 1 - mag)
    return np.where(np.isfinite(a), np.round(a * scale) / scale, a)


def table_html(rows: list[dict], caption: str = "", columns: list[str] | None = None) -> str:
    """An HTML table of dict rows (numbers right-aligned, floats to 4 significant digits)."""
    if not rows:
        return f'<p class="skip">{html.escape(caption)}: no rows</p>'
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            num = isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
            cells.append(f'<td class="num">{_fmt(v)}</td>' if num else f"<td>{html.escape(_fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f'<table class="lens">{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return "nan" if not math.isfinite(float(v)) else f"{float(v):.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return str(v)


@dataclass
class Page:
    """One page of a report: an id (URL hash), a title, a nav group and an ordered list of blocks."""

    id: str
    title: str
    group: str = "Experiments"
    lead: str = ""
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def figure(self, spec: dict, height: int = 420) -> Page:
        """Add a Plotly figure given as a plain spec ``{"data": [...], "layout": {...}}``."""
        if not isinstance(spec, dict) or "data" not in spec:
            raise LensError("a figure is a dict with 'data' (a list of traces) and optionally 'layout'")
        self.blocks.append(("figure", {"data": spec["data"], "layout": spec.get("layout", {}), "height": height}))
        return self

    def html(self, fragment: str) -> Page:
        """Add raw HTML (already escaped by the caller)."""
        self.blocks.append(("html", fragment))
        return self

    def note(self, text: str, kind: str = "note") -> Page:
        """Add a highlighted paragraph (``kind`` ``note`` or ``skip``)."""
        self.blocks.append(("html", f'<p class="{kind}">{html.escape(text)}</p>'))
        return self

    def table(self, rows: list[dict], caption: str = "", columns: list[str] | None = None) -> Page:
        self.blocks.append(("html", table_html(rows, caption, columns)))
        return self

    def contexts(self, data: dict) -> Page:
        """Add token contexts shaded by activation: ``{"max": float, "bands": [{"label", "rows": [...]}]}``.

        Each row is ``{"tokens": [str], "acts": [float], "center": int, "value": float}``; the browser
        draws the spans, so building a report never loops over tokens in Python.
        """
        self.blocks.append(("contexts", data))
        return self


@dataclass
class Report:
    """Pages plus a title and metadata; :meth:`render` gives the HTML, :meth:`write` a file."""

    title: str = "lens report"
    meta: dict = field(default_factory=dict)
    pages: list[Page] = field(default_factory=list)

    def page(self, title: str, group: str = "Experiments", lead: str = "", id: str | None = None) -> Page:
        """Create, append and return a page (ids are made unique)."""
        pid = id or _slug(title)
        taken = {p.id for p in self.pages}
        base, i = pid, 2
        while pid in taken or pid == "all":
            pid, i = f"{base}-{i}", i + 1
        p = Page(pid, title, group, lead)
        self.pages.append(p)
        return p

    def n_figures(self) -> int:
        return sum(kind == "figure" for p in self.pages for kind, _ in p.blocks)

    def render(self, plotlyjs: str | None = None) -> str:
        """The full HTML document (plotly.js inlined once unless ``plotlyjs`` is given)."""
        if plotlyjs is None:
            from plotly.offline import get_plotlyjs

            plotlyjs = get_plotlyjs()
        figs: dict[str, Any] = {}
        ctxs: dict[str, Any] = {}
        sections = []
        for p in self.pages:
            parts = [f'<section class="page" id="{html.escape(p.id)}">', f"<h2>{html.escape(p.title)}</h2>"]
            if p.lead:
                parts.append(f'<p class="lead">{html.escape(p.lead)}</p>')
            for i, (kind, block) in enumerate(p.blocks):
                div_id = f"{p.id}--{i}"
                if kind == "figure":
                    figs[div_id] = block
                    style = f'style="height:{block["height"]}px"'
                    parts.append(f'<div class="fig" id="{html.escape(div_id)}" {style}></div>')
                elif kind == "contexts":
                    ctxs[div_id] = block
                    parts.append(f'<div class="ctx" id="{html.escape(div_id)}"></div>')
                else:
                    parts.append(block)
            parts.append("</section>")
            sections.append("\n".join(parts))
        nav = [f"<h1>{html.escape(self.title)}</h1>"]
        if self.meta:
            nav.append('<div class="meta">' + "<br>".join(
                f"{html.escape(str(k))}: {html.escape(_fmt(v))}" for k, v in self.meta.items()) + "</div>")
        groups: dict[str, list[Page]] = {}
        for p in self.pages:
            groups.setdefault(p.group, []).append(p)
        for g, pages in groups.items():
            nav.append(f"<h2>{html.escape(g)}</h2>")
            nav += [f'<a href="#{html.escape(p.id)}">{html.escape(p.title)}</a>' for p in pages]
        nav.append('<h2>View</h2><a href="#all">all pages</a>')
        data = {"figs": clean(figs), "ctx": clean(ctxs), "template": assets.TEMPLATE}
        payload = json.dumps(data, separators=(",", ":"), allow_nan=True).replace("</", "<\\/")
        return "\n".join([
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f'<meta name="generator" content="{GENERATOR}">',
            f"<title>{html.escape(self.title)}</title>",
            f"<style>{assets.CSS}</style>",
            f'<script type="text/javascript">{plotlyjs}</script>',
            "</head><body>",
            f'<nav id="lens-nav">{"".join(nav)}</nav>',
            '<main id="lens-main">',
            *sections,
            '<pre id="lens-errors"></pre>',
            "</main>",
            f"<script>window.LENS = {payload};</script>",
            f"<script>{assets.JS}</script>",
            "</body></html>",
        ])

    def write(self, path: str | Path) -> Path:
        """Write the HTML to ``path`` (a file, or a folder that gets ``index.html``) atomically; returns the file.

        An existing file there is replaced only when lens wrote it (a user's own HTML is refused).
        """
        from ..artifacts import write_text

        path = Path(path)
        if path.suffix.lower() != ".html":
            if path.exists() and not path.is_dir():
                raise LensError(f"{path} exists and is not a folder; choose another output for the dashboard")
            path = path / "index.html"
        if path.is_dir() or (path.exists() and not is_lens_html(path)):
            raise LensError(f"{path} exists and was not written by lens; choose another output for the dashboard "
                            "(lens never replaces a file it did not write)")
        write_text(path, self.render())  # atomic: a reader never sees half a report
        return path
