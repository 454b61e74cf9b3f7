#!/usr/bin/env bash
# The GPU run: the CUDA exactness tests (tests/test_gpu.py), the SAE training step A/B, then the capture,
# steering and hybrid tables on the GPU, on random weights at real shapes (Qwen2.5-1.5B's and SmolLM2-135M's),
# bfloat16. Every table is also written as JSON to $OUT (default ./gpu-out); copy the JSON files to
# docs/results/benchmarks/gpu/ and `python benchmarks/page.py` puts them on docs/benchmarks.md.
# On a machine with no package index, put the peers' wheels in .whl/ first (docs/benchmarks.md, "GPU rows",
# lists them); they are installed to /tmp/site.
# ONLY=capture (or steering) limits the two size tables; PARTS picks the steps and their order (default
# tests,sae,qwen,hybrid,smollm2); DEADLINE=S stops starting steps S seconds after the start and cuts each
# step's timeout to what is left.
set -u
ONLY=${ONLY:-capture,steering}
PARTS=${PARTS:-tests,sae,qwen,hybrid,smollm2}
OUT=${OUT:-gpu-out}
DEADLINE=${DEADLINE:-100000}
START=$SECONDS
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  WANDB_MODE=disabled LENS_BENCH_THREADS=4
python3 - >"$OUT/env.txt" 2>&1 <<'PY'
import importlib.metadata as md, subprocess, torch
print("gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
for p in ("torch", "transformers", "transformer-lens", "nnsight", "sae-lens", "accelerate", "tokenizers"):
    try:
        print(p, md.version(p))
    except Exception as e:
        print(p, "missing", e)
print("commit", subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or "?")
PY
cat "$OUT/env.txt"
step() {  # timeout log command...: runs the command for at most min(timeout, time left), output to $OUT/log
  local t=$1 log=$2 left=$((DEADLINE - (SECONDS - START)))
  shift 2
  [ "$left" -lt "$t" ] && t=$left
  if [ "$t" -lt 20 ]; then echo "skipped (deadline): $*" | tee "$OUT/$log"; return; fi
  timeout "$t" "$@" 2>&1 | tee "$OUT/$log"
}
bench() {  # name timeout args...
  local name=$1 t=$2
  shift 2
  step "$t" "$name.md" python3 benchmarks/run.py --device cuda --json-out "$OUT/$name.json" "$@"
}
for part in ${PARTS//,/ }; do
  case $part in
    tests) step 120 gpu_tests.log python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py ;;
    sae)  # the SAE training step, sparse decode vs SAELens's dense step (needs sae_lens)
      for arch in topk batchtopk; do
        step 60 "sae_step_$arch.md" python3 benchmarks/sae_step_ab.py --device cuda --arch "$arch" --d-model 1536 \
          --rounds 6 --steps 10 --json-out "$OUT/sae_step_$arch.json"
      done ;;
    qwen) bench qwen15b_arch 160 --sizes qwen1.5b-arch --only "$ONLY" --repeats 5 ;;
    hybrid) bench hybrid 180 --sizes smollm2-arch --only hybrid --repeats 1 --hybrid-tokens 24 --hybrid-ref-prompts 4 ;;
    smollm2) bench smollm2_arch 130 --sizes smollm2-arch --only "$ONLY" --repeats 5 ;;
    *) echo "unknown part: $part (tests, sae, qwen, hybrid, smollm2)" ;;
  esac
done
echo "gpu.sh done in $((SECONDS - START)) s"
