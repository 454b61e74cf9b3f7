"""`lens find-feature`: rank SAE features by activation difference between two conditions; steer-check them."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from .common import TEMPLATE_HELP, console, emit_json, load, load_options, table, templated
from .steer_cmd import parse_metric
from .validate import check_layer, choice, non_negative, positive, read_inputs, read_lines


def _condition(model, path: Path, site: str, select: str, too_long: str = "error", template: str | None = None):
    """Rows for one condition: a capture folder (read as is) or a JSONL of inputs (captured now)."""
    from saes.search import texts_rows

    from ..errors import LensError
    from ..selection import LastPromptToken, parse_select

    if path.is_dir():
        from ..capture_folder import CaptureFolder

        return CaptureFolder(path)
    if model is None:
        raise LensError(f"{path} is a JSONL of inputs: give --model so they can be run (or pass capture folders)")
    items = list(templated(read_inputs(path), template, model))
    if isinstance(parse_select(select), LastPromptToken):  # a bare text is all prompt
        items = [{"prompt": x, "completion": ""} if isinstance(x, str) else x for x in items]
    return texts_rows(model, items, site, select, too_long=too_long)


def _eval_set(path: Path):
    from ..errors import LensError, check_text

    prompts, answers = [], []
    for n, r in read_lines(path, "--eval file"):
        if not isinstance(r, dict) or "prompt" not in r or "answer" not in r:
            raise LensError(f"{path}:{n}: each line must be an object with \"prompt\" and \"answer\"")
        prompts.append(check_text(f'{path}:{n}: "prompt"', r["prompt"]))
        answers.append(r["answer"])
    if not prompts:
        raise LensError(f"--eval file {path} is empty; write one {{\"prompt\", \"answer\"}} object per line")
    return prompts, answers


def _floats(text: str | None):
    from ..errors import LensError, check_number

    if not text:
        return None
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LensError(f"--alphas must be comma-separated numbers, got {text!r}") from None
    for v in values:
        check_number("--alphas", v)
    return values or None


def find_feature_cmd(
    ctx: typer.Context,
    model: str = typer.Option(None, "--model", "-m", help="model spec (default: the bundled organism)"),
    sae: str = typer.Option(None, "--sae", help="SAE folder or sae_lens RELEASE/ID (default organism: cached/trained)"),
    pos: Path = typer.Option(None, help="condition A: JSONL of inputs, or a capture folder"),
    neg: Path = typer.Option(None, help="condition B: JSONL of inputs, or a capture folder"),
    select: str = typer.Option("last_prompt", help="token selection for JSONL conditions (see lens capture)"),
    too_long: str = typer.Option("error", "--too-long", callback=choice("error", "truncate"),
                                 help="a JSONL input longer than the model's context: error or truncate"),
    layer: int = typer.Option(None, help="organism only: SAE layer (default the middle one)", callback=non_negative),
    top: int = typer.Option(10, help="features to show", callback=positive),
    sort_by: str = typer.Option("mean_diff", help="mean_diff | auroc | effect_size | freq_diff",
                                callback=choice("mean_diff", "auroc", "effect_size", "freq_diff")),
    steer_check: bool = typer.Option(False, "--steer-check", help="steer the top features at one position "
                                     "per prompt (--steer-at)"),
    steer_at: str = typer.Option("last_prompt_token", "--steer-at", "--where",
                                 help="steer-check position (--where, as lens steer names it): last_prompt_token "
                                      "(P-1, whose forward produces the first generated token; the paper's first "
                                      "step) or first_generated_token (P, the first generated token itself)",
                                 callback=choice("last_prompt_token", "first_generated_token")),
    steer_top: int = typer.Option(5, help="how many top features to steer-check", callback=positive),
    eval_set: Path = typer.Option(None, "--eval", help="JSONL {prompt, answer} for the steer-check (non-organism)"),
    alphas: str = typer.Option(None, help="comma-separated steering strengths (default: from the residual norm)"),
    n: int = typer.Option(100, "--n", "--problems", help="held-out problems for the steer-check; under torchrun "
                          "write --problems (torchrun reads --n as one of its own options)", callback=positive),
    n_random: int = typer.Option(3, help="random-feature controls", callback=non_negative),
    metric: str = typer.Option(None, "--metric", help="steer-check behaviour detector instead of the built-in "
                               "reasoning-format one: regex:PATTERN or py:MODULE:FUNCTION (text -> bool); its rate "
                               "is the rows' reasoning_rate"),
    max_new_tokens: int = typer.Option(110, callback=positive),
    dashboard: Path = typer.Option(None, "--dashboard", help="write a dashboard page per shown feature to "
                                   "DIR/index.html and link each ranked feature to its page"),
    template: str = typer.Option(None, "--template", help=TEMPLATE_HELP + " (JSONL conditions and --eval prompts)"),
    exact_limit: int = typer.Option(1 << 24, "--exact-limit", help="non-zero activations kept for the exact AUROC "
                                    "(8 bytes each, about 64 at the final sort; raise it for larger sets that fit in "
                                    "memory; 0: always the streamed histogram, whose error bound each row reports)",
                                    callback=non_negative),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Rank SAE features by how much more they fire under condition A than B; --steer-check tests them causally.

    With no --model/--sae/--pos/--neg it runs the organism experiment: contrast "prompt marked T
    (think)" vs "marked D (direct)" at the last prompt token, on an SAE trained (once, cached) on
    the base model's middle layer.
    """
    from ..distributed import data_parallel

    with data_parallel() as r:  # under torchrun / accelerate launch: the steer-check's runs split across ranks
        _find_feature(ctx, model, sae, pos, neg, select, too_long, sort_by, top, layer, steer_check, steer_at,
                      steer_top, eval_set, alphas, n, n_random, max_new_tokens, metric, dashboard, as_json, r.main,
                      template, exact_limit)


