"""SAE dictionaries: training on capture folders, loading, evaluation and feature search."""
