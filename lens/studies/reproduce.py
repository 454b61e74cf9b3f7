"""`lens reproduce`: re-run the five findings on a model pair and write a report folder.

Steps (numbered as the findings in docs/reproduce.md): (1) sampling and pass@k, (2) the hybrid
with its ablations, (4) CoT-decoding, (5) find-feature + first-step trigger (off the organism with
the SAE given as ``sae``, else a small one trained on the base's captures of the task prompts and
cached: `trained_sae`; ``feature.sae_source`` records which), (3) the model-pair diff. Each step
records ``status`` ``ok`` / ``skipped`` (with the reason) / ``error`` (with the message) and the
report is written whatever happens. Outputs, in ``out_dir``:
``results.json`` (every number), ``results.md`` (one table per finding, next to the papers'
numbers), ``index.html`` (the dashboards). Same ``seed`` -> same numbers (timings live in
``meta`` only).
"""

from __future__ import annotations

import json
import math
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..distributed import first_on_rank0
from ..errors import LensError
from ..outputs import atomic_folder, check_output, file_mode, writer_lock

STEPS = ("sampling", "hybrid", "cot", "feature", "diff", "rl")
STEP_TITLES = {"sampling": "1. base models already sample reasoning", "hybrid": "2. hybrid steering",
               "diff": "3. model-pair diff", "rl": "3. RL with verifiable and spurious rewards",
               "cot": "4. CoT-decoding", "feature": "5. SAE feature trigger"}
#: the report's `meta` fields that differ between two runs of the same job (when, how long, where, page size)
RUN_FACTS = frozenset({"started", "timings_s", "wall_s", "cpu_s", "out_dir", "report_bytes"})
COT_INSTRUCTION = " Let's think step by step."
DIRECT_INSTRUCTION = " Answer with only the final answer, no explanation."


@dataclass
class Sizes:
    """How big each step is. The defaults fit the organism in about 15 minutes on 2 CPU cores."""

    n: int = 64                  # problems for sampling (1)
    samples: int = 16            # samples per problem (1)
    hybrid_n: int = 64           # problems for the hybrid (2)
    hybrid_categories: int | None = None  # the taxonomy's categories; None: the paper's pair's or 5 (2)
    hybrid_vectors: str = "means"  # the hybrid's vectors: means or optimised (lens.hybrid.vectors) (2)
    hybrid_force_thinking: bool = False  # organism pairs: both models' prompts end with the think tag (2)
    hybrid_vectors_dir: str | None = None  # a folder keeping the hybrid's vectors: loaded when it holds them (2)
    hybrid_calibrate: int = 0    # development problems on which the vectors' scales (and layers) are chosen (2)
    hybrid_calibration_grid: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 3.0)  # scales tried (2)
    hybrid_calibration_layers: tuple[int, ...] | None = None  # other steer layers a category may move to (2)
    cot_n: int = 64              # problems for CoT-decoding (4)
    k: int = 10                  # CoT-decoding branches (4)
    feature_n: int = 64          # problems for the steer-check (5)
    n_contrast: int = 128        # T/D contrast prompts (3, 5)
    top_features: int = 2        # features steer-checked (5)
    n_random: int = 2            # random-feature controls (5)
    feature_pages: int = 6       # feature dashboards (5)
    max_new_tokens: int = 100
    temperature: float = 1.0     # sampling (1); see use_sampling
    top_p: float = 1.0
    sampling: str = "default"    # the preset temperature and top_p came from (lens.decoding.SAMPLING_PRESETS)
    alphas: tuple[float, ...] | None = None
    layer: int | None = None
    read_layer: int | None = None  # the hybrid's read layer (the taxonomy's); default the paper's or steer layer (2)
    batch_size: int = 256
    sae_texts: int = 256         # off the organism without --sae: problems whose prompts train the SAE (5)
    sae_expansion: int = 4       # its latents = expansion x width (TopK)
    sae_k: int = 16              # active latents per token
    sae_rows: int = 60_000       # training rows consumed (the captured tokens, re-read in epochs)
    rl_steps: int = 60           # GRPO steps per RL run (3, organism: base and control; each experiment)
    rl_n: int = 100              # held-out problems each RL evaluation measures
    rl_pass_k: int = 64          # pass@k up to this k before / after 1-shot RLVR (on 40 problems)
    # the correct reward on the full set first: its per-problem history picks the 1-shot problem (the paper's
    # variance rule); then 1-shot RLVR, the three spurious rewards and one-problem CFT on the 1-shot problem
    rl_experiments: tuple[str, ...] = ("full", "one_shot", "format", "random", "incorrect", "cft")

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    def use_sampling(self, preset: str) -> Sizes:
        """Take temperature and top_p from a sampling preset (``default``, ``yue``: 0.6 / 0.95, ``oat_zero``)."""
        from ..decoding.generate import sampling_preset

        p = sampling_preset(preset)
        self.sampling, self.temperature, self.top_p = p.name, p.temperature, p.top_p
        return self


