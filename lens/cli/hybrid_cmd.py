"""`lens hybrid`: the hybrid study (base steered where the thinking model would act differently)."""

from __future__ import annotations

import typer

from .common import PAPER_PAIR_HELP, console, emit_json, given, paper_pair_models, table
from .validate import check_layer, choice, non_negative, positive, positive_float


def parse_grid(text: str, flag: str = "--calibration-grid") -> tuple[float, ...]:
    """Scales from "0,0.5,1": non-negative numbers, at least one (`flag` names the option in an error)."""
    from ..errors import LensError
    from ..hybrid.calibrate import check_grid

    try:
        return check_grid([float(x) for x in text.split(",") if x.strip()])
    except (ValueError, LensError):
        raise LensError(f"{flag} {text!r}: give comma-separated non-negative numbers, "
                        "e.g. 0,0.5,1,2,3") from None


def parse_layers(text: str | None, flag: str = "--calibration-layers") -> tuple[int, ...] | None:
    """Layers from "1,2,3" (None when not given; `flag` names the option in an error)."""
    from ..errors import LensError

    if text is None:
        return None
    try:
        layers = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        layers = ()
    if not layers or min(layers) < 0:
        raise LensError(f"{flag} {text!r}: give comma-separated layer numbers, e.g. 1,2,3")
    return layers


