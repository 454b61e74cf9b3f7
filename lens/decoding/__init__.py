"""Decoding: batched greedy/seeded generation with per-step top-2 probabilities, and CoT-decoding."""

from .cot import Branch, CotResult, confidence_by_reasoning, cot_decode, cot_decode_reference
from .generate import SAMPLING_PRESETS, Generation, Sample, SamplingPreset, generate, sampling_preset

__all__ = [
    "SAMPLING_PRESETS", "Branch", "CotResult", "Generation", "Sample", "SamplingPreset", "confidence_by_reasoning",
    "cot_decode", "cot_decode_reference", "generate", "sampling_preset",
]
