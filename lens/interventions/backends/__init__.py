"""Compile intervention specs to other backends: nnsight traces (`nnsight_backend`: generation, left-padded
batches with their attention mask; `nnsight_capture`: capture; both local or NDIF `remote=True`) and
TransformerLens hooks (`transformer_lens_backend`: unpadded batches). Gates run on the lens engine only.
"""
