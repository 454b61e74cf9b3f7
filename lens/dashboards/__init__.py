"""Plotly dashboards: self-contained HTML reports (plotly.js embedded once) of experiments and SAE features.

- :class:`Report` / :class:`Page` (``report.py``): pages of figures, tables and token contexts -> one HTML file.
- ``figures.py``: experiment figures as plain Plotly specs from plain dicts.
- ``features.py``: per-feature data for many features at once (vectorised) and feature pages.
- ``experiments.py``: the pages of ``lens reproduce``'s report from its ``results.json``.
"""

from .experiments import build_report
from .features import dense_from_rows, feature_data, feature_page
from .report import Page, Report

__all__ = ["Page", "Report", "build_report", "dense_from_rows", "feature_data", "feature_page"]
