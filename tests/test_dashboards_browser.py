"""The report in a real headless Chromium (Debian's `chromium`): no JS errors, every plot drawn, screenshots not blank.

Skipped when /usr/bin/chromium is absent (CI installs it with .ci/install_chromium.sh).
Screenshots are kept in $LENS_SCREENSHOTS when set (to look at them), else in pytest's tmp dir.
"""

import os
import re
import subprocess
import zlib
from pathlib import Path

import pytest

from lens.dashboards import build_report
from lens.dashboards.synthetic import synthetic_features, synthetic_results

CHROMIUM = os.environ.get("LENS_CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"{CHROMIUM} not installed (apt-get install -y chromium, or .ci/install_chromium.sh)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--hide-scrollbars", "--virtual-time-budget=8000"]
MAX_BYTES = 8_000_000  # plotly.js is ~4.8 MB of it


def chromium(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{abs(hash((url, extra))) % 10**8}"
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def console_errors(stderr: str) -> list[str]:
    """Console messages of the page that report errors (uncaught exceptions, failed loads)."""
    lines = [ln for ln in stderr.splitlines() if "CONSOLE" in ln]
    return [ln for ln in lines if re.search(r"Uncaught|Error|error", ln)]


def png_stats(path: Path) -> tuple[int, int, float]:
    """(width, height, spread): with Pillow, the pixel standard deviation; else the deflate ratio of the image data."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    try:
        from PIL import Image, ImageStat

        img = Image.open(path).convert("L")
        return width, height, float(ImageStat.Stat(img).stddev[0])
    except ImportError:
        pos, idat = 8, b""
        while pos < len(data):
            n = int.from_bytes(data[pos : pos + 4], "big")
            if data[pos + 4 : pos + 8] == b"IDAT":
                idat += data[pos + 8 : pos + 8 + n]
            pos += 12 + n
        raw = zlib.decompress(idat)
        return width, height, len(idat) / len(raw) * 1000  # per-mille: ~0 for a blank page


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    rep = build_report(synthetic_results(), synthetic_features(4))
    path = rep.write(out)
    return path, rep


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    d = os.environ.get("LENS_SCREENSHOTS")
    if d:
        Path(d).mkdir(parents=True, exist_ok=True)
        return Path(d)
    return tmp_path_factory.mktemp("shots")


def test_all_pages_render_every_plot_without_js_errors(page, tmp_path):
    path, rep = page
    assert path.stat().st_size < MAX_BYTES
    res = chromium(path.as_uri() + "#all", tmp_path, "--dump-dom")
    dom = res.stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body and 'data-ready="1"' in body.group(0), f"page script did not finish; stderr: {res.stderr[-2000:]}"
    assert "data-js-errors" not in body.group(0), re.search(r'<pre id="lens-errors">(.*?)</pre>', dom, re.S).group(1)
    assert console_errors(res.stderr) == []
    n_figs = rep.n_figures()
    n_ctx = sum(kind == "contexts" for p in rep.pages for kind, _ in p.blocks)
    assert dom.count('data-rendered="1"') == n_figs + n_ctx
    assert dom.count('class="main-svg"') >= n_figs  # plotly drew an SVG in every figure
    assert len(re.findall(r'class="trace ', dom)) >= n_figs  # and at least one trace in each
    assert dom.count('class="tok') > 50  # token contexts were drawn


def test_each_page_screenshot_is_not_blank(page, shots, tmp_path):
    path, rep = page
    blank = tmp_path / "blank.html"
    blank.write_text("<html><body style='background:#fafafa'></body></html>")
    chromium(blank.as_uri(), tmp_path, f"--screenshot={tmp_path / 'blank.png'}", "--window-size=1200,2000")
    _, _, blank_spread = png_stats(tmp_path / "blank.png")
    wanted = [p.id for p in rep.pages if p.group != "Features"] + [p.id for p in rep.pages if p.group == "Features"][:1]
    for pid in wanted:
        shot = shots / f"{pid}.png"
        res = chromium(f"{path.as_uri()}#{pid}", tmp_path, f"--screenshot={shot}", "--window-size=1200,2000")
        assert shot.exists(), f"no screenshot of {pid}: {res.stderr[-1500:]}"
        assert console_errors(res.stderr) == [], pid
        w, h, spread = png_stats(shot)
        assert (w, h) == (1200, 2000)
        assert spread > 3 * blank_spread + 1, f"screenshot of {pid} looks blank ({spread:.2f} vs {blank_spread:.2f})"


@pytest.mark.skipif(not os.environ.get("LENS_REPORT"), reason="set LENS_REPORT=<folder with index.html> to check "
                                                                 "a real lens reproduce report")
def test_real_report_renders(tmp_path):
    path = Path(os.environ["LENS_REPORT"]) / "index.html"
    assert path.stat().st_size < MAX_BYTES
    html = path.read_text()
    n_figs = html.count('<div class="fig"')
    res = chromium(path.as_uri() + "#all", tmp_path, "--dump-dom")
    body = re.search(r"<body[^>]*>", res.stdout)
    assert body and 'data-ready="1"' in body.group(0) and "data-js-errors" not in body.group(0)
    assert console_errors(res.stderr) == []
    assert res.stdout.count('class="main-svg"') >= n_figs > 0
