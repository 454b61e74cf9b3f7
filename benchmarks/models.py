"""The models the benchmarks run on: tiny, SmolLM2 (real weights), and random weights at real shapes.

Random-weight models with a real model's configuration cost what the real one costs per token,
so a machine with no hub access (a lent GPU, say) still measures at the papers' scale:
"smollm2-arch" (SmolLM2-135M's shape) and "qwen1.5b-arch" (Qwen2.5-1.5B's shape, the papers' base model).
They use the character tokenizer (ids are a small subset of the vocabulary; throughput is unaffected).
"""

from __future__ import annotations

import torch

from lens.models import Model

SHAPES = {
    "smollm2-arch": dict(family="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0,
                         rms_norm_eps=1e-5, tie_word_embeddings=True, max_position_embeddings=8192),
    "qwen1.5b-arch": dict(family="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                          num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, rope_theta=1000000.0,
                          rms_norm_eps=1e-6, tie_word_embeddings=True, max_position_embeddings=32768),
}
SIZES = ("tiny", "smollm2", *SHAPES)


def random_model(shape: str, device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> Model:
    """A random-weight model with the configuration `SHAPES[shape]`, built directly on `device`."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    from lens.tiny import char_tokenizer

    spec = dict(SHAPES[shape])
    family = spec.pop("family")
    cfg = (LlamaConfig if family == "llama" else Qwen2Config)(**spec, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    with torch.device(device):
        hf = AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()
    return Model(hf=hf, tokenizer=char_tokenizer(), spec=shape, source="object")


def bench_model(size: str, device: str = "cpu", dtype: torch.dtype | None = None, seed: int = 0) -> Model:
    """The model a benchmark size names, on `device` (dtype default: float32 on CPU, bfloat16 elsewhere)."""
    from lens import load_model
    from lens.tiny import tiny_model

    dtype = dtype or (torch.float32 if device == "cpu" else torch.bfloat16)
    if size in SHAPES:
        return random_model(size, device, dtype, seed)
    if size == "tiny":
        m = tiny_model("llama", d_model=128, seed=seed)
        m.hf.to(device, dtype)
        return m
    if size == "smollm2":
        return load_model("smollm2-135m-instruct", device=device, dtype=dtype)
    raise SystemExit(f"unknown size {size!r}; use one of {', '.join(SIZES)}")


def sync() -> None:
    """Wait for queued accelerator work (a no-op on CPU), so wall-clock timings cover it."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
