"""`lens reproduce`: the five findings on a model pair, as one report folder (index.html, results.md/json)."""

from __future__ import annotations

import typer

from .common import PAPER_PAIR_HELP, console, emit_json, given, load_both, paper_pair_models, table
from .validate import check_layer, choice, non_negative, number, positive, positive_float


def reproduce_cmd(
    ctx: typer.Context,
    out: str = typer.Option(None, "--out", help="report folder (default: reports/reproduce-<UTC time>)"),
    base: str = typer.Option("organism:base", "--base", help="base model spec"),
    thinking: str = typer.Option("organism:thinking", "--thinking", help="post-trained model spec"),
    tasks: str = typer.Option("organism", "--tasks", help="organism | gsm8k | math500 | path.jsonl"),
    organism: str = typer.Option(None, "--organism", help="a bundled pair by name: sums (the default pair) or "
                                 "verifier or verifier-rl (checked traces up to 220 tokens; the hybrid with "
                                 "optimised vectors inside forced thinking); sets --base and --thinking"),
    n: int = typer.Option(None, "--n", "--problems", help="problems (sampling; caps the other steps' counts too); "
                          "under torchrun write --problems (torchrun reads --n as one of its own options)",
                          callback=positive),
    samples: int = typer.Option(None, "--samples", help="samples per problem for pass@k", callback=positive),
    seed: int = typer.Option(0, "--seed", callback=non_negative),
    hybrid_n: int = typer.Option(None, "--hybrid-n", help="problems for the hybrid", callback=positive),
    paper_pair: str = typer.Option(None, "--paper-pair", help=PAPER_PAIR_HELP),
    hybrid_categories: int = typer.Option(None, "--hybrid-categories", callback=positive,
                                          help="the hybrid taxonomy's categories (default the paper's on a pair it "
                                               "studied, else 5)"),
    hybrid_vectors: str = typer.Option(None, "--hybrid-vectors", callback=choice("means", "optimised"),
                                       help="the hybrid's vectors: means (difference of means, the default) or "
                                            "optimised (the hybrid paper's first version; the verifier pairs' "
                                            "default)"),
    hybrid_vectors_dir: str = typer.Option(None, "--hybrid-vectors-dir",
                                           help="a folder keeping the hybrid's vectors as direction artifacts: "
                                                "loaded when it holds them for the same base, site, method and "
                                                "categories, else derived and saved there"),
    hybrid_calibrate: int = typer.Option(None, "--hybrid-calibrate", callback=non_negative,
                                         help="choose the hybrid's vector scales, and each category's layer "
                                              "among the calibration layers, on this many problems apart from the "
                                              "evaluated ones (the organism's training problems; on other pairs the "
                                              "task set's problems after the evaluated and trace ones); 0: none"),
    hybrid_calibration_grid: str = typer.Option(None, "--hybrid-calibration-grid",
                                                help="comma-separated scales tried (default 0,0.5,1,2,3)"),
    hybrid_calibration_layers: str = typer.Option(None, "--hybrid-calibration-layers",
                                                  help="other steer layers each category may move to "
                                                       "(comma separated; with --hybrid-calibrate)"),
    hybrid_force_thinking: bool = typer.Option(None, "--hybrid-force-thinking/--no-hybrid-force-thinking",
                                               help="organism pairs: the hybrid's prompts end with the think tag "
                                                    "for both models (the verifier pairs' default)"),
    cot_n: int = typer.Option(None, "--cot-n", help="problems for CoT-decoding", callback=positive),
    k: int = typer.Option(None, "--k", help="CoT-decoding branches", callback=positive),
    feature_n: int = typer.Option(None, "--feature-n", help="problems for the feature steer-check",
                                  callback=positive),
    feature_pages: int = typer.Option(None, "--feature-pages", help="feature dashboards in the report",
                                      callback=non_negative),
    max_new_tokens: int = typer.Option(None, "--max-new-tokens", callback=positive),
    temperature: float = typer.Option(None, "--temperature", help="sampling temperature for pass@k (> 0)",
                                      callback=positive_float),
    top_p: float = typer.Option(None, "--top-p", help="nucleus top-p for pass@k sampling, in (0, 1]",
                                callback=number(0, 1, lo_open=True)),
    sampling: str = typer.Option("default", "--sampling", help="sampling preset: default (temperature 1, top-p 1), "
                                 "yue (0.6, 0.95: the pass@k paper), oat_zero (0.6, 0.9); --temperature and "
                                 "--top-p override it"),
    layer: int = typer.Option(None, "--layer", help="layer of the hybrid and the SAE (default: each step's own; the "
                              "hybrid's is the paper's steer layer on a pair it studied)",
                              callback=non_negative),
    read_layer: int = typer.Option(None, "--read-layer", help="where the hybrid reads the thinking model to pick "
                                   "a category (the taxonomy's layer; default the paper's SAE layer on a pair it "
                                   "studied, else the hybrid's steer layer)",
                                   callback=non_negative),
    sae: str = typer.Option(None, "--sae", help="SAE folder or sae_lens RELEASE/ID for the feature step (default: "
                                                "off the organism, a small SAE trained on the base's captures of "
                                                "the task prompts, cached)"),
    sae_texts: int = typer.Option(None, "--sae-texts", help="without --sae off the organism: problems whose "
                                  "prompts train the SAE (3 prompts each; default 256)", callback=positive),
    template: str = typer.Option(None, "--template", help="prompt template of every step (default: identity for "
                                                          "the organism; otherwise plain 'Q: ...\\nA:', and "
                                                          "user_assistant for the hybrid, as the paper)"),
    thinking_template: str = typer.Option(None, "--thinking-template",
                                          help="the thinking model's prompt template (default: its own chat "
                                               "template when its tokenizer has one, else --template)"),
    steps: str = typer.Option(",".join(("sampling", "hybrid", "cot", "feature", "diff", "rl")), "--steps",
                              help="comma-separated subset of sampling,hybrid,cot,feature,diff,rl"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a report already at --out "
                                                               "(your other files there are kept)"),
    as_json: bool = typer.Option(False, "--json", help="print results.json to stdout (no progress bars)"),
) -> None:
    """Re-run the findings (pass@k, hybrid, model diff and RL, CoT-decoding, SAE trigger) and write a report folder.

    Under `torchrun` / `accelerate launch` the sampling, hybrid, CoT-decoding, steer-check and diff work is
    split across the processes, rank 0 runs the RL step in a process of its own and writes the report (see
    docs/scale.md).
    """
    from ..errors import LensError
    from ..studies.reproduce import STEPS, Sizes, reproduce

    if paper_pair is not None:
        named = organism is not None or given(ctx, "base") or given(ctx, "thinking")
        base, thinking = paper_pair_models(paper_pair, models_named=named, others="--base/--thinking/--organism")
        if tasks.lower() == "organism":
            raise LensError(f"--paper-pair {paper_pair}: give --tasks (gsm8k, math500 or a JSONL of question/answer "
                            "rows); the organism's problems are for the bundled pairs")
    if organism is not None:
        from ..organism import PAIRS

        if organism not in PAIRS:
            raise LensError(f"--organism {organism!r}: the bundled pairs are {', '.join(PAIRS)}")
        if given(ctx, "base") or given(ctx, "thinking"):
            raise LensError("--organism names both models; drop --base/--thinking (or --organism)")
        base, thinking = (f"organism:{name}" for name in PAIRS[organism][:2])
        if organism in ("verifier", "verifier-rl") and max_new_tokens is None:
            max_new_tokens = 220  # its checked traces run longer than the first pair's
        if organism in ("verifier", "verifier-rl"):  # the gap is over the base's own reasoning: steer inside it,
            hybrid_vectors = hybrid_vectors or "optimised"  # with the vectors that reach a check (docs/organism.md)
            hybrid_force_thinking = True if hybrid_force_thinking is None else hybrid_force_thinking
    from .hybrid_cmd import parse_grid, parse_layers

    grid = (parse_grid(hybrid_calibration_grid, "--hybrid-calibration-grid") if hybrid_calibration_grid is not None
            else None)
    cal_layers = parse_layers(hybrid_calibration_layers, "--hybrid-calibration-layers")
    if (grid is not None or cal_layers) and not hybrid_calibrate:
        raise LensError("--hybrid-calibration-grid and --hybrid-calibration-layers are tried by the calibration; "
                        "give --hybrid-calibrate N as well")
    sizes = Sizes().use_sampling(sampling)
    for name, value in (("hybrid_n", hybrid_n), ("hybrid_categories", hybrid_categories),
                        ("hybrid_vectors", hybrid_vectors),
                        ("hybrid_vectors_dir", hybrid_vectors_dir), ("hybrid_calibrate", hybrid_calibrate),
                        ("hybrid_calibration_grid", grid), ("hybrid_calibration_layers", cal_layers),
                        ("hybrid_force_thinking", hybrid_force_thinking),
                        ("cot_n", cot_n), ("k", k), ("feature_n", feature_n),
                        ("feature_pages", feature_pages), ("max_new_tokens", max_new_tokens),
                        ("temperature", temperature), ("top_p", top_p), ("layer", layer), ("read_layer", read_layer),
                        ("sae_texts", sae_texts)):
        if value is not None:
            setattr(sizes, name, value)
    if tasks.lower() != "organism" and hybrid_force_thinking:
        raise LensError("--hybrid-force-thinking runs on the bundled organism pairs only; on other pairs give the "
                        "thinking model's prompt with --thinking-template")
    if tasks.lower() != "organism" and max_new_tokens is None:
        sizes.max_new_tokens = 512
    if hybrid_vectors_dir is not None:  # a folder of other files is refused before any model loads
        from ..outputs import check_output

        check_output(hybrid_vectors_dir, "vectors", resumable=True, flag="--hybrid-vectors-dir")
    chosen = tuple(x.strip() for x in steps.split(",") if x.strip())
    bad = [x for x in chosen if x not in STEPS]
    if bad:
        raise LensError(f"unknown steps {bad}; choose from {', '.join(STEPS)}")
    from ..distributed import init

    init()  # under a launcher: join the job first, so `--device cuda` is each rank's own GPU
    pair = load_both(ctx, base, thinking)  # placed as --device/--dtype say; unreadable files fail in one line
    check_layer("--layer", layer, pair[0].n_layers)
    check_layer("--read-layer", read_layer, pair[1].n_layers)
    for x in cal_layers or ():
        check_layer("--hybrid-calibration-layers", x, pair[0].n_layers)
    res = reproduce(out, base=pair[0], thinking=pair[1], tasks=tasks, n=n, samples=samples, seed=seed,
                    progress=not as_json, sizes=sizes, steps=chosen, sae=sae, template=template,
                    thinking_template=thinking_template,
                    overwrite=overwrite)
    failed = [name for name in STEPS if res.get(name, {}).get("status") == "error"]
    from ..distributed import ranks

    if not ranks().main:  # under torchrun / accelerate launch: rank 0 writes and reports for the whole job
        if failed:
            raise typer.Exit(1)
        return
    if as_json:
        emit_json(res)
    else:
        for t in res["tables"]:
            console.print(table(t["title"], t["rows"]))
        meta = res["meta"]
        console.print(f"report: {meta['out_dir']}/index.html ({meta['report_bytes'] / 1e6:.1f} MB), results.md, "
                      f"results.json; {meta['wall_s']:.0f} s")
        for name in STEPS:
            st = res.get(name, {})
            if st.get("status") != "ok":
                console.print(f"[yellow]{name}: {st.get('status')}: {st.get('reason')}[/]")
    if failed:
        raise typer.Exit(1)