def _find_feature(ctx, model, sae, pos, neg, select, too_long, sort_by, top, layer, steer_check, steer_at, steer_top,
                  eval_set, alphas, n, n_random, max_new_tokens, metric, dashboard, as_json, main,
                  template=None, exact_limit=None) -> None:
    from ..distributed import first_on_rank0
    from ..errors import LensError
    from ..interventions import Where

    say = None if as_json or not main else (lambda msg: console.print(f"[dim]{escape(msg)}[/]"))
    strengths = _floats(alphas)  # bad options fail before any model loads
    at = Where(steer_at)
    shows = parse_metric(metric)
    if model is None and pos is None and neg is None and (sae is None or eval_set is None):
        from lens.studies.find_feature_organism import run_find_feature_organism

        placed = ref = None
        if load_options(ctx):  # `lens --device cuda find-feature`: both organism models placed
            placed, ref = load(ctx, "organism:base"), load(ctx, "organism:thinking")
        if layer is not None:
            placed = placed or load(ctx, "organism:base")
            check_layer("--layer", layer, placed.n_layers)
        if sae is None:  # under a launcher: the cached SAE is trained once, by rank 0, and sent to every rank's cache
            from lens.studies.find_feature_organism import organism_sae

            def train():
                base = placed or load(ctx, "organism:base")
                return organism_sae(base, base.n_layers // 2 if layer is None else layer, progress=say is not None)

            first_on_rank0(train, cached=lambda d: d.path)
        out = run_find_feature_organism(placed, sae=sae, reference=ref if ref is not None else True, layer=layer,
                                        steer_check=steer_check, n=n, alphas=strengths, top=steer_top,
                                        n_random=n_random, max_new_tokens=max_new_tokens, progress=say, where=at,
                                        behaviour=shows, exact_limit=exact_limit)
        if "steer_check" in out:
            out.update({"steered_at": str(at), **({"metric": metric} if metric else {})})
        out["ranking"] = out["ranking"][:max(top, 1)]
        if not main:  # rank 0 writes the pages and reports for the whole job
            return
        if dashboard is not None:
            from ..organism import corpus as C
            from ..studies import organism_inputs as O

            think, direct = O.marker_contrast()
            texts = [d.text for d in C.generate_corpus(160, seed=99)] + list(think[:32]) + list(direct[:32])
            _link(out, placed or "organism:base", texts, dashboard, say, ctx)
        _print(out, as_json)
        return
    if sae is None or pos is None or neg is None:
        raise LensError("give --sae, --pos and --neg (or none of --model/--pos/--neg to run the organism)")
    from saes.io import load_sae
    from saes.search import rank_features

    from ..selection import Example, parse_select

    parse_select(select)
    for path in (pos, neg):  # a JSONL condition is read again after the model loads; its errors come first
        if not path.is_dir():
            read_inputs(path)
    checks = _eval_set(eval_set) if steer_check and eval_set is not None else None
    m = load(ctx, model) if model else None
    d = load_sae(sae, m)
    if d.site is None:
        raise LensError(f"SAE {sae} does not record its site")
    r = rank_features(d, _condition(m, pos, d.site, select, too_long, template),
                      _condition(m, neg, d.site, select, too_long, template), sort_by=sort_by,
                      exact_limit=exact_limit)
    out = {"site": d.site, "sae": d.describe(), "ranking": r.as_dicts(top),
           "contrast": {"pos": str(pos), "neg": str(neg), "select": select, "n_pos": r.n_pos, "n_neg": r.n_neg},
           "ranking_throughput": {"rows_x_features_per_s": r.throughput, "seconds": r.seconds}}
    if steer_check:
        if m is None or eval_set is None:
            raise LensError("--steer-check needs --model and --eval FILE (JSONL with prompt and answer)")
        from saes.steer_check import steer_check as run_check
        from saes.steer_check import summarize

        from ..evaluation.answers import check

        prompts, answers = checks
        prompts = list(templated(prompts, template, m))
        a = strengths or [4.0, 8.0, 16.0]
        rows = run_check(m, d, r.features[:steer_top], prompts, lambda i, t: check(t, answers[i]), alphas=a,
                         n_random=n_random, random_pool=r.neutral() or None, max_new_tokens=max_new_tokens,
                         progress=say, where=at, is_reasoning=shows)
        out.update({"steer_check": rows, "summary": summarize(rows), "alphas": a, "steered_at": str(at),
                    **({"metric": metric} if metric else {})})
    if not main:
        return
    if dashboard is not None:
        if m is None or pos.is_dir() or neg.is_dir():
            raise LensError("--dashboard needs --model and JSONL conditions (their texts are the pages' contexts)")
        texts = [Example.of(x).text for p in (pos, neg) for x in read_inputs(p)]
        _link(out, m, texts, dashboard, say, ctx)
    _print(out, as_json)


def _link(out: dict, model, texts: list[str], folder: Path, say, ctx: typer.Context | None = None) -> None:
    """Write the feature pages and put each ranked feature's page address into ``out["ranking"]``."""
    from ..models import Model
    from ..studies.feature_study import write_feature_pages

    m = model if isinstance(model, Model) else load(ctx, model)
    if say:
        say(f"dashboard pages for {len(out['ranking'])} features over {len(texts)} texts")
    links = write_feature_pages(m, out["sae"]["path"], out["ranking"], texts, str(folder),
                                steer_check=out.get("steer_check") or ())
    for r in out["ranking"]:
        r["dashboard"] = links[int(r["feature"])]
    out["dashboard"] = str(Path(folder) / "index.html")


def _print(out: dict, as_json: bool) -> None:
    if as_json:
        emit_json(out)
        return
    console.print(f"SAE {out['sae'].get('path')} at {out['site']} ({out['sae'].get('d_sae')} features)")
    rows = [{"feature": r["feature"], "mean_diff": r["mean_diff"], "auroc": r["auroc"], "freq_pos": r["freq_pos"],
             "freq_neg": r["freq_neg"], "effect_size": r["effect_size"],
             **({"page": "#" + r["dashboard"].split("#")[-1]} if "dashboard" in r else {})}
            for r in out["ranking"]]
    console.print(table("features ranked by activation difference (pos - neg)", rows))
    approx = [r for r in out["ranking"] if r.get("auroc_method") == "histogram"]
    if approx:
        console.print(f"auroc: histogram approximation (over the exact limit); |error| <= "
                      f"{max(r['auroc_max_error'] for r in approx):.3f} on the rows shown (auroc_max_error in --json)")
    elif out["ranking"]:
        console.print("auroc: exact (rank-based, ties counted half)")
    if "dashboard" in out:
        console.print(f"feature pages: {out['dashboard']} (one per feature: index.html#feature-N)")
    if "steer_check" in out:
        sc = [{"kind": r["kind"], "feature": r["feature"], "alpha": r["alpha"], "accuracy": r["accuracy"],
               out.get("metric", "reasoning"): r["reasoning_rate"], "tokens": r["tokens_mean"],
               "only_there": r.get("only_at_where", r["first_step_only"])}
              for r in out["steer_check"]]
        where = out.get("steered_at", "the last prompt token only (position P-1)")
        console.print(table(f"steer-check: one feature added at {where}", sc))
        console.print(table("summary", list(out["summary"].items())))
