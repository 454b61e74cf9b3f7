"""The hybrid: a base model steered at the few tokens where its thinking counterpart would act differently."""

from .generate import HybridConfig, HybridResult, hybrid_generate
from .reference import hybrid_generate_reference

__all__ = ["HybridConfig", "HybridResult", "hybrid_generate", "hybrid_generate_reference"]