@dataclass
class Setup:
    """What the steps need from the task set: prompts, checkers, contrast prompts, detectors."""

    organism: bool
    tasks: list
    prompts: list[str]
    extractor: str
    is_correct: Callable[[int, str], bool]
    answer_ok: Callable[[int, str | None], bool]
    is_reasoning: Callable[[str], bool] | None
    reflection_family: str
    think_prompts: list[str] = field(default_factory=list)
    direct_prompts: list[str] = field(default_factory=list)
    thinking_prompts: list[str] = field(default_factory=list)  # the thinking model's own prompts (same problems)
    templates: dict = field(default_factory=dict)  # {"base": name, "thinking": name}
    source: str = ""  # the task set's name or path
    template: object = "plain"  # the base's template
    template_given: bool = False  # the base's template came from the caller (else the default)
    thinking_template: str | None = None  # the thinking model's template as the caller gave it (None: its own)


def setup(tasks_name: str, base, sizes: Sizes, template: str | None = None, thinking=None,
          thinking_template: str | None = None, extra: int = 0, loaded: list | None = None) -> Setup:
    """Load the task set and build prompts, checkers and contrast prompts for it.

    extra: problems loaded after the ones the sizes need (e.g. the hybrid's calibration split); the contrast
    prompts are drawn from the needed ones only, so they do not change with it. loaded: the task set's problems
    as an earlier setup of the same set read them (`Setup.tasks`), so it is not read again.

    Each model gets its own prompts: the base `template` (default ``plain``, ``identity`` on the
    organism), the thinking model `thinking_template` (default its own chat template when its
    tokenizer has one, else the base's template). Contrast prompts use the base's template.
    """
    from ..evaluation.answers import NumericChecker, extract_answer
    from ..evaluation.tasks import load_tasks
    from ..evaluation.templates import apply_template, own_template

    organism = str(tasks_name).lower() == "organism"
    # other pairs: the hybrid's taxonomy is fitted on the thinking model's traces of the next hybrid_n problems
    need = max(sizes.n, sizes.hybrid_n * (1 if organism else 2), sizes.cot_n, sizes.feature_n)
    tasks = load_tasks(tasks_name, limit=need + extra) if loaded is None else list(loaded[: need + extra])
    if not tasks:
        raise LensError(f"task set {tasks_name!r} is empty")
    questions = [t.question for t in tasks]
    tmpl = template or ("identity" if organism else "plain")
    prompts = apply_template(tmpl, questions, base.tokenizer)
    t_tmpl = tmpl if thinking is None or organism else own_template(thinking, thinking_template, fallback=tmpl)
    same = thinking is None or (t_tmpl == tmpl and t_tmpl != "chat")
    t_prompts = prompts if same else apply_template(t_tmpl, questions, thinking.tokenizer)
    names = {"base": str(tmpl), "thinking": str(t_tmpl)}
    extractor = "organism" if organism else "auto"
    refs = [t.answer for t in tasks]
    check = NumericChecker()

    def is_correct(i: int, text: str) -> bool:
        return check(extract_answer(text, extractor), refs[i])

    def answer_ok(i: int, answer: str | None) -> bool:
        return check(answer, refs[i])

    if organism:
        from ..organism import corpus as C
        from . import organism_inputs as O

        think, direct = O.marker_contrast(sizes.n_contrast)
        return Setup(True, tasks, prompts, extractor, is_correct, answer_ok, C.is_thinking, "organism", think, direct,
                     t_prompts, names, str(tasks_name), tmpl, template is not None, thinking_template)
    qs = questions[: min(sizes.n_contrast, need)]
    think = apply_template(tmpl, [q + COT_INSTRUCTION for q in qs], base.tokenizer)
    direct = apply_template(tmpl, [q + DIRECT_INSTRUCTION for q in qs], base.tokenizer)
    return Setup(False, tasks, prompts, extractor, is_correct, answer_ok, None, base.family, think, direct,
                 t_prompts, names, str(tasks_name), tmpl, template is not None, thinking_template)


def _preset_record(sizes: Sizes) -> dict:
    """The sampling settings that ran and the preset named in ``sizes`` (``matches``: its values unchanged)."""
    from ..decoding.generate import SAMPLING_PRESETS

    p = SAMPLING_PRESETS.get(sizes.sampling)
    return {"name": sizes.sampling, "temperature": sizes.temperature, "top_p": sizes.top_p,
            "source": p.source if p else "", "matches": bool(p and (p.temperature, p.top_p) == (sizes.temperature,
                                                                                               sizes.top_p))}


def _sub(s: Setup, n: int):
    """(prompts, is_correct) of the first n problems."""
    return s.prompts[:n], s.is_correct


