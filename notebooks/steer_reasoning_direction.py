# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Find the reasoning direction of a base model and steer it
#
# The bundled organism's base model can think step by step (`<think>...</think>`) but rarely does.
# We read its residual stream at the last prompt token for prompts marked "think" (`Q:T:`) and
# "answer directly" (`Q:D:`), take the difference of means, and add it back at that one position
# on unmarked held-out prompts. A random direction of the same norm is the control.

# %%
import random

import torch

import lens
from lens.organism import corpus as C
from lens.organism import load_heldout

model = lens.load_model("organism:base")
site = "blocks.1.hook_resid_post"
heldout = {r["expression"] for r in load_heldout()}
rng = random.Random(0)
problems = [p for p in (C.random_problem(rng, 5) for _ in range(140)) if p.expression not in heldout][:128]
think = [p.prompt("T") for p in problems]
direct = [p.prompt("D") for p in problems]
pos = lens.capture(model, think, site, "last_prompt", progress=False)
neg = lens.capture(model, direct, site, "last_prompt", progress=False)
direction = lens.diff_of_means(site, pos, neg)
print(direction)

# %% [markdown]
# Steer at the last prompt token only (`Where.last_prompt_token()`, the forward that produces the
# first generated token), with the vector scaled to half the mean residual norm there.

# %%
held = load_heldout()[:60]
prompts = [r["prompt"] for r in held]
norm = lens.capture(model, prompts, site, "last_prompt", progress=False)[site].norm(dim=-1).mean()
vector = direction.vector / direction.vector.norm() * 0.5 * norm


def measure(vec=None):
    """Thinking rate and accuracy of greedy completions, steered with `vec` (None: not steered)."""
    if vec is None:
        gen = lens.generate(model, prompts, max_new_tokens=100)
    else:
        iv = lens.Intervention(site, vec, where=lens.Where.last_prompt_token())
        with lens.steer(model, iv):
            gen = lens.generate(model, prompts, max_new_tokens=100)
    texts = [row[0] for row in gen.texts()]
    think_rate = sum(map(C.is_thinking, texts)) / len(texts)
    acc = sum(C.parse_answer(t) == r["answer"] for t, r in zip(texts, held, strict=True)) / len(texts)
    return think_rate, acc


random_vec = torch.randn(vector.shape, generator=torch.Generator().manual_seed(0))
random_vec = random_vec / random_vec.norm() * vector.norm()
results = {"plain": measure(), "reasoning direction": measure(vector), "random direction": measure(random_vec)}
for name, (rate, acc) in results.items():
    print(f"{name:>20}: thinking {rate:.0%}, accuracy {acc:.0%}")

# %% [markdown]
# The direction switches the thinking mode on; a random direction of the same norm does not.

# %%
assert results["reasoning direction"][0] >= results["random direction"][0] + 0.5
assert results["reasoning direction"][1] > results["plain"][1] + 0.3
