"""Static pieces of a report page: CSS, the page script, and the shared Plotly layout template.

Kept out of ``report.py`` so the page logic reads on its own. The script renders figures and token
contexts lazily (only on the page that is shown), so a report with hundreds of feature pages opens
quickly; ``#all`` shows every page at once (used by the headless-browser test).
"""

from __future__ import annotations

#: Plotly layout defaults shared by every figure (sent once per report, not once per figure).
TEMPLATE: dict = {
    "layout": {
        "font": {"family": "Helvetica, Arial, sans-serif", "size": 13, "color": "#222"},
        "title": {"x": 0.02, "xanchor": "left", "font": {"size": 16}},
        "colorway": ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"],
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "margin": {"l": 70, "r": 30, "t": 60, "b": 60},
        "xaxis": {"showgrid": True, "gridcolor": "#e5e5e5", "zeroline": False, "linecolor": "#999",
                  "showline": True, "ticks": "outside", "automargin": True},
        "yaxis": {"showgrid": True, "gridcolor": "#e5e5e5", "zeroline": False, "linecolor": "#999",
                  "showline": True, "ticks": "outside", "automargin": True},
        "legend": {"bgcolor": "rgba(255,255,255,0.8)", "bordercolor": "#ccc", "borderwidth": 1},
        "hoverlabel": {"namelength": -1},
    }
}

CSS = """
* { box-sizing: border-box; }
body { margin: 0; font-family: Helvetica, Arial, sans-serif; color: #222; background: #fafafa; }
#lens-nav { position: fixed; top: 0; left: 0; bottom: 0; width: 250px; overflow-y: auto; background: #20262e;
  color: #ddd; padding: 14px 10px; font-size: 14px; }
#lens-nav h1 { font-size: 16px; color: #fff; margin: 0 0 6px 4px; }
#lens-nav .meta { font-size: 11px; color: #9aa; margin: 0 4px 10px 4px; word-break: break-all; }
#lens-nav h2 { font-size: 11px; text-transform: uppercase; letter-spacing: .08em; color: #8fa3b8;
  margin: 14px 4px 4px 4px; }
#lens-nav a { display: block; color: #ddd; text-decoration: none; padding: 4px 6px; border-radius: 4px; }
#lens-nav a:hover { background: #2f3944; }
#lens-nav a.active { background: #3b6ea5; color: #fff; }
#lens-main { margin-left: 250px; padding: 18px 28px 40px 28px; max-width: 1250px; }
section.page > h2 { margin: 4px 0 4px 0; font-size: 22px; }
section.page { margin-bottom: 30px; }
p.lead { color: #555; margin: 0 0 14px 0; max-width: 900px; line-height: 1.4; }
.fig { background: #fff; border: 1px solid #e2e2e2; border-radius: 6px; margin: 10px 0 16px 0; min-height: 120px; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 8px 12px; margin: 10px 0; max-width: 900px; }
.skip { background: #f4f4f4; border-left: 4px solid #999; padding: 8px 12px; margin: 10px 0; color: #555; }
table.lens { border-collapse: collapse; margin: 8px 0 18px 0; background: #fff; font-size: 13px; }
table.lens caption { text-align: left; font-weight: bold; padding: 4px 0; }
table.lens th, table.lens td { border: 1px solid #ddd; padding: 4px 9px; text-align: left; vertical-align: top; }
table.lens th { background: #f0f3f6; }
table.lens td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ctx-band { margin: 8px 0 12px 0; }
.ctx-band h4 { margin: 6px 0 4px 0; font-size: 13px; color: #444; }
.ctx-row { font-family: Menlo, Consolas, monospace; font-size: 13px; background: #fff; border: 1px solid #eee;
  padding: 3px 6px; margin: 2px 0; white-space: pre; overflow-x: auto; }
.ctx-row .tok { padding: 1px 0; border-radius: 2px; }
.ctx-row .tok.center { outline: 1px solid #333; }
.ctx-row .val { color: #888; font-size: 11px; margin-right: 10px; display: inline-block; width: 60px; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
#lens-errors { display: none; }
"""

