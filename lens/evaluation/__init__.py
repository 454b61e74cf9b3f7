"""Evaluation: answers and checking, metrics with intervals, behaviour detectors, likelihood, tasks, templates."""

from .answers import Extracted, NumericChecker, check, extract_answer, get_extractor, numbers_equal
from .behaviours import (
    ReflectionDetector,
    ThinkingFormat,
    detector_for,
    reflection_at_k,
    reflection_precision_recall,
    reflection_vs_correctness,
)
from .likelihood import Likelihood, continuation_logprobs
from .metrics import Estimate, accuracy, gap_recovered, pass_at_k, pass_at_k_curve, tokens_summary
from .tasks import Task, load_tasks
from .templates import apply_template

__all__ = [
    "Estimate", "Extracted", "Likelihood", "NumericChecker", "ReflectionDetector", "Task", "ThinkingFormat",
    "accuracy", "apply_template", "check", "continuation_logprobs", "detector_for", "extract_answer",
    "gap_recovered", "get_extractor", "load_tasks", "numbers_equal", "pass_at_k", "pass_at_k_curve",
    "reflection_at_k", "reflection_precision_recall", "reflection_vs_correctness", "tokens_summary",
]
