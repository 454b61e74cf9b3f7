"""Measure the verifier pair: the base slips at carries and rarely checks; its thinking model checks when it should.

Greedy metrics on the first ``n`` held-out problems; T=1 base samples (unmarked prompts, nothing
prefilled) on the first ``sample_problems`` of them for the base's own behaviour rates when it thinks.
Behaviour statistics come from :func:`lens.organism.behaviours.trace_stats`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lens.organism import bundled_path, load_heldout
from lens.organism import corpus as C
from lens.organism.behaviours import trace_stats
from lens.organism.threads import torch_threads

#: completions of the verifier pair are longer than the first pair's (checks and corrected rewrites)
MAX_NEW_TOKENS = 220


def load(models_dir: str | Path | None, name: str):
    """(model, tokenizer) of ``name`` (``verifier-base``, ``verifier-thinking``, ``verifier-thinking-rl``) from
    ``models_dir`` or the bundle."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lens.models import require_safetensors

    folder = Path(models_dir) / name if models_dir is not None else bundled_path(name)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"no model at {folder}; build it with: lens organism train --pair verifier")
    require_safetensors(folder)
    return AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True), AutoTokenizer.from_pretrained(
        str(folder)
    )


def _accuracy(outs: list[str], answers: list[int]) -> float:
    return sum(C.parse_answer(o) == a for o, a in zip(outs, answers, strict=True)) / max(1, len(outs))


@torch_threads(1)  # 1 thread: far faster than 2 when the 2 cores are shared
def evaluate_verifier(
    models_dir: str | Path | None = None, n: int = 500, samples: int = 16, sample_problems: int = 200, seed: int = 0,
    log=None, thinking: str = "verifier-thinking",
) -> dict:
    """Metrics and properties of the verifier pair (``{"metrics": ..., "properties": [...]}``).

    ``thinking`` names the thinking model measured against ``verifier-base``: ``verifier-thinking`` (made by
    selection, the pair's default) or ``verifier-thinking-rl`` (made by RL).
    """
    from lens.organism.sampling import generate

    say = log or (lambda *_: None)
    t0 = time.time()
    held = load_heldout()[:n]
    prompts = [r["prompt"] for r in held]
    answers = [r["answer"] for r in held]
    m: dict = {"n": len(held)}
    gen = dict(max_new_tokens=MAX_NEW_TOKENS)

    base, tok = load(models_dir, "verifier-base")
    outs = generate(base, tok, prompts, **gen)
    m["base_greedy_acc"] = _accuracy(outs, answers)
    m["base_greedy_think"] = sum(map(C.is_thinking, outs)) / len(outs)
    outs = generate(base, tok, prompts, prefill=C.THINK_OPEN, **gen)
    m["base_forced_acc"] = _accuracy(outs, answers)
    say(f"base greedy {m['base_greedy_acc']:.3f}, forced thinking {m['base_forced_acc']:.3f}")
    sp, sa = prompts[:sample_problems], answers[:sample_problems]
    rep = [p for p in sp for _ in range(samples)]
    outs = generate(base, tok, rep, temperature=1.0, seed=seed + 1, **gen)
    thinking_outs = [o for o in outs if C.is_thinking(o)]
    m["sample_n"] = len(outs)
    m["sample_think_rate"] = len(thinking_outs) / len(outs)
    m["sample_think_acc"] = sum(
        C.parse_answer(o) == sa[i // samples] for i, o in enumerate(outs) if C.is_thinking(o)
    ) / max(1, len(thinking_outs))
    m["base_samples"] = trace_stats(thinking_outs)
    say(f"base samples: {len(thinking_outs)} thinking, shares {m['base_samples']['share']}")

    m["thinking_model"] = thinking
    model, ttok = load(models_dir, thinking)
    outs = generate(model, ttok, prompts, **gen)
    m["thinking_greedy_acc"] = _accuracy(outs, answers)
    m["thinking_greedy_think"] = sum(map(C.is_thinking, outs)) / len(outs)
    m["thinking_greedy"] = trace_stats(outs)
    say(f"thinking greedy {m['thinking_greedy_acc']:.3f}, shares {m['thinking_greedy']['share']}")
    info = (Path(models_dir) if models_dir is not None else bundled_path(thinking).parent)
    info_path = info / thinking / "training.json"
    m["selection_rounds"] = json.loads(info_path.read_text()).get("rounds") if info_path.exists() else None
    m["eval_seconds"] = round(time.time() - t0, 1)
    return {"metrics": m, "properties": properties(m)}


def properties(m: dict) -> list[dict]:
    """The pair's targets: a gap that thinking in the base's style cannot close, latent behaviours, right timing."""
    b, t = m["base_samples"], m["thinking_greedy"]

    def row(name, value, target, ok):
        return {"name": name, "value": value, "target": target, "pass": ok}

    def at_least(v, x):
        return v is not None and v >= x

    gap = m["thinking_greedy_acc"] - m["base_forced_acc"]
    return [
        row("base greedy accuracy", m["base_greedy_acc"], "-", None),
        row("base forced-thinking accuracy", m["base_forced_acc"], "-", None),
        row("thinking greedy accuracy", m["thinking_greedy_acc"], "-", None),
        row("thinking minus base forced thinking", gap, ">= 15 points", gap >= 0.15),
        row("base T=1 thinking rate", m["sample_think_rate"], "-", None),
        row("base samples: verification share of steps", b["share"]["verification"], ">= 2%",
            at_least(b["share"]["verification"], 0.02)),
        row("base samples: backtrack share of steps", b["share"]["backtrack"], ">= 2%",
            at_least(b["share"]["backtrack"], 0.02)),
        row("thinking: verification share of steps", t["share"]["verification"], ">= 10%",
            at_least(t["share"]["verification"], 0.10)),
        row("thinking: backtrack share of steps", t["share"]["backtrack"], ">= 10%",
            at_least(t["share"]["backtrack"], 0.10)),
        row("thinking: backtracks that follow an actual error", t["backtracks_after_error"], ">= 80%",
            at_least(t["backtracks_after_error"], 0.80)),
        row("thinking: verifications of a risky (carrying) step", t["checks_after_risky"], ">= 80%",
            at_least(t["checks_after_risky"], 0.80)),
        row("thinking: verifications whose sum is right", t["checks_right"], "-", None),
        row("thinking: errors followed by a verification", t["errors_caught"], "-", None),
    ]
