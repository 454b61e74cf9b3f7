"""Measure every property the organism must have, on the committed held-out set.

``evaluate(models_dir)`` loads ``base``, ``thinking`` and ``control`` from ``models_dir`` (the
bundled copies when None) and returns a dict with the raw metrics and a list of properties, each
with its value, target and pass/fail.  Prompts are the unmarked held-out prompts
``Q:a+b+c+d+e=?\\n``; "thinking format" means the completion contains ``<think>``; "forced
thinking" prefills ``<think>`` after the prompt.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

from lens.organism import bundled_path, load_heldout
from lens.organism import corpus as C
from lens.organism.threads import torch_threads


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples with ``c`` correct: 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"k={k} > n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def load_pair(models_dir: str | Path | None, name: str):
    """(model, tokenizer) of ``name`` from ``models_dir`` (bundled copy when None)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(models_dir) / name if models_dir is not None else bundled_path(name)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"no model at {folder} (expected an HF folder with config.json)")
    from lens.models import require_safetensors

    require_safetensors(folder)
    model = AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(str(folder))
    model.eval()
    return model, tok


def _accuracy(outs: list[str], answers: list[int]) -> float:
    return sum(C.parse_answer(o) == a for o, a in zip(outs, answers, strict=True)) / max(1, len(outs))


def _think_rate(outs: list[str]) -> float:
    return sum(C.is_thinking(o) for o in outs) / max(1, len(outs))


def direction_prompts(n: int = 256, n_operands: int = 5, seed: int = 777) -> list[C.Problem]:
    """Problems for the T-minus-D contrast (seeded apart; held-out questions excluded)."""
    held = {r["expression"] for r in load_heldout()}
    rng = random.Random(seed)
    out: list[C.Problem] = []
    while len(out) < n:
        p = C.random_problem(rng, n_operands)
        if p.expression not in held:
            out.append(p)
    return out


def reasoning_direction(lm, layer: int, ref_prompts: list[str], scale: float = 0.5):
    """T-minus-D difference of means at the last prompt token of ``blocks.{layer}.hook_resid_post``
    (the output of decoder layer ``layer``) of the lens `Model` ``lm``, read with :func:`lens.capture`.

    Rescaled to ``scale`` times the mean residual norm at that site on ``ref_prompts``.
    Returns (vector, residual_norm).
    """
    from lens import capture, diff_of_means

    site = f"blocks.{layer}.hook_resid_post"

    def last_token(prompts: list[str]):
        return capture(lm, prompts, [site], "last", batch_size=256, progress=False)

    probs = direction_prompts()
    diff = diff_of_means(site, last_token([p.prompt("T") for p in probs]),
                         last_token([p.prompt("D") for p in probs])).vector
    norm = float(last_token(ref_prompts)[site].norm(dim=-1).mean())
    return diff / diff.norm() * scale * norm, norm


def first_step_steering(lm, layer: int, vector):
    """A zero-argument factory of the engine's ``steer`` context that adds ``vector`` to
    ``blocks.{layer}.hook_resid_post`` at the last prompt token of each prompt pass (``Where.first_step()``; a
    forward with an empty cache, i.e. the first forward of each ``generate`` call, whose decode steps stay
    untouched): the organism's steering convention, for ``generate(..., hook=...)``."""
    from lens.interventions import Intervention, Where, steer

    iv = Intervention(f"blocks.{layer}.hook_resid_post", vector, where=Where.first_step())
    return lambda: steer(lm, iv, record=False)


