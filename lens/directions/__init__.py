"""Reasoning directions from captured activations: contrastive means, PCA, optimised vectors."""

from .artifact import Direction, Directions, load_direction
from .means import diff_of_means, one_vs_rest, pca_of_differences
from .separability import auroc, separability_by_layer

__all__ = ["Direction", "Directions", "auroc", "diff_of_means", "load_direction", "one_vs_rest", "pca_of_differences",
           "separability_by_layer"]
