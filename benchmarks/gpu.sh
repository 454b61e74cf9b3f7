#!/usr/bin/env bash
# The GPU run: the CUDA exactness tests (tests/test_gpu.py), then the capture, steering and hybrid
# tables on the GPU, on random weights at real shapes (SmolLM2-135M's and Qwen2.5-1.5B's), bfloat16.
# Output goes to $OUT (default ./gpu-out). On a machine with no package index, put the peers'
# wheels in .whl/ first (docs/benchmarks.md, "GPU rows", lists them); they are installed to /tmp/site.
# ONLY=capture (or steering) limits the two size tables; HYBRID_TIMEOUT gives the hybrid table more time;
# SAE=1 adds the SAE training step A/B (sae_lens and its dependencies must be on the machine).
set -u
ONLY=${ONLY:-capture,steering}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  WANDB_MODE=disabled LENS_BENCH_THREADS=4
python3 - >"$OUT/env.txt" 2>&1 <<'PY'
import importlib.metadata as md, torch
print("gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
for p in ("torch", "transformers", "transformer-lens", "nnsight", "accelerate", "tokenizers"):
    try:
        print(p, md.version(p))
    except Exception as e:
        print(p, "missing", e)
PY
cat "$OUT/env.txt"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log"
bench() {  # name timeout args...
  local name=$1 t=$2
  shift 2
  timeout "$t" python3 benchmarks/run.py --device cuda --json-out "$OUT/$name.json" "$@" 2>&1 | tee "$OUT/$name.md"
}
if [ -n "${SAE:-}" ]; then  # SAE=1: the SAE training step, sparse decode vs SAELens's dense step (needs sae_lens)
  for arch in topk batchtopk; do
    timeout 90 python3 benchmarks/sae_step_ab.py --device cuda --arch "$arch" --d-model 1536 --rounds 6 \
      --steps 10 2>&1 | tee "$OUT/sae_step_$arch.md"
  done
fi
bench qwen15b_arch 160 --sizes qwen1.5b-arch --only "$ONLY" --repeats 5
bench smollm2_arch 130 --sizes smollm2-arch --only "$ONLY" --repeats 5
bench hybrid "${HYBRID_TIMEOUT:-240}" --sizes smollm2-arch --only hybrid --repeats 1 --hybrid-tokens 24