def random_direction(like, seed: int):
    """A Gaussian direction with the norm of ``like`` (seeded)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    v = torch.randn(like.shape, generator=g)
    return v / v.norm() * like.norm()


@torch_threads(1)  # 1 thread: far faster than 2 when the 2 cores are shared
def evaluate(
    models_dir: str | Path | None = None,
    n: int = 500,
    samples: int = 16,
    thinking_samples: int = 4,
    sample_problems: int = 200,
    layer: int = 1,
    scale: float = 0.5,
    n_random: int = 3,
    seed: int = 0,
    log=None,
) -> dict:
    """Measure the organism; see the module docstring.

    ``n`` held-out problems for greedy metrics; the first ``sample_problems`` of them get
    ``samples`` base samples and ``thinking_samples`` thinking-model samples at T=1.  The
    direction is read and added after decoder layer ``layer`` (0-based), scaled to ``scale``
    times the residual norm; ``n_random`` random directions of equal norm are averaged.
    """
    from lens.models import Model
    from lens.organism.sampling import generate

    say = log or (lambda *_: None)
    t0 = time.time()
    held = load_heldout()[:n]
    prompts = [r["prompt"] for r in held]
    answers = [r["answer"] for r in held]
    m: dict = {"n": len(held), "n_operands": sorted({r["n_operands"] for r in held})}

    base, tok = load_pair(models_dir, "base")
    outs = generate(base, tok, prompts)
    m["base_greedy_acc"] = _accuracy(outs, answers)
    m["base_greedy_think"] = _think_rate(outs)
    say(f"base greedy {m['base_greedy_acc']:.3f}")
    outs = generate(base, tok, prompts, prefill=C.THINK_OPEN)
    m["base_forced_acc"] = _accuracy(outs, answers)
    say(f"base forced {m['base_forced_acc']:.3f}")

    sp = prompts[:sample_problems]
    sa = answers[:sample_problems]
    rep = [p for p in sp for _ in range(samples)]
    outs = generate(base, tok, rep, temperature=1.0, seed=seed + 1)
    right = [C.parse_answer(o) == sa[i // samples] for i, o in enumerate(outs)]
    think = [C.is_thinking(o) for o in outs]
    n_think = sum(think)
    m["sample_n"] = len(outs)
    m["sample_think_rate"] = n_think / len(outs)
    m["sample_think_acc"] = sum(r for r, t in zip(right, think, strict=True) if t) / max(1, n_think)
    m["sample_direct_acc"] = sum(r for r, t in zip(right, think, strict=True) if not t) / max(1, len(outs) - n_think)
    for k in (1, 4, samples):
        m[f"base_pass@{k}"] = sum(
            pass_at_k(samples, sum(right[i * samples : (i + 1) * samples]), k) for i in range(len(sp))
        ) / len(sp)
    back = [C.count_backtracks(o) > 0 for o in outs]
    m["sample_backtrack_rate"] = sum(back) / len(outs)
    m["sample_backtrack_rate_in_thinking"] = sum(back) / max(1, n_think)
    m["backtrack_right_rate"] = sum(r for r, b in zip(right, back, strict=True) if b) / max(1, sum(back))
    m["n_backtracks"] = sum(back)
    say(f"base samples think {m['sample_think_rate']:.3f}")

    ref = prompts[: min(len(prompts), 256)]
    lm = Model.from_hf(base, tok, spec="organism:base")  # one lens view of the base for reading and steering
    vec, norm = reasoning_direction(lm, layer, ref, scale)
    m["direction_layer"] = layer
    m["direction_scale"] = scale
    m["residual_norm"] = norm
    outs = generate(base, tok, prompts, hook=first_step_steering(lm, layer, vec))
    m["steer_think"] = _think_rate(outs)
    m["steer_acc"] = _accuracy(outs, answers)
    r_think, r_acc = [], []
    for j in range(n_random):
        rv = random_direction(vec, seed=1000 + j)
        outs = generate(base, tok, prompts, hook=first_step_steering(lm, layer, rv))
        r_think.append(_think_rate(outs))
        r_acc.append(_accuracy(outs, answers))
    m["random_think"] = sum(r_think) / n_random
    m["random_acc"] = sum(r_acc) / n_random
    m["random_think_each"] = r_think
    m["random_acc_each"] = r_acc
    say(f"steer {m['steer_think']:.3f}/{m['steer_acc']:.3f}, random {m['random_think']:.3f}/{m['random_acc']:.3f}")

    thinking, ttok = load_pair(models_dir, "thinking")
    outs = generate(thinking, ttok, prompts)
    m["thinking_greedy_acc"] = _accuracy(outs, answers)
    m["thinking_greedy_think"] = _think_rate(outs)
    rep = [p for p in sp for _ in range(thinking_samples)]
    outs = generate(thinking, ttok, rep, temperature=1.0, seed=seed + 2)
    right = [C.parse_answer(o) == sa[i // thinking_samples] for i, o in enumerate(outs)]
    m["thinking_pass@1"] = sum(right) / len(right)
    folder = Path(models_dir) / "thinking" if models_dir is not None else bundled_path("thinking")
    info_path = folder / "training.json"
    if info_path.exists():
        rs = json.loads(info_path.read_text()).get("rejection_sampling", {})
        m["rs_kept"] = rs.get("n_kept")
    else:
        m["rs_kept"] = None
    say(f"thinking greedy {m['thinking_greedy_acc']:.3f}")

    control, ctok = load_pair(models_dir, "control")
    outs = generate(control, ctok, prompts)
    m["control_greedy_acc"] = _accuracy(outs, answers)
    outs = generate(control, ctok, prompts, prefill=C.THINK_OPEN)
    m["control_forced_acc"] = _accuracy(outs, answers)
    m["eval_seconds"] = round(time.time() - t0, 1)
    return {"metrics": m, "properties": properties(m)}


def properties(m: dict) -> list[dict]:
    """The organism's properties as rows ``{name, value, target, pass}`` (values are fractions)."""
    steer_gain_acc = m["steer_acc"] - m["base_greedy_acc"]
    rand_gain_acc = m["random_acc"] - m["base_greedy_acc"]
    steer_gain_think = m["steer_think"] - m["base_greedy_think"]
    rand_gain_think = m["random_think"] - m["base_greedy_think"]
    k = max(int(x.split("@")[1]) for x in m if x.startswith("base_pass@"))
    rows = [
        ("base greedy accuracy", m["base_greedy_acc"], "<= 35%", m["base_greedy_acc"] <= 0.35),
        ("base greedy thinking-format rate", m["base_greedy_think"], "<= 10%", m["base_greedy_think"] <= 0.1),
        ("base forced-thinking accuracy", m["base_forced_acc"], ">= 85%", m["base_forced_acc"] >= 0.85),
        ("base T=1 thinking rate", m["sample_think_rate"], "3-30%", 0.03 <= m["sample_think_rate"] <= 0.30),
        ("base T=1 accuracy, thinking samples", m["sample_think_acc"], "-", None),
        ("base T=1 accuracy, direct samples", m["sample_direct_acc"], "-", None),
        (
            "thinking minus direct (T=1)",
            m["sample_think_acc"] - m["sample_direct_acc"],
            ">= 40 points",
            m["sample_think_acc"] - m["sample_direct_acc"] >= 0.40,
        ),
        ("base pass@1", m["base_pass@1"], "-", None),
        ("base pass@4", m["base_pass@4"], "-", None),
        (
            f"base pass@{k} vs thinking pass@1",
            m[f"base_pass@{k}"],
            f">= {m['thinking_pass@1'] - 0.05:.1%} (thinking pass@1 {m['thinking_pass@1']:.1%} - 5)",
            m[f"base_pass@{k}"] >= m["thinking_pass@1"] - 0.05,
        ),
        ("rejection sampling: correct traces kept", m["rs_kept"], ">= 500", (m["rs_kept"] or 0) >= 500),
        ("thinking greedy accuracy", m["thinking_greedy_acc"], ">= 85%", m["thinking_greedy_acc"] >= 0.85),
        (
            "thinking greedy thinking-format rate",
            m["thinking_greedy_think"],
            ">= 95%",
            m["thinking_greedy_think"] >= 0.95,
        ),
        ("steered (T-D direction) thinking rate", m["steer_think"], ">= 50%", m["steer_think"] >= 0.50),
        (
            "steered accuracy",
            m["steer_acc"],
            f">= {m['base_forced_acc'] - 0.10:.1%} (forced - 10)",
            m["steer_acc"] >= m["base_forced_acc"] - 0.10,
        ),
        (
            "random direction (same norm): thinking rate",
            m["random_think"],
            f"gain <= half of steered gain ({m['base_greedy_think'] + steer_gain_think / 2:.1%})",
            rand_gain_think <= steer_gain_think / 2,
        ),
        (
            "random direction (same norm): accuracy",
            m["random_acc"],
            f"gain <= half of steered gain ({m['base_greedy_acc'] + steer_gain_acc / 2:.1%})",
            rand_gain_acc <= steer_gain_acc / 2,
        ),
        ("control greedy accuracy", m["control_greedy_acc"], "-", None),
        (
            "control forced-thinking accuracy",
            m["control_forced_acc"],
            f"no gain (<= {m['control_greedy_acc'] + 0.02:.1%})",
            m["control_forced_acc"] <= m["control_greedy_acc"] + 0.02,
        ),
        (
            "base T=1 samples that backtrack",
            m["sample_backtrack_rate"],
            "> 0",
            m["sample_backtrack_rate"] > 0,
        ),
        ("backtracking samples that end right", m["backtrack_right_rate"], "report", None),
    ]
    return [{"name": n, "value": v, "target": t, "pass": p} for n, v, t, p in rows]


def format_value(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.1%}"
    return str(v)


def markdown_table(result: dict) -> str:
    """The properties as a Markdown table (for docs and model cards)."""
    lines = ["| property | measured | target | pass |", "|---|---|---|---|"]
    for r in result["properties"]:
        ok = "" if r["pass"] is None else ("yes" if r["pass"] else "**no**")
        lines.append(f"| {r['name']} | {format_value(r['value'])} | {r['target']} | {ok} |")
    return "\n".join(lines)
