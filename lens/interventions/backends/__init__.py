"""Compile intervention specs to other backends: nnsight traces (local or NDIF `remote=True`) and
TransformerLens hooks. Both cover unpadded batches (equal-length prompts); the lens engine covers
padded batches and gates.
"""
