"""SAE dictionaries: training on capture folders, loading, evaluation and feature search.

Modules (import what you need; none is imported here, so `import saes` stays cheap):
  saes.config       TrainConfig, training_sae
  saes.buffer       RowSource, shuffled_batches
  saes.train        train_sae (progress, checkpoints, exact resume)
  saes.io           Dictionary, save_sae, load_sae (sae_lens folder format + lens.json)
  saes.evals        row_metrics, spliced_metrics, evaluate
  saes.search       rank_features, prompt_rows, texts_rows
  saes.steer_check  steer_check, summarize (first-step trigger with random-feature controls)
  saes.taxonomy     fit_taxonomy, purity (the organism's run: lens.studies.taxonomy_organism)
See docs/saes.md.
"""
