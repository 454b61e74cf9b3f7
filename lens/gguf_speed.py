"""Loading a GGUF file without parsing it three times or rebuilding gguf's tensor-name map per module.

transformers' GGUF loader (`modeling_gguf_pytorch_utils`) reads a file with a new ``gguf.GGUFReader`` for the
config, again for the weights and again for the tokenizer (each parse walks every metadata field, the
tokenizer's 49k strings for SmolLM2), and calls ``gguf.get_tensor_name_map(arch, n_blocks)`` once per module
of the model it fills (397 times for SmolLM2-135M, each building the same map). Both are read only by the
loader, so within `once` each file is parsed once and each map built once; everything is restored after.
A load then takes about half the time (SmolLM2-135M), with the same weights and tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def once() -> Iterator[None]:
    """Within this block ``gguf.GGUFReader(path)`` parses each path once and ``gguf.get_tensor_name_map`` builds
    each (arch, n_blocks) map once; restored after. Does nothing when the gguf package is absent."""
    try:
        import gguf
    except ImportError:
        yield
        return
    saved = {name: getattr(gguf, name) for name in ("GGUFReader", "get_tensor_name_map") if hasattr(gguf, name)}
    built: dict = {}

    def memo(name):
        def call(*args):
            key = (name, *map(str, args))
            if key not in built:
                built[key] = saved[name](*args)
            return built[key]

        return call

    for name in saved:
        setattr(gguf, name, memo(name))
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(gguf, name, fn)
