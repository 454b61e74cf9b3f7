"""The hybrid: a base model steered at the few tokens where its thinking counterpart would act differently."""

from .config import ABLATIONS, ALL_ABLATIONS, EXTRA_ABLATIONS, MODES, PAPER_COEFFICIENTS, HybridConfig
from .generate import HybridResult, hybrid_generate
from .reference import hybrid_generate_reference

__all__ = ["ABLATIONS", "ALL_ABLATIONS", "EXTRA_ABLATIONS", "MODES", "PAPER_COEFFICIENTS", "HybridConfig",
           "HybridResult", "hybrid_generate", "hybrid_generate_reference"]