def run_steps(base, thinking, s: Setup, sizes: Sizes, *, seed: int, steps, sae: str | None,
              say: Callable[[str], None], timings: dict, tick: Callable[[], None] = lambda: None) -> dict:
    """Run the selected steps; each returns a dict with a status."""
    from ..evaluation.behaviours import ThinkingFormat, reflection_detectors

    results: dict = {}

    def step(name: str, fn: Callable[[], dict]) -> None:
        if name not in steps:
            results[name] = {"status": "skipped", "reason": "not selected (--steps)"}
            tick()
            return
        say(f"== {STEP_TITLES[name]}")
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            results[name] = fn()
        except Exception as e:  # noqa: BLE001 - one failed step must not lose the others' results
            results[name] = {"status": "error", "reason": f"{type(e).__name__}: {e}",
                             "traceback": traceback.format_exc(limit=6)}
            say(f"   {name} failed: {type(e).__name__}: {e}")
        timings[name] = round(time.perf_counter() - t0, 1)
        timings[f"{name}.cpu"] = round(time.process_time() - c0, 1)
        for k in ("ranking_throughput",):
            if k in results[name]:
                timings[f"{name}.{k}"] = results[name].pop(k)
        say(f"   {name}: {results[name].get('status')} in {timings[name]:.0f}s")
        tick()

    def sampling() -> dict:
        from . import sampling_study

        prompts, ok = _sub(s, sizes.n)
        own = {"base": prompts, "thinking": (s.thinking_prompts or s.prompts)[: sizes.n]}
        dets = reflection_detectors(s.reflection_family, str(getattr(base, "spec", "")))  # oat_zero, words
        res = sampling_study.run({"base": base, "thinking": thinking}, own, ok, samples=sizes.samples,
                                 max_new_tokens=sizes.max_new_tokens, temperature=sizes.temperature,
                                 top_p=sizes.top_p, seed=seed, batch_size=sizes.batch_size,
                                 detector=dets["oat_zero"], compare={"words": dets["words"]}, fmt=ThinkingFormat(),
                                 say=say)
        res["sampling_preset"] = _preset_record(sizes)
        return res

    def hybrid() -> dict:
        if not s.organism:
            from . import hybrid_generic

            # the hybrid paper prompts the base "User: ...\nAssistant:" (as `lens hybrid` does) unless told otherwise
            h = s if s.template_given else setup(s.source, base, sizes, "user_assistant", thinking=thinking,
                                                 thinking_template=s.thinking_template,
                                                 extra=sizes.hybrid_calibrate, loaded=s.tasks)
            res = hybrid_generic.run(base, thinking, h.prompts, h.is_correct, h.think_prompts, h.direct_prompts,
                                     n=sizes.hybrid_n, layer=sizes.layer, read_layer=sizes.read_layer,
                                     n_categories=sizes.hybrid_categories, max_new_tokens=sizes.max_new_tokens,
                                     batch_size=min(sizes.batch_size, 64),
                                     seed=seed, progress=say,
                                     thinking_prompts=h.thinking_prompts or None, vectors=sizes.hybrid_vectors,
                                     vectors_dir=sizes.hybrid_vectors_dir, **_calibration(sizes))
            return {"status": "ok", **res, "prompt_templates": h.templates}
        from . import hybrid_organism

        res = hybrid_organism.run(base, thinking, n=sizes.hybrid_n, layer=sizes.layer, read_layer=sizes.read_layer,
                                  max_new_tokens=sizes.max_new_tokens, progress=say, vectors=sizes.hybrid_vectors,
                                  force_thinking=sizes.hybrid_force_thinking, vectors_dir=sizes.hybrid_vectors_dir,
                                  n_categories=sizes.hybrid_categories, **_calibration(sizes))
        return {"status": "ok", **res}

    def cot() -> dict:
        from . import cot_study

        return cot_study.run(base, s.prompts[: sizes.cot_n], s.answer_ok, k=sizes.k,
                             max_new_tokens=sizes.max_new_tokens, extractor=s.extractor,
                             is_reasoning=s.is_reasoning, batch_size=max(sizes.k, sizes.batch_size), say=say,
                             answer_prompt=None if s.organism else cot_study.ANSWER_PROMPT)  # organism cannot spell it

    def feature() -> dict:
        from . import feature_study as FS

        if s.organism and sae is None:
            first_on_rank0(lambda: _organism_sae(base, sizes), cached=lambda d: d.path)  # every rank's cache holds it
            return FS.run_organism(base, layer=sizes.layer, n=sizes.feature_n, n_contrast=sizes.n_contrast,
                                   top=sizes.top_features, n_random=sizes.n_random, alphas=sizes.alphas,
                                   max_new_tokens=sizes.max_new_tokens, reference=thinking, say=say)
        if sae is None:  # no SAE given: a small one trained on the base's captures of the task prompts (cached)
            path, source = (first_on_rank0(lambda: trained_sae(base, s, sizes, say), cached=lambda got: Path(got[0]))
                            or trained_sae(base, s, sizes, say))  # other ranks: found in their cache
        else:
            path, source = sae, {"kind": "given", "spec": str(sae)}
        prompts, ok = _sub(s, sizes.feature_n)
        res = FS.run_generic(base, path, prompts, ok, s.think_prompts, s.direct_prompts, top=sizes.top_features,
                             n_random=sizes.n_random, alphas=sizes.alphas, max_new_tokens=sizes.max_new_tokens,
                             reference=thinking, say=say)
        res["sae_source"] = source
        return res

    def diff() -> dict:
        from . import diff_study

        return diff_study.run(base, thinking, s.think_prompts, s.direct_prompts, s.prompts[: sizes.n], seed=seed,
                              say=say)

    def rl() -> dict:
        from ..distributed import sharing
        from . import rl_study

        if not s.organism:
            return {"status": "skipped", "reason": "the RL experiments need the organism's control model; on other "
                                                   "models run `lens rl train` (docs/rl.md)"}
        import tempfile

        from ..rl.data import from_tasks

        kw = dict(heldout=from_tasks(s.tasks), experiments=sizes.rl_experiments,
                  cfg=rl_study.quick_config(steps=sizes.rl_steps, eval_every=sizes.rl_steps // 3 or 1,
                                            eval_n=sizes.rl_n, seed=seed),
                  pass_k=sizes.rl_pass_k, pass_k_n=40,
                  contrast=(s.think_prompts, s.direct_prompts) if s.think_prompts else None)
        launched = sharing(None)
        with tempfile.TemporaryDirectory(prefix="lens-reproduce-rl-") as tmp:
            if launched is None:
                res = rl_study.run_rl_study({"base": base, "control": "organism:control"}, tmp, say=say, **kw)
            elif not launched.main:  # under a launcher rank 0 runs the RL study for the report; the others go on
                return {"status": "skipped", "reason": "run by rank 0 (under a launcher)"}
            else:  # rank 0: in a process of its own, which TRL's trainer can start without joining this job
                from .rl_alone import run_alone

                res = run_alone({"base": base.spec, "control": "organism:control"}, tmp, device=str(base.device),
                                dtype=str(base.dtype).removeprefix("torch."),
                                say=say, **kw)
        for row in res["models"].values():
            for run in row["runs"].values():
                run.pop("folder", None)  # a temporary folder, gone with the step
        return {"status": "ok", **res}

    for name, fn in (("sampling", sampling), ("hybrid", hybrid), ("cot", cot), ("feature", feature),
                     ("diff", diff), ("rl", rl)):
        step(name, fn)
    return results


