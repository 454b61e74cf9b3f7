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
    if folder is None:  # one shared folder in lens's cache (TransformerLens re-reads it by path later)
        import hashlib

        from .artifacts import cache_dir
        from .outputs import atomic_folder

        folder = cache_dir() / "tokenizers" / f"char-{hashlib.sha256(CHARS.encode()).hexdigest()[:12]}"
        if not (folder / "tokenizer.json").is_file():
            with atomic_folder(folder, clean=False) as tmp:  # others may be writing it too
                fast.save_pretrained(tmp)
        return AutoTokenizer.from_pretrained(folder)
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


# ------------------------------------------------------------------ tiny pairs with real-pair tokenizers

_CORPUS = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May? Weng earns $12 an hour for babysitting. "
    "Yesterday, she just did 50 minutes of babysitting. How much did she earn? Betty is saving money for a "
    "new wallet which costs $100. Let's think step by step. First, we add the numbers. Then we multiply. "
    "Wait, let me check that again. So the answer is 72. The answer is 10. Q: What is 3 plus 4? A: 7. "
)
QWEN_CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
             "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
R1_CHAT = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}"
           "{% elif m['role'] == 'user' %}<｜User｜>{{ m['content'] }}"
           "{% else %}<｜Assistant｜>{{ m['content'] }}<｜end▁of▁sentence｜>{% endif %}{% endfor %}"
           "{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}")
LLAMA3_CHAT = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
               "{{ m['content'] }}<|eot_id|>{% endfor %}"
               "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
# (special tokens appended after the ordinary vocabulary, in id order; roles; chat template), per tokenizer
PAIR_TOKENIZERS: dict[str, dict] = {
    "qwen2.5": dict(specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
                              "<|object_ref_end|>", "<|box_start|>", "<|box_end|>"],
                    bos=None, eos="<|endoftext|>", pad="<|endoftext|>", chat=QWEN_CHAT),
    "r1-distill-qwen": dict(specials=["<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
                                      "<｜begin▁of▁sentence｜>", "<|EOT|>", "<think>", "</think>"],
                            bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>", pad="<｜end▁of▁sentence｜>",
                            chat=R1_CHAT, plain=["<think>", "</think>"]),
    "llama-3.1": dict(specials=["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                                "<|reserved_special_token_1|>", "<|start_header_id|>", "<|end_header_id|>",
                                "<|eot_id|>", "<|reserved_special_token_2|>", "<|reserved_special_token_3|>",
                                "<|reserved_special_token_4|>", "<|reserved_special_token_5|>"],
                      bos="<|begin_of_text|>", eos="<|end_of_text|>", pad=None, chat=LLAMA3_CHAT),
    "r1-distill-llama": dict(specials=["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
                                       "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
                                       "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<｜User｜>",
                                       "<｜Assistant｜>", "<think>", "</think>"],
                             bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>", pad="<｜end▁of▁sentence｜>",
                             chat=R1_CHAT, plain=["<think>", "</think>"]),
}


def bpe_tokenizer(kind: str, merges: int = 200):
    """A byte-level BPE fast tokenizer trained here on a fixed corpus (same `merges` -> same BPE), with
    the special tokens, roles and chat template of `kind` (a key of PAIR_TOKENIZERS).

    Two kinds with the same `merges` share every ordinary token at the same id and differ only in their
    specials and templates, as Qwen2.5 vs DeepSeek-R1-Distill-Qwen (or Llama-3.1 vs R1-Distill-Llama) do.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    spec = PAIR_TOKENIZERS[kind]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + merges, initial_alphabet=alphabet,
                                  show_progress=False, special_tokens=[])
    tok.train_from_iterator([_CORPUS, CHARS], trainer=trainer)
    plain = set(spec.get("plain", []))
    tok.add_tokens([AddedToken(s, special=s not in plain, normalized=False) for s in spec["specials"]])
    if spec["bos"] is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{spec['bos']} $A", special_tokens=[(spec["bos"], tok.token_to_id(spec["bos"]))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    roles = {f"{r}_token": spec[r] for r in ("bos", "eos", "pad") if spec[r] is not None}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **roles)
    fast.add_special_tokens({"additional_special_tokens": [s for s in spec["specials"] if s not in plain
                                                           and s not in roles.values()]})
    fast.chat_template = spec["chat"]
    with tempfile.TemporaryDirectory(prefix="lens-tok-") as tmp:
        fast.save_pretrained(tmp)
        return AutoTokenizer.from_pretrained(tmp)


PAIRS = {"qwen": ("qwen2", "qwen2.5", "r1-distill-qwen"), "llama": ("llama", "llama-3.1", "r1-distill-llama"),
         "orz": ("qwen2", "qwen2.5", "qwen2.5")}


def tiny_pair(style: str = "qwen", n_layers: int = 2, d_model: int = 64, other_bpe: bool = False,
              seeds: tuple[int, int] = (0, 1)) -> tuple[Model, Model]:
    """(base, thinking) random-weight models whose tokenizers differ as the real pairs' do.

    style "qwen": Qwen2.5 vs DeepSeek-R1-Distill-Qwen (other specials at the special ids, R1's bos,
    `<think>`/`</think>`, ChatML vs R1's template opening `<think>\\n`); "llama": Llama-3.1 vs
    R1-Distill-Llama; "orz": Qwen2.5 vs a thinking model on the same tokenizer that writes ``</think>`` as
    text, in several pieces (as Open-Reasoner-Zero does). other_bpe=True gives the thinking model a BPE with
    other merges (not comparable).
    """
    from transformers import AutoModelForCausalLM

    family, kb, kt = PAIRS[style]
    out = []
    sides = (("base", kb, seeds[0], 200), ("thinking", kt, seeds[1], 160 if other_bpe else 200))
    for side, kind, seed, merges in sides:
        tok = bpe_tokenizer(kind, merges=merges)
        torch.manual_seed(seed)
        cfg = tiny_config(family, n_layers=n_layers, d_model=d_model, vocab_size=len(tok))
        cfg.bos_token_id, cfg.eos_token_id = tok.bos_token_id, tok.eos_token_id
        cfg.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        hf = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
        hf.generation_config.bos_token_id, hf.generation_config.eos_token_id = cfg.bos_token_id, cfg.eos_token_id
        hf.generation_config.pad_token_id = cfg.pad_token_id
        tail = "" if side == "base" else "-other-bpe" if other_bpe else "-thinking" if kb == kt else ""
        out.append(Model(hf=hf, tokenizer=tok, spec=f"tiny-{kind}{tail}", source="object"))
    return out[0], out[1]