def hybrid_cmd(
    ctx: typer.Context,
    base: str = typer.Option("organism:base", "--base"),
    thinking: str = typer.Option("organism:thinking", "--thinking"),
    n: int = typer.Option(100, "--n", "--problems", help="held-out problems; under torchrun write --problems "
                          "(torchrun reads --n as one of its own options)", callback=positive),
    layer: int = typer.Option(None, "--layer", "--steer-layer",
                              help="steering layer (default 1 on the organism, where its reasoning direction acts; "
                                   "the paper's on a pair it studied; else the middle layer)", callback=non_negative),
    read_layer: int = typer.Option(None, "--read-layer", callback=non_negative,
                                   help="layer where the thinking model is read for the category (the taxonomy "
                                        "SAE's layer; default the paper's SAE layer on a pair it studied, else the "
                                        "steering layer)"),
    norm_frac: float = typer.Option(0.5, help="vector norm as a fraction of the mean residual norm",
                                    callback=positive_float),
    selector: str = typer.Option("taxonomy", help="taxonomy (SAE argmax latent) or nearest (cosine)",
                                 callback=choice("taxonomy", "nearest")),
    tasks: str = typer.Option(None, help="other pairs: gsm8k, math500, or a JSONL of question/answer rows"),
    template: str = typer.Option(None, help="other pairs: the base's prompt template (default user_assistant, "
                                            "the paper's 'User: {q}\\nAssistant:'; plain, r1_zero, chat, ...)"),
    thinking_template: str = typer.Option(None, "--thinking-template",
                                          help="other pairs: the thinking model's prompt template (default: its "
                                               "own chat template when its tokenizer has one, else --template)"),
    max_new_tokens: int = typer.Option(100, "--max-new-tokens", callback=positive),
    no_guardrail_coefficient: float = typer.Option(
        0.5, "--no-guardrail-coefficient", callback=positive_float,
        help="the coefficient the no_guardrail ablation steers with (hybrid_token.py's first, 0.5); one of the "
             "sweep 0.1..1.0"),
    calibrate: int = typer.Option(0, "--calibrate", callback=non_negative,
                                  help="rescale the bias and each category vector by the factor of "
                                       "--calibration-grid under which the hybrid is most accurate on this many "
                                       "problems apart from the evaluated ones (the organism's training problems; "
                                       "on other pairs the task set's problems after the evaluated and trace "
                                       "ones); 0: no calibration"),
    calibration_grid: str = typer.Option("0,0.5,1,2,3", "--calibration-grid",
                                         help="comma-separated scales tried by --calibrate"),
    calibration_layers: str = typer.Option(None, "--calibration-layers",
                                           help="with --calibrate: other steer layers each category may move to "
                                                "(comma separated); each category keeps the layer and scale under "
                                                "which the hybrid is most accurate on the training problems"),
    vectors: str = typer.Option("means", "--vectors", callback=choice("means", "optimised"),
                                help="means: difference of means (the paper's second version); optimised: trained "
                                     "so the steered base predicts the thinking model's steps (its first)"),
    steer_positions: str = typer.Option("newest", "--steer-positions", callback=choice("newest", "all"),
                                        help="newest: a candidate nudges the newest position (hybrid_eval.py); "
                                             "all: a full forward steered at every position (hybrid_token.py)"),
    candidate_batch: int = typer.Option(32, "--candidate-batch", callback=positive,
                                        help="the most sweep candidates (gated prompt x coefficient) in one base "
                                             "forward; lower it if the sweep runs out of memory (same tokens)"),
    vector_steps: int = typer.Option(60, "--vector-steps", callback=positive,
                                     help="--vectors optimised: Adam steps per vector"),
    vectors_dir: str = typer.Option(None, "--vectors-dir",
                                    help="keep the vectors here as direction artifacts; a later run on the same "
                                         "base, site, method and categories loads them"),
    force_thinking: bool = typer.Option(False, "--force-thinking",
                                        help="organism pairs: both models' prompts end with the think tag, so the "
                                             "gap is over the base's own reasoning and the hybrid steers inside it"),
    categories: int = typer.Option(None, "--categories", callback=positive,
                                   help="reasoning categories of the taxonomy (latents of its SAE; default the "
                                        "paper's on a pair it studied, else 5)"),
    paper_pair: str = typer.Option(None, "--paper-pair", help=PAPER_PAIR_HELP),
    batch_size: int = typer.Option(None, "--batch-size", callback=positive,
                                   help="prompts per batch of every run (default 64 on the organism, 16 on other "
                                        "pairs); under torchrun / accelerate launch the ranks share the batches"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Accuracy of base, thinking and hybrid, gap recovered, fraction of tokens steered, and the ablations.

    On the bundled organism the category vectors come from its labelled traces; on other pairs
    (--base, --thinking, --tasks) from an unsupervised taxonomy of the thinking model's sentences.
    Under torchrun / accelerate launch each rank runs its share of every run's batches and rank 0 alone
    reports (the result equals one process's).
    """
    from ..errors import LensError
    from .common import load_both

    say = None if as_json else (lambda msg: console.print(f"[dim]{msg}[/]"))
    if paper_pair is not None:
        base, thinking = paper_pair_models(paper_pair, models_named=given(ctx, "base") or given(ctx, "thinking"))
        if tasks is None or tasks.lower() == "organism":
            raise LensError(f"--paper-pair {paper_pair}: give --tasks (gsm8k, math500 or a JSONL of question/answer "
                            "rows); the organism's problems are for the bundled pairs")
    organism = base.startswith("organism:") and thinking.startswith("organism:") and tasks in (None, "organism")
    if not organism and tasks is None:
        raise LensError("for a pair other than the bundled organism give --tasks (gsm8k, math500 or a JSONL of "
                        "question/answer rows)")
    if categories is not None and selector != "taxonomy":
        raise LensError("--categories sets the taxonomy's latents; the nearest selector has none (drop --categories)")
    if not organism and selector != "taxonomy":
        raise LensError("on other pairs the categories come from the taxonomy; drop --selector")
    if not organism and force_thinking:
        raise LensError("--force-thinking runs on the bundled organism pairs only; on other pairs give the "
                        "thinking model's prompt with --thinking-template")
    grid = parse_grid(calibration_grid)
    cal_layers = parse_layers(calibration_layers)
    if cal_layers and not calibrate:
        raise LensError("--calibration-layers is tried by the calibration; give --calibrate N as well")
    if vectors_dir is not None:
        from ..outputs import check_output

        check_output(vectors_dir, "vectors", resumable=True, flag="--vectors-dir")
    from ..distributed import init

    main = init().main  # under a launcher: join the job first, so `--device cuda` is each rank's own GPU
    say = say if main else None
    sized = {} if batch_size is None else {"batch_size": batch_size}
    b, t = load_both(ctx, base, thinking)
    check_layer("--layer", layer, b.n_layers)
    check_layer("--read-layer", read_layer, t.n_layers)
    for other in cal_layers or ():
        check_layer("--calibration-layers", other, b.n_layers)
    if organism:
        from ..studies import hybrid_organism

        res = hybrid_organism.run(b, t, n=n, layer=layer, read_layer=read_layer, norm_frac=norm_frac, selector=selector,
                                  force_thinking=force_thinking,
                                  max_new_tokens=max_new_tokens, progress=say,
                                  no_guardrail_coefficient=no_guardrail_coefficient, calibrate=calibrate,
                                  calibration_grid=grid, calibration_layers=cal_layers, data_parallel=True,
                                  vectors=vectors,
                                  vectors_dir=vectors_dir, vector_steps=vector_steps,
                                  steer_positions=steer_positions, candidate_batch=candidate_batch,
                                  n_categories=categories, **sized)
    else:
        from ..studies import hybrid_generic
        from ..studies.reproduce import Sizes, setup

        # the task set's first n problems are evaluated, the next n give the traces, then --calibrate more
        s = setup(tasks, b, Sizes(n=1, hybrid_n=n, cot_n=1, feature_n=1), template or "user_assistant", extra=calibrate,
                  thinking=t, thinking_template=thinking_template)  # each model prompted through its own template
        res = hybrid_generic.run(b, t, s.prompts, s.is_correct, s.think_prompts, s.direct_prompts, n=n,
                                 layer=layer, read_layer=read_layer, norm_frac=norm_frac, n_categories=categories,
                                 max_new_tokens=max_new_tokens, progress=say,
                                 thinking_prompts=s.thinking_prompts or None,
                                 no_guardrail_coefficient=no_guardrail_coefficient, data_parallel=True,
                                 vectors=vectors, vectors_dir=vectors_dir, vector_steps=vector_steps,
                                 steer_positions=steer_positions, candidate_batch=candidate_batch,
                                 calibrate=calibrate, calibration_grid=grid, calibration_layers=cal_layers, **sized)
        res["prompt_templates"] = s.templates
    if not main:  # rank 0 reports for the whole job
        return
    if as_json:
        emit_json(res)
        return
    rows = [{"run": "base", "accuracy": res["base"]["value"], "gap_recovered": 0.0, "steered": 0.0},
            {"run": "thinking", "accuracy": res["thinking"]["value"], "gap_recovered": 1.0, "steered": 0.0}]
    rows += [{"run": f"hybrid ({k})" if k != "none" else "hybrid (paper mode)", "accuracy": v["accuracy"]["value"],
              "gap_recovered": v["gap_recovered"], "steered": v["fraction_steered"], "gated": v["fraction_gated"]}
             for k, v in res["runs"].items()]
    console.print(table(f"hybrid on {n} held-out problems, {res['site']}", rows))
    st = res.get("settings")
    if st:
        src = st["from"]
        pair = f"; the hybrid paper's pair {st['paper_pair']['name']}" if st["paper_pair"] else ""
        console.print(f"steer layer {st['steer_layer']} ({src['steer_layer']}), read layer {st['read_layer']} "
                      f"({src['read_layer']}), {st['categories']} categories ({src['categories']}){pair}", markup=False)
    cal = res.get("vectors", {}).get("calibration")
    if cal:
        scales = ", ".join(f"{k} x{v:g}" for k, v in cal["category_scales"].items())
        console.print(f"calibrated on {cal['n']} development problems: bias x{cal['bias_scale']:g}, {scales}",
                      markup=False)
