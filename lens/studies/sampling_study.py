"""Finding 1 (Yue et al. 2504.13837): base models already sample reasoning.

Seeded samples from both models on the same prompts; unbiased pass@k curves with bootstrap
intervals; the rate of thinking-format and self-reflective samples, reflection@k, and how reflection
relates to correctness, per sample and per question as oat-zero (Liu et al.) measures it, under each
reflection detector given (``oat_zero`` and ``words`` in `lens reproduce`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ..decoding.generate import generate
from ..errors import LensError
from ..evaluation.behaviours import (
    ReflectionDetector,
    ThinkingFormat,
    reflection_at_k,
    reflection_precision_recall,
    reflection_vs_correctness,
)
from ..evaluation.metrics import pass_at_k_curve, powers_of_two, tokens_summary
from ..models import Model


def crossover(base: dict, thinking: dict) -> int | None:
    """Smallest k at which the base's pass@k reaches the thinking model's (None if it never does)."""
    for k in sorted(base, key=int):
        if base[k]["value"] >= thinking[k]["value"]:
            return int(k)
    return None


def run(
    models: dict[str, Model],
    prompts: Sequence[str] | dict[str, Sequence[str]],
    is_correct: Callable[[int, str], bool],
    *,
    samples: int = 16,
    max_new_tokens: int = 120,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 128,
    detector: ReflectionDetector | None = None,
    compare: Mapping[str, ReflectionDetector] | None = None,
    fmt: ThinkingFormat | None = None,
    say: Callable[[str], None] = lambda _m: None,
    data_parallel: bool | None = None,
) -> dict:
    """pass@k of every model in ``models`` (name -> Model) plus behaviour rates of their samples.

    prompts: one list for every model, or name -> that model's own prompts (e.g. its chat template),
    the same problems in the same order (``is_correct(i, text)`` checks problem i either way).
    detector: the headline reflection detector (default oat-zero's, :class:`ReflectionDetector`); its
    numbers fill ``behaviour`` and ``reflection_at_k``. compare: further detectors by name. Every
    detector's numbers, the headline's included, are under ``reflection[name]``: the detector, and per
    model the sample-level rates, reflection@k and oat-zero's question-level precision/recall.
    fmt: the thinking format; a model whose prompts open the block (R1's template ends ``<think>\n``)
    counts a sample as thinking-format when it closes the block (``behaviour[name]["prompt_opens_thinking"]``:
    the share of its prompts that open it).
    data_parallel: under a launcher, the ranks share out the batches and every rank returns the
    whole result, equal to one process's (each sample is seeded by (seed, problem, sample), never by
    rank or batch); None: inside a `lens.distributed.data_parallel()` block.
    """
    from ..distributed import sharing

    shared = sharing(data_parallel) is not None
    per_model = {name: list(prompts[name] if isinstance(prompts, dict) else prompts) for name in models}
    first = next(iter(per_model.values()), [])
    if any(len(p) != len(first) for p in per_model.values()):
        raise LensError(f"every model needs one prompt per problem; got {[len(p) for p in per_model.values()]}")
    ks = powers_of_two(samples)
    detector = detector or ReflectionDetector()
    detectors = {detector.name: detector, **{k: v for k, v in (compare or {}).items() if k != detector.name}}
    fmt = fmt or ThinkingFormat()
    out: dict = {"status": "ok", "n": len(first), "samples": samples, "ks": ks, "temperature": temperature,
                 "top_p": top_p, "max_new_tokens": max_new_tokens, "pass_at_k": {}, "behaviour": {},
                 "reflection_at_k": {}, "tokens": {}, "reflection_detector": detector.name,
                 "reflection": {d_name: {"detector": d.describe(), "models": {}} for d_name, d in detectors.items()}}
    for name, model in models.items():
        say(f"sampling {name}: {len(first)} prompts x {samples}")
        gen = generate(model, per_model[name], max_new_tokens, greedy=False, temperature=temperature, top_p=top_p,
                       n=samples, seed=seed, batch_size=batch_size, data_parallel=shared)
        texts = gen.texts()
        correct = [[bool(is_correct(i, t)) for t in row] for i, row in enumerate(texts)]
        curve = pass_at_k_curve(correct, ks, seed=seed)
        out["pass_at_k"][name] = {str(k): e.as_dict() for k, e in curve.items()}  # str keys: as in JSON
        flat_t = [t for row in texts for t in row]
        flat_c = [c for row in correct for c in row]
        opened = [fmt.opened_by(p) for p in per_model[name]]  # R1's template opens <think> in the prompt
        flat_o = [o for o, row in zip(opened, texts, strict=True) for _ in row]
        beh = reflection_vs_correctness(flat_t, flat_c, detector, fmt, prefilled=flat_o)
        beh["accuracy"] = sum(flat_c) / max(len(flat_c), 1)
        beh["prompt_opens_thinking"] = sum(opened) / max(len(opened), 1)  # then thinking = closes the block
        out["behaviour"][name] = beh
        out["reflection_at_k"][name] = {str(k): v for k, v in reflection_at_k(texts, ks, detector).items()}
        for d_name, det in detectors.items():
            table = beh if det is detector else reflection_vs_correctness(flat_t, flat_c, det, fmt, prefilled=flat_o)
            out["reflection"][d_name]["models"][name] = {
                "reflection_rate": table["reflection_rate"],
                "accuracy_if_reflective": table["accuracy_if_reflective"],
                "accuracy_if_not_reflective": table["accuracy_if_not_reflective"],
                "keyword_counts": table["keyword_counts"],
                "reflection_at_k": {str(k): v for k, v in reflection_at_k(texts, ks, det).items()},
                "questions": reflection_precision_recall(texts, correct, det),
            }
        out["tokens"][name] = tokens_summary(gen.tokens_used)
        out.setdefault("examples", {})[name] = texts[0][:3]
    names = list(models)
    if len(names) == 2:
        out["crossover_k"] = crossover(out["pass_at_k"][names[0]], out["pass_at_k"][names[1]])
    return out
