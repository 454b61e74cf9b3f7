"""Where each model family keeps its decoder layers and per-layer outputs.

One small table per family maps TransformerLens-style site names onto Hugging Face modules.
To add a family, add a `Family` entry to `FAMILIES` keyed by the HF `config.model_type` (and a tiny
config of it to `_config` and its name to `FAMILIES` in tests/test_families.py, which runs every per-family
test on it): give the dotted path to
the list of decoder layers and, relative to one layer, the modules whose outputs are the attention and
MLP contributions that are added to the residual stream.

Capture runs right-padded batches without a padding mask when `Model.causal` holds (lens/capture_memory.py
`_forward`): that property reads the config switches HF has for bidirectional attention
(`use_bidirectional_attention`, `is_causal=False`) and the decoder layers' modules' `is_causal`; a new family
with another such switch adds it there.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import LensError


@dataclass(frozen=True)
class Family:
    """Module layout of one architecture family.

    layers: dotted path from the HF causal-LM object to the `ModuleList` of decoder layers.
    attn_out / mlp_out: dotted path inside one layer to the module whose output is added to the
        residual stream (after any post-norm, as Gemma 2/3 apply), or None when not exposed.
    final_norm: dotted path to the final norm before the unembedding.
    mask_expected: the HF model warns when a padded batch comes without an attention mask (GPT-2), so
        capture passes an all-ones mask where it needs none.
    """

    name: str
    layers: str
    attn_out: str | None
    mlp_out: str | None
    final_norm: str
    mask_expected: bool = False


_LLAMA_LIKE = dict(layers="model.layers", attn_out="self_attn", mlp_out="mlp", final_norm="model.norm")
_GEMMA = dict(
    layers="model.layers",
    attn_out="post_attention_layernorm",
    mlp_out="post_feedforward_layernorm",
    final_norm="model.norm",
)

FAMILIES: dict[str, Family] = {
    "llama": Family("llama", **_LLAMA_LIKE),
    "mistral": Family("mistral", **_LLAMA_LIKE),
    "mixtral": Family("mixtral", **_LLAMA_LIKE),  # mlp = the sparse mixture-of-experts block
    "qwen2": Family("qwen2", **_LLAMA_LIKE),
    "qwen2_moe": Family("qwen2_moe", **_LLAMA_LIKE),  # mlp = experts + shared expert
    "qwen3": Family("qwen3", **_LLAMA_LIKE),
    "qwen3_moe": Family("qwen3_moe", **_LLAMA_LIKE),
    "smollm3": Family("smollm3", **_LLAMA_LIKE),
    "olmo": Family("olmo", **_LLAMA_LIKE),
    "olmo2": Family("olmo2", **_GEMMA),  # norms after attention and MLP, as Gemma 2/3 (no pre-norms)
    "olmo3": Family("olmo3", **_GEMMA),
    "phi": Family("phi", layers="model.layers", attn_out="self_attn", mlp_out="mlp",  # parallel attention + MLP
                  final_norm="model.final_layernorm"),
    "phi3": Family("phi3", **_LLAMA_LIKE),  # Phi-3 / Phi-4 (the resid dropouts are identities in eval)
    "gemma": Family("gemma", **_LLAMA_LIKE),
    "gemma2": Family("gemma2", **_GEMMA),
    "gemma3_text": Family("gemma3_text", **_GEMMA),
    "gemma3": Family(
        "gemma3",
        layers="model.language_model.layers",
        attn_out="post_attention_layernorm",
        mlp_out="post_feedforward_layernorm",
        final_norm="model.language_model.norm",
    ),
    "gpt2": Family("gpt2", layers="transformer.h", attn_out="attn", mlp_out="mlp", final_norm="transformer.ln_f",
                   mask_expected=True),
    "gpt_neox": Family(
        "gpt_neox",
        layers="gpt_neox.layers",
        attn_out="attention",
        mlp_out="mlp",
        final_norm="gpt_neox.final_layer_norm",
    ),
}


def family_of(model_type: str) -> Family:
    """The layout for an HF `config.model_type`, or a LensError listing the supported ones."""
    try:
        return FAMILIES[model_type]
    except KeyError:
        supported = ", ".join(sorted(FAMILIES))
        raise LensError(
            f"unsupported model family {model_type!r}; supported: {supported}. "
            "To add one, add a Family entry to lens/families.py (layers path, attn/mlp output modules)."
        ) from None
