"""Decoding: batched greedy/seeded generation with per-step top-2 probabilities, and CoT-decoding."""

from .cot import Branch, CotResult, confidence_by_reasoning, cot_decode, cot_decode_reference
from .generate import Generation, Sample, generate

__all__ = [
    "Branch", "CotResult", "Generation", "Sample", "confidence_by_reasoning", "cot_decode", "cot_decode_reference",
    "generate",
]