def _calibration(sizes: Sizes) -> dict:
    """The hybrid study's calibration arguments (`lens.hybrid.calibrate`): the development split's size, the scales
    and the other steer layers tried."""
    return {"calibrate": sizes.hybrid_calibrate, "calibration_grid": tuple(sizes.hybrid_calibration_grid),
            "calibration_layers": (tuple(sizes.hybrid_calibration_layers) if sizes.hybrid_calibration_layers
                                   else None)}


def _organism_sae(base, sizes: Sizes):
    from lens.studies.find_feature_organism import organism_sae

    return organism_sae(base, base.n_layers // 2 if sizes.layer is None else sizes.layer, progress=False)


def sae_texts(s: Setup, base, sizes: Sizes) -> tuple[list[str], dict]:
    """(texts, what they are) for the SAE trained off the organism: the first ``sizes.sae_texts`` problems
    of the task set, each as the base reads it (its template) plain, with the chain-of-thought
    instruction and with the direct-answer instruction (the contrast the feature step ranks on)."""
    from ..evaluation.tasks import load_tasks
    from ..evaluation.templates import apply_template

    qs = [t.question for t in load_tasks(s.source, limit=sizes.sae_texts)] or [t.question for t in s.tasks]
    texts = [x for q in qs for x in apply_template(s.template, [q, q + COT_INSTRUCTION, q + DIRECT_INSTRUCTION],
                                                   base.tokenizer)]
    return texts, {"tasks": s.source, "problems": len(qs), "template": str(s.template),
                   "kinds": ["plain", "chain-of-thought instruction", "direct-answer instruction"]}


def trained_sae(base, s: Setup, sizes: Sizes, say) -> tuple[str, dict]:
    """(path, record) of the SAE the feature step uses without --sae: `saes.ondemand.sae_on_texts` at
    ``sizes.layer`` (default the middle layer) with the ``sae_*`` sizes, trained once and cached."""
    from saes.config import TrainConfig
    from saes.ondemand import REPRODUCE_SAE, sae_on_texts

    layer = base.n_layers // 2 if sizes.layer is None else sizes.layer
    batch = min(REPRODUCE_SAE.batch_size, sizes.sae_rows)
    cfg = TrainConfig(**{**REPRODUCE_SAE.to_json(), "expansion": sizes.sae_expansion, "k": sizes.sae_k,
                         "total_rows": sizes.sae_rows, "batch_size": batch,
                         "buffer_rows": max(2 * batch, min(REPRODUCE_SAE.buffer_rows, sizes.sae_rows))})
    texts, what = sae_texts(s, base, sizes)
    d, record = sae_on_texts(base, texts, layer, cfg, describe=what, say=say)
    say(f"SAE {'found in the cache' if record['cached'] else 'trained'}: {d.d_sae} latents at {record['site']}")
    return str(d.path), record


def feature_pages(base, results: dict, s: Setup, sizes: Sizes, seed: int, say) -> list[dict]:
    """Dashboard data for the top-ranked features (empty when the feature step did not run)."""
    step = results.get("feature", {})
    if step.get("status") != "ok" or not sizes.feature_pages:
        return []
    from . import feature_study as FS

    feats = [r["feature"] for r in step.get("ranking", [])[: sizes.feature_pages]]
    feats += [r["feature"] for r in step.get("steer_check", []) if r.get("kind") == "random"
              and r.get("feature") is not None]
    feats = list(dict.fromkeys(feats))  # top-ranked first, then the random controls, each once
    if s.organism:
        from ..organism import corpus as C

        texts = [d.text for d in C.generate_corpus(160, seed=seed + 99)] + s.think_prompts[:32] + s.direct_prompts[:32]
    else:
        texts = s.think_prompts[:64] + s.direct_prompts[:64] + s.prompts[:64]
    say(f"feature dashboards for {len(feats)} features over {len(texts)} texts")
    data = FS.feature_dashboards(base, step["sae"]["path"], feats, texts, seed=seed)
    if not (step.get("sae") or {}).get("evals"):
        say("SAE evaluation (the SAE was saved without one)")
        step["sae"]["evals"] = FS.sae_evals(base, step["sae"]["path"], texts)
    return data


# ------------------------------------------------------------------------------------------ tables


def _pct(e) -> str:
    if e is None:
        return "-"
    if isinstance(e, dict):
        v, lo, hi = e.get("value"), e.get("lo"), e.get("hi")
        if v is None or not math.isfinite(v):
            return "n/a"
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
            return f"{100 * v:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
        return f"{100 * v:.1f}%"
    if isinstance(e, (int, float)):
        return f"{100 * e:.1f}%" if math.isfinite(e) else "n/a"
    return str(e)


def _num(v, digits: int = 3) -> str:
    return f"{v:.{digits}g}" if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def _status_row(step: dict | None) -> list[dict] | None:
    if not step or step.get("status") != "ok":
        why = (step or {}).get("reason", "not run")
        return [{"metric": f"{(step or {}).get('status', 'not run')}", "this run": why, "paper": "-"}]
    return None


def tables(results: dict) -> list[dict]:
    """One table per finding: rows {metric, this run, paper} (paper numbers from docs/papers)."""
    out = []
    st = results.get("sampling")
    rows = _status_row(st)
    if rows is None:
        pk = st["pass_at_k"]
        kmax = str(max(int(k) for k in pk["base"]))
        rows = [
            {"metric": "pass@1 base / thinking",
             "this run": f"{_pct(pk['base']['1'])} / {_pct(pk['thinking']['1'])}",
             "paper": "MATH500 base 61.4 vs RL 77.9 (Yue et al.)"},
            {"metric": f"pass@{kmax} base / thinking",
             "this run": f"{_pct(pk['base'][kmax])} / {_pct(pk['thinking'][kmax])}",
             "paper": "k=128: base 96.2 vs RL 93.0"},
            {"metric": "k where base catches up", "this run": str(st.get("crossover_k") or f"not by k={kmax}"),
             "paper": "curves cross between k=8 and k=16"},
            {"metric": "samples in thinking format, base / thinking (a prompt that opens <think> counts "
                       "completions that close it)",
             "this run": f"{_pct(st['behaviour']['base']['thinking_rate'])} / "
                         f"{_pct(st['behaviour'].get('thinking', {}).get('thinking_rate'))}",
             "paper": "-"},
            {"metric": f"base samples that self-reflect ({st.get('reflection_detector', 'detector')})",
             "this run": _pct(st["behaviour"]["base"]["reflection_rate"]),
             "paper": "reflection already appears in base samples (no single number)"},
            {"metric": "base accuracy if reflective / if not",
             "this run": f"{_pct(st['behaviour']['base']['accuracy_if_reflective'])} / "
                         f"{_pct(st['behaviour']['base']['accuracy_if_not_reflective'])}", "paper": "-"},
        ]
        for det, r in st.get("reflection", {}).items():  # oat_zero (Liu et al.'s counting), words
            b = r["models"].get("base")
            if b is None:
                continue
            q = b["questions"]
            rows.append({"metric": f"base, {det}: samples reflecting / questions with one (reflection@{st['samples']})"
                                   " / precision / recall vs solved",
                         "this run": f"{_pct(b['reflection_rate'])} / {_pct(q['reflection_at_n'])} / "
                                     f"{_pct(q['precision'])} / {_pct(q['recall'])}",
                         "paper": "oat-zero: reflection at epoch 0, often superficial (no single number)"})
        sp = st.get("sampling_preset") or {"name": "-", "temperature": st.get("temperature"), "top_p": st.get("top_p")}
        rows.append({"metric": "sampling temperature / top-p (preset)",
                     "this run": f"{sp['temperature']} / {sp['top_p']} ({sp['name']})",
                     "paper": "Yue et al.: 0.6 / 0.95 (--sampling yue)"})
    out.append({"title": STEP_TITLES["sampling"], "rows": rows})

    st = results.get("hybrid")
    rows = _status_row(st)
    if rows is None:
        hy = st["runs"].get("none", {})
        rows = [{"metric": "accuracy base / thinking", "this run": f"{_pct(st['base'])} / {_pct(st['thinking'])}",
                 "paper": "-"},
                {"metric": "hybrid accuracy", "this run": _pct(hy.get("accuracy")), "paper": "-"},
                {"metric": "gap recovered (hybrid)",
                 "this run": _pct({"value": hy.get("gap_recovered"), "lo": (hy.get("gap_ci") or [None, None])[0],
                                   "hi": (hy.get("gap_ci") or [None, None])[1]}),
                 "paper": "up to 91% (Venhoff et al.); repo artifacts 87.8% down to 0% by pair"},
                {"metric": "tokens steered (hybrid, paper mode: steered = gated steps)",
                 "this run": _pct(hy.get("fraction_steered")), "paper": "12%"}]
        la = st["runs"].get("unsteered_allowed")
        if la:
            rows.append({"metric": "tokens steered (mode unsteered_allowed; not the paper's measure)",
                         "this run": f"{_pct(la.get('fraction_steered'))} (gated {_pct(la.get('fraction_gated'))})",
                         "paper": "-"})
        rows += [{"metric": f"gap recovered, {'mode' if k == 'unsteered_allowed' else 'ablation'} {k}",
                  "this run": _pct(r.get("gap_recovered")), "paper": "-"} for k, r in st["runs"].items() if k != "none"]
    out.append({"title": STEP_TITLES["hybrid"], "rows": rows})

    st = results.get("diff")
    rows = _status_row(st)
    if rows is None:
        sep = st["separability"]
        best = max(sep, key=lambda r: r["auroc"])
        acts = {r["site"]: r for r in st["activations"]}
        layers = [r for r in st["weights"] if str(r["group"]).startswith("layer")]
        rows = [{"metric": "best layer for the base's T-vs-D direction (held-out AUROC)",
                 "this run": f"{best['site']}: {_num(best['auroc'])}", "paper": "-"},
                {"metric": "cosine(mean activation change, base direction) at that layer",
                 "this run": _num(acts.get(best["site"], {}).get("cosine_with_direction", float("nan"))),
                 "paper": "-"},
                {"metric": "relative weight change, mean over layers",
                 "this run": _num(sum(r["relative_change"] for r in layers) / max(len(layers), 1)), "paper": "-"},
                {"metric": "fraction of parameters changed, mean over layers",
                 "this run": _pct(sum(r["fraction_changed"] for r in layers) / max(len(layers), 1)),
                 "paper": "-"}]
        sam, hyb = results.get("sampling") or {}, results.get("hybrid") or {}
        if hyb.get("status") == "ok":
            rows.append({"metric": "greedy accuracy base -> thinking",
                         "this run": f"{_pct(hyb['base'])} -> {_pct(hyb['thinking'])}",
                         "paper": "1-shot RLVR MATH500 36.0 -> 73.6; spurious rewards +16-25 points (Qwen2.5-Math)"})
        elif sam.get("status") == "ok":
            rows.append({"metric": "pass@1 base -> thinking",
                         "this run": f"{_pct(sam['pass_at_k']['base']['1'])} -> "
                                     f"{_pct(sam['pass_at_k']['thinking']['1'])}",
                         "paper": "1-shot RLVR MATH500 36.0 -> 73.6; spurious rewards +16-25 points (Qwen2.5-Math)"})
    out.append({"title": STEP_TITLES["diff"], "rows": rows})
    out.append({"title": STEP_TITLES["rl"], "rows": rl_rows(results.get("rl"))})

    st = results.get("cot")
    rows = _status_row(st)
    if rows is None:
        by = st["by_reasoning"]
        rows = [{"metric": "greedy accuracy", "this run": _pct(st["greedy"]), "paper": "Phi-2 GSM8K 32.7 (unofficial)"},
                {"metric": f"CoT-decoding accuracy (k={st['k']}, max)", "this run": _pct(st["cot"]),
                 "paper": "Phi-2 GSM8K 39.8 (unofficial)"},
                {"metric": "CoT-decoding accuracy (sum per answer)", "this run": _pct(st["cot_sum"]), "paper": "-"},
                {"metric": "mean answer confidence, reasoning / non-reasoning branches",
                 "this run": f"{_num(by['reasoning']['mean_confidence'])} / "
                             f"{_num(by['non_reasoning']['mean_confidence'])}",
                 "paper": "reasoning paths are more confident (qualitative)"},
                {"metric": "most confident branch reasons", "this run": _pct(by["reasoning"]["share_of_best"]),
                 "paper": "-"},
                {"metric": "greedy branch reasons", "this run": _pct(by["greedy_reasoning_rate"]), "paper": "-"}]
    out.append({"title": STEP_TITLES["cot"], "rows": rows})

    st = results.get("feature")
    rows = _status_row(st)
    if rows is None:
        sm = st.get("summary", {})
        rc = [r for r in st.get("steer_check", []) if r.get("kind") == "random"]
        best_rand = max(rc, key=lambda r: r["accuracy"]) if rc else None
        evals = (st.get("sae") or {}).get("evals") or {}
        rows = [{"metric": "direct (unsteered base) accuracy", "this run": _pct(sm.get("baseline_accuracy")),
                 "paper": "Llama-3.1-8B GSM8K 24.5 (not confirmed)"},
                {"metric": f"best steered accuracy (feature {sm.get('best_feature')}, alpha {sm.get('best_alpha')})",
                 "this run": _pct(sm.get("best_accuracy")), "paper": "73.3 (not confirmed)"},
                {"metric": "best random-feature control accuracy",
                 "this run": _pct(best_rand["accuracy"]) if best_rand else "-", "paper": "26.1 (not confirmed)"},
                {"metric": "reasoning-format answers when steered", "this run": _pct(sm.get("best_reasoning_rate")),
                 "paper": "-"},
                {"metric": "thinking model (unsteered) accuracy", "this run": _pct(sm.get("reference_accuracy")),
                 "paper": "Llama-3.3-70B: 88.8 steered vs 96.1 with CoT"},
                {"metric": "tokens when steered", "this run": _num(sm.get("best_tokens_mean")),
                 "paper": "53 steered vs 268 with CoT (70B)"},
                {"metric": "SAE explained variance / L0 / dead",
                 "this run": f"{_num(evals.get('explained_variance'))} / {_num(evals.get('l0'))} / "
                             f"{_pct(evals.get('dead_fraction'))}", "paper": "-"},
                {"metric": "steering only at the last prompt token (P-1, whose forward makes the first new token)",
                 "this run": str(sm.get("all_first_step_only")),
                 "paper": "first position only"},
                {"metric": "SAE used", "this run": _sae_used(st), "paper": "-"}]
    out.append({"title": STEP_TITLES["feature"], "rows": rows})
    return out


def rl_rows(st: dict | None) -> list[dict]:
    """Finding 3's RL table: each run's held-out greedy accuracy before -> after, then the targets."""
    rows = _status_row(st)
    if rows is not None:
        return rows
    papers = st.get("papers", {})
    rows = []
    for name, m in st["models"].items():
        for exp, r in m["runs"].items():
            if r.get("status") == "skipped":
                rows.append({"metric": f"{name}: {exp}", "this run": f"skipped: {r['reason']}", "paper": "-"})
                continue
            paper = papers.get("one_shot") if exp == "one_shot" else papers.get("spurious") if exp in (
                "format", "random", "incorrect") else papers.get("cft", "-") if exp == "cft" else "-"
            what = (f"critiques of {r.get('n_critiques')} wrong solutions of 1 problem, SFT" if exp == "cft" else
                    f"{r['reward']} reward, {r['n_problems']} problem(s)")
            rows.append({"metric": f"{name}: {exp} ({what}), held-out greedy accuracy",
                         "this run": f"{_pct(r['before'])} -> {_pct(r['after'])}", "paper": paper})
        pk = m.get("pass_at_k")
        if pk:
            k = str(max(int(x) for x in pk["before"]))
            rows.append({"metric": f"{name}: pass@{k} before -> after 1-shot RLVR",
                         "this run": f"{_pct(pk['before'][k])} -> {_pct(pk['after'][k])}",
                         "paper": papers.get("pass_k", "-")})
    for t in st.get("targets", []):
        rows.append({"metric": f"target: {t['target']}",
                     "this run": f"{t['value']:+.1%} ({'met' if t['ok'] else 'missed'})", "paper": "-"})
    return rows


def _sae_used(step: dict) -> str:
    src = step.get("sae_source") or {}
    sae = step.get("sae") or {}
    if src.get("kind") == "trained":
        tx = src.get("texts") or {}
        cfg = src.get("config") or {}
        return (f"trained here ({'cached' if src.get('cached') else 'this run'}): {cfg.get('architecture')} "
                f"k={cfg.get('k')}, {sae.get('d_sae')} latents at {src.get('site')}, {cfg.get('total_rows')} rows "
                f"over {tx.get('tokens')} tokens of {tx.get('texts')} prompts of {tx.get('tasks')}")
    if src.get("kind") == "given":
        return f"given: {src.get('spec')} ({sae.get('d_sae')} latents at {sae.get('site')})"
    return f"{sae.get('path', '-')} ({sae.get('d_sae')} latents at {step.get('site', sae.get('site'))})"


def markdown(results: dict) -> str:
    """results.md: a header and one table per finding."""
    meta = results.get("meta", {})
    lines = [f"# lens reproduce: {meta.get('base')} vs {meta.get('thinking')} on {meta.get('tasks')}", "",
             f"seed {meta.get('seed')}; sizes {json.dumps(meta.get('sizes', {}))}; "
             f"wall time {meta.get('wall_s', '?')} s. Intervals are 95%. Paper numbers are the papers' own "
             "(see the notes on each finding); the organism is a controlled testbed, not a real LLM.", ""]
    for t in results.get("tables", []):
        lines += [f"## {t['title']}", "", "| metric | this run | paper |", "|---|---|---|"]
        for r in t["rows"]:
            cells = [str(r.get(c, "")).replace("|", "\\|").replace("\n", " ") for c in ("metric", "this run", "paper")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ entry point


def without_run_facts(results: dict) -> dict:
    """`results` with its `meta` stripped of `RUN_FACTS`: what two runs of the same job must agree on."""
    return {**results, "meta": {k: v for k, v in results.get("meta", {}).items() if k not in RUN_FACTS}}


def default_out_dir(root: str | Path = "reports") -> Path:
    return Path(root) / datetime.now(timezone.utc).strftime("reproduce-%Y%m%d-%H%M%S")


def reproduce(
    out_dir: str | Path | None = None,
    *,
    base="organism:base",
    thinking="organism:thinking",
    tasks: str = "organism",
    n: int | None = None,
    samples: int | None = None,
    seed: int = 0,
    progress: bool = True,
    sizes: Sizes | None = None,
    steps=STEPS,
    sae: str | None = None,
    template: str | None = None,
    load_kwargs: dict | None = None,
    overwrite: bool = False,
    thinking_template: str | None = None,
) -> dict:
    """Run the findings on (base, thinking) over ``tasks``; write index.html, results.md, results.json to out_dir.

    base, thinking: model specs (``lens.load_model``) or loaded ``Model`` objects.
    load_kwargs: passed to ``lens.load_model`` for specs (``device``, ``dtype``, ``device_map``).
    template / thinking_template: each model's prompt template (see `setup`); the pair may differ in
    special tokens and chat templates (``lens.pairs``), and ``meta.pair`` records both templates and
    the token map (what was mapped through text).
    n / samples override ``sizes.n`` (and the other steps' problem counts when they are larger) and
    ``sizes.samples``. Returns the results dict (with ``meta.out_dir``).
    out_dir must be new, empty or a report folder (replaced only with ``overwrite=True``, keeping the
    user's other files there); the three files are written as one atomic step at the end, and a second
    run into the same folder meanwhile is refused.
    Under `torchrun` / `accelerate launch` every rank runs this call: sampling, CoT-decoding, the
    steer-check, the hybrid's runs and the model-pair diff split their work across the ranks
    (`lens.distributed.data_parallel`), the RL step runs on rank 0 alone in a process of its own
    (`lens.studies.rl_alone`), the other parts run whole on every rank, and rank 0 alone writes
    the report (equal to one process's apart from timings); the other ranks return the steps' results
    without ``meta``.
    """


    sizes = sizes or Sizes()
    if n is not None:
        sizes.n = n
        sizes.hybrid_n, sizes.cot_n, sizes.feature_n = (min(v, n) for v in (sizes.hybrid_n, sizes.cot_n,
                                                                             sizes.feature_n))
    if samples is not None:
        sizes.samples = samples
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise LensError(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    from ..distributed import data_parallel

    out = Path(out_dir) if out_dir is not None else default_out_dir()
    with data_parallel() as r:  # under a launcher every rank runs the steps; rank 0 alone writes the report
        if not r.main:
            return _reproduce(out, base, thinking, tasks, sizes, seed, False, steps, sae, template, load_kwargs,
                              thinking_template, write=False)
        check_output(out, "report", overwrite=overwrite)
        with writer_lock(out, "report"):
            return _reproduce(out, base, thinking, tasks, sizes, seed, progress, steps, sae, template, load_kwargs,
                              thinking_template)


def _reproduce(out: Path, base, thinking, tasks: str, sizes: Sizes, seed: int, progress: bool, steps,
               sae: str | None, template: str | None, load_kwargs: dict | None,
               thinking_template: str | None = None, write: bool = True) -> dict:
    import torch

    from ..models import load_pair
    from ..pairs import pair_facts

    t_start, c_start = time.perf_counter(), time.process_time()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(STEPS) + 2, desc="reproduce", unit="step", dynamic_ncols=True)

    def say(msg: str) -> None:
        if bar is not None:
            if msg.startswith("== "):
                bar.set_description(msg[3:])
            bar.write(f"[{time.perf_counter() - t_start:6.0f}s] {msg}")

    torch.manual_seed(seed)
    say("== loading models")
    b, t = load_pair(base, thinking, **(load_kwargs or {}))
    s = setup(tasks, b, sizes, template, thinking=t, thinking_template=thinking_template,
              extra=sizes.hybrid_calibrate if "hybrid" in steps else 0)  # other pairs: the calibration split
    if bar is not None:
        bar.update(1)
    timings: dict = {}
    results = run_steps(b, t, s, sizes, seed=seed, steps=steps, sae=sae, say=say, timings=timings,
                        tick=(lambda: bar.update(1)) if bar is not None else (lambda: None))
    if not write:
        return results
    t0 = time.perf_counter()
    feats: list[dict] = []
    try:
        feats = feature_pages(b, results, s, sizes, seed, say)
    except Exception as e:  # noqa: BLE001 - the report still gets written without feature pages
        say(f"feature dashboards failed: {type(e).__name__}: {e}")
        timings["feature_pages_error"] = f"{type(e).__name__}: {e}"
    timings["feature_pages"] = round(time.perf_counter() - t0, 1)
    results["meta"] = {"base": b.spec, "thinking": t.spec, "tasks": str(tasks), "seed": seed, "sizes": sizes.as_dict(),
                       "organism": s.organism, "models": {"base": b.facts(), "thinking": t.facts()},
                       "started": started, "torch_threads": torch.get_num_threads(), "timings_s": timings,
                       "pair": {**pair_facts(b, t), "prompt_templates": s.templates,
                                "example_prompts": {"base": s.prompts[:1], "thinking": s.thinking_prompts[:1]}}}
    results["tables"] = tables(results)
    say("== writing the report")
    t0 = time.perf_counter()
    from ..dashboards import build_report

    report = build_report(results, feats, title="lens reproduce")
    html = report.render()
    timings["report"] = round(time.perf_counter() - t0, 1)
    results["meta"]["wall_s"] = round(time.perf_counter() - t_start, 1)
    results["meta"]["cpu_s"] = round(time.process_time() - c_start, 1)
    results["meta"]["out_dir"] = str(out)
    results["meta"]["report_bytes"] = len(html.encode("utf-8"))
    with atomic_folder(out, "report") as tmp:  # index.html, results.json, results.md: one step
        (tmp / "index.html").write_text(html, encoding="utf-8")
        (tmp / "results.json").write_text(json.dumps(results, indent=1, default=_json_default, allow_nan=True))
        (tmp / "results.md").write_text(markdown(results))
        for f in tmp.iterdir():
            os.chmod(f, file_mode())
    if bar is not None:
        bar.update(bar.total - bar.n)
        bar.close()
    return results


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "as_dict"):
        return o.as_dict()
    return str(o)
