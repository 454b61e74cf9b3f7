"""The hybrid paper's per-pair settings: steer layer, taxonomy-SAE layer and number of categories.

The nine model pairs of the hybrid paper (Venhoff et al., thinking-llms-interp, ``configs.sh``: one table
every stage of its pipeline reads) with the layer each steers at, the layer its taxonomy SAE reads the
thinking model at, and the SAE's number of latents (the reasoning categories). `lens hybrid` and
`lens reproduce` use a pair's row as their defaults when the two model specs name it (hub ids, compared
without regard to case, or folders of the hub's cache), so a paper pair runs with the paper's settings
unless a flag says otherwise.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from ..errors import LensError

SOURCE = "thinking-llms-interp configs.sh"


@dataclass(frozen=True)
class PaperPair:
    """One row of the paper's table: `base` and `thinking` are hub ids; `steer_layer` the layer steered,
    `sae_layer` the layer the thinking model is read at for the category, `categories` the taxonomy
    SAE's latents."""

    name: str
    base: str
    thinking: str
    steer_layer: int
    sae_layer: int
    categories: int

    def as_dict(self) -> dict:
        return {**asdict(self), "source": SOURCE}


PAPER_PAIRS: tuple[PaperPair, ...] = (
    PaperPair("orz-0.5b", "Qwen/Qwen2.5-0.5B", "Open-Reasoner-Zero/Open-Reasoner-Zero-0.5B", 9, 8, 10),
    PaperPair("orz-1.5b", "Qwen/Qwen2.5-1.5B", "Open-Reasoner-Zero/Open-Reasoner-Zero-1.5B", 10, 4, 10),
    PaperPair("orz-7b", "Qwen/Qwen2.5-7B", "Open-Reasoner-Zero/Open-Reasoner-Zero-7B", 10, 20, 10),
    PaperPair("orz-32b", "Qwen/Qwen2.5-32B", "Open-Reasoner-Zero/Open-Reasoner-Zero-32B", 24, 27, 15),
    PaperPair("r1-14b", "Qwen/Qwen2.5-14B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", 18, 38, 5),
    PaperPair("r1-32b", "Qwen/Qwen2.5-32B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", 24, 27, 15),
    PaperPair("qwq-32b", "Qwen/Qwen2.5-32B", "Qwen/QwQ-32B", 24, 27, 10),
    PaperPair("r1-llama8b", "meta-llama/Llama-3.1-8B", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B", 12, 6, 15),
    PaperPair("r1-math1.5b", "Qwen/Qwen2.5-Math-1.5B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 10, 4, 15),
)


def _key(spec: str) -> str:
    """A hub id in lower case; a folder of the hub's cache (``.../models--Qwen--Qwen2.5-0.5B/snapshots/<hash>``)
    gives the id it holds."""
    spec = spec.strip().rstrip("/")
    cached = re.search(r"models--([^/\\]+?)--([^/\\]+)", spec)
    return (f"{cached.group(1)}/{cached.group(2)}" if cached else spec).lower()


def paper_pair(base: str, thinking: str) -> PaperPair | None:
    """The paper's row for this pair of model specs (hub ids, any case), or None when the paper did not
    study it."""
    for p in PAPER_PAIRS:
        if (_key(base), _key(thinking)) == (_key(p.base), _key(p.thinking)):
            return p
    return None


def by_name(name: str) -> PaperPair:
    """The paper's pair called `name` (``r1-math1.5b``, ``qwq-32b``, ...); an unknown name is refused with the
    list of names."""
    for p in PAPER_PAIRS:
        if p.name == name:
            return p
    raise LensError(f"no paper pair {name!r}; the hybrid paper's pairs are "
                    f"{', '.join(p.name for p in PAPER_PAIRS)}")
