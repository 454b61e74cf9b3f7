# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # From capture to SAE feature to dashboard
#
# Capture the organism thinking model's residual stream on its own traces (first token skipped:
# it is an attention sink), train a small top-k SAE on it, rank the SAE's features by how well they
# separate verification steps from the other tokens, and write a Plotly dashboard.

# %%
import random
import tempfile
from pathlib import Path

import lens
from lens import TrainConfig
from lens.dashboards import Report
from lens.dashboards import figures as F
from lens.organism import corpus as C

work = Path(tempfile.mkdtemp(prefix="lens-notebook-"))
model = lens.load_model("organism:thinking")
site = "blocks.2.hook_resid_post"
rng = random.Random(0)
texts = [C.thinking_text(C.random_problem(rng, rng.randint(3, 6)), None, rng, verify=rng.random() < 0.5)
         for _ in range(200)]
folder = lens.capture_to_disk(model, texts, [site], "from:1", out=work / "capture", progress=False)
print(folder.summary()["rows"], "rows captured")

# %%
cfg = TrainConfig(architecture="topk", expansion=4, k=8, total_rows=100_000)
result = lens.train_sae(folder, work / "sae", cfg, progress=False)
sae = result.load(model)
print(result)

# %% [markdown]
# The mean row of each verification step (` check b+a=c`) against the mean row of each step of
# traces without one (`sentences`: one row per step).

# %%
checks = [t for t in texts if C.CHECK in t]
plain = [t for t in texts if C.CHECK not in t]
pos = lens.capture(model, checks, site, "regex-mean:check [0-9+]+=[0-9]+", progress=False)
neg = lens.capture(model, plain, site, "sentences", progress=False)
ranking = lens.rank_features(sae, pos, neg, site=site, sort_by="auroc", top=10)
for row in ranking.as_dicts(5):
    print(row["feature"], round(row["auroc"], 3))

# %%
top = ranking.as_dicts(10)
report = Report("verification features", meta={"model": "organism:thinking", "site": site})
page = report.page("ranking", lead="SAE features that separate verification steps from plain computation.")
page.figure(F.bars([str(r["feature"]) for r in top], [r["auroc"] for r in top], "AUROC of the top features",
                   "feature", "AUROC"))
page.table(top, caption="top features")
report.write(work / "dashboard")
index = work / "dashboard" / "index.html"
print(index)

# %%
assert index.exists() and top[0]["auroc"] > 0.9
