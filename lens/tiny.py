"""Tiny random-weight models built from configs (Llama, Qwen2, GPT-2), for tests, demos and benchmarks.

They load nothing from the hub: the tokenizer is a character-level BPE-free vocabulary built here.
"""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

import torch

from .models import Model

CHARS = string.ascii_letters + string.digits + string.punctuation + " \n"


def char_tokenizer(folder: str | Path | None = None):
    """A character-level fast tokenizer with <bos>, <eos>, <pad>, saved and reloaded from `folder`.

    Saving and reloading (rather than keeping the in-memory object) gives a tokenizer that
    TransformerLens and nnsight can re-create by path.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}
    for ch in CHARS:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    folder = Path(folder or tempfile.mkdtemp(prefix="lens-tok-"))
    fast.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def tiny_config(family: str, n_layers: int = 4, d_model: int = 64, vocab_size: int = 128, n_ctx: int = 512):
    """An HF config of a tiny model of one family ("llama", "qwen2", "gpt2")."""
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    if family == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size, n_positions=n_ctx, n_embd=d_model, n_layer=n_layers, n_head=4,
            bos_token_id=1, eos_token_id=2,
        )
    common = dict(
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=4 * d_model, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=n_ctx,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )
    if family == "llama":
        return LlamaConfig(**common)
    if family == "qwen2":
        return Qwen2Config(**common)
    raise ValueError(f"no tiny config for {family!r}; use llama, qwen2 or gpt2")


def tiny_model(family: str = "llama", n_layers: int = 4, d_model: int = 64, seed: int = 0) -> Model:
    """A random-weight model of `family` with the character tokenizer, in eval mode, float32."""
    from transformers import AutoModelForCausalLM

    tok = char_tokenizer()
    torch.manual_seed(seed)
    cfg = tiny_config(family, n_layers=n_layers, d_model=d_model, vocab_size=len(tok))
    hf = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    return Model(hf=hf, tokenizer=tok, spec=f"tiny-{family}", source="object")
