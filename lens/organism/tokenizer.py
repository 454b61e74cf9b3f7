"""Character-level tokenizer of the organism, built with ``tokenizers`` and saved with each model.

Every character is one token, except ``<think>`` and ``</think>`` which are single tokens (so the
thinking opener is one decision of the model and can be prefilled or steered as one position).
``<bos>`` is prepended by the post-processor; ``<eos>`` ends each document; ``<pad>`` pads.
Offsets (``return_offsets_mapping=True``) map each token to its character span.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIALS = ("<pad>", "<bos>", "<eos>")
THINK_TOKENS = ("<think>", "</think>")
CHARS = tuple("0123456789+=?:\n QADTwaitchek")


def vocabulary() -> dict[str, int]:
    """Token -> id: specials first (pad=0, bos=1, eos=2), then the think tags, then characters."""
    tokens: list[str] = [*SPECIALS, *THINK_TOKENS]
    for ch in CHARS:
        if ch not in tokens:
            tokens.append(ch)
    tokens.append("<unk>")
    return {t: i for i, t in enumerate(tokens)}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh ``PreTrainedTokenizerFast`` (deterministic; no training needed)."""
    vocab = vocabulary()
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    pattern = Regex(r"</?think>|<(?:pad|bos|eos)>|[\s\S]")
    tok.pre_tokenizer = pre_tokenizers.Split(pattern, behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
        padding_side="left",
    )
    return fast


def save_tokenizer(folder: str | Path) -> PreTrainedTokenizerFast:
    """Build the tokenizer and save it into ``folder`` (reload with ``AutoTokenizer``)."""
    tok = build_tokenizer()
    tok.save_pretrained(str(folder))
    return tok