# The page script. window.LENS = {figs: {div id: {data, layout, height}}, ctx: {div id: {...}}, template: {...}}.
JS = r"""
(function () {
  var L = window.LENS, errors = [];
  function noteError(msg) {
    errors.push(String(msg));
    document.body.setAttribute('data-js-errors', String(errors.length));
    var box = document.getElementById('lens-errors');
    if (box) { box.textContent = errors.join('\n'); }
  }
  window.addEventListener('error', function (e) { noteError(e.message || e); });
  window.addEventListener('unhandledrejection', function (e) { noteError(e.reason || 'unhandled rejection'); });
  var CFG = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ['select2d', 'lasso2d']};
  function renderFig(el) {
    if (el.getAttribute('data-rendered')) { return; }
    var f = L.figs[el.id];
    var layout = Object.assign({}, f.layout, {template: L.template, height: f.height || 420});
    try {
      var p = Plotly.newPlot(el, f.data, layout, CFG);
      el.setAttribute('data-rendered', '1');
      if (p && p.catch) { p.catch(function (e) { noteError(el.id + ': ' + e); }); }
    } catch (e) { noteError(el.id + ': ' + e); }
  }
  function shade(v, max) {
    if (!(max > 0) || !(v > 0)) { return 'transparent'; }
    var a = Math.min(1, v / max);
    return 'rgba(230, 85, 13, ' + (0.08 + 0.85 * a).toFixed(3) + ')';
  }
  function renderCtx(el) {
    if (el.getAttribute('data-rendered')) { return; }
    var c = L.ctx[el.id];
    c.bands.forEach(function (band) {
      var box = document.createElement('div'); box.className = 'ctx-band';
      var h = document.createElement('h4'); h.textContent = band.label; box.appendChild(h);
      if (!band.rows.length) {
        var e = document.createElement('div'); e.className = 'ctx-row'; e.textContent = '(no activations in this band)';
        box.appendChild(e);
      }
      band.rows.forEach(function (row) {
        var line = document.createElement('div'); line.className = 'ctx-row';
        var v = document.createElement('span'); v.className = 'val'; v.textContent = row.value.toFixed(3);
        line.appendChild(v);
        row.tokens.forEach(function (t, i) {
          var s = document.createElement('span'); s.className = 'tok' + (i === row.center ? ' center' : '');
          s.textContent = t.replace(/\n/g, '\u23ce');
          s.style.background = shade(row.acts[i], c.max);
          s.title = JSON.stringify(t) + '  activation ' + row.acts[i].toFixed(4);
          line.appendChild(s);
        });
        box.appendChild(line);
      });
      el.appendChild(box);
    });
    el.setAttribute('data-rendered', '1');
  }
  function show(id) {
    var pages = document.querySelectorAll('section.page');
    var found = false;
    pages.forEach(function (s) { if (s.id === id) { found = true; } });
    if (id !== 'all' && !found) { id = pages.length ? pages[0].id : 'all'; }
    pages.forEach(function (s) { s.hidden = !(id === 'all' || s.id === id); });
    document.querySelectorAll('#lens-nav a').forEach(function (a) {
      a.className = a.getAttribute('href') === '#' + id ? 'active' : '';
    });
    document.querySelectorAll('section.page').forEach(function (s) {
      if (s.hidden) { return; }
      s.querySelectorAll('div.fig').forEach(renderFig);
      s.querySelectorAll('div.ctx').forEach(renderCtx);
    });
    document.body.setAttribute('data-page', id);
  }
  function route() { show(decodeURIComponent(location.hash.replace(/^#/, '')) || ''); window.scrollTo(0, 0); }
  window.addEventListener('hashchange', route);
  if (typeof Plotly === 'undefined') { noteError('plotly.js did not load'); }
  route();
  document.body.setAttribute('data-ready', '1');
})();
"""
