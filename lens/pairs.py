"""Base/thinking pairs whose tokenizers share one BPE but not their special tokens.

Real pairs (Qwen2.5-Math-1.5B vs DeepSeek-R1-Distill-Qwen-1.5B, Llama-3.1-8B vs R1-Distill-Llama-8B,
...) share every ordinary (non-special) token at the same id, but put other special tokens at the
special ids (`<|im_start|>` vs `<｜User｜>`), add `<think>`/`</think>`, and use other chat templates.

A :class:`TokenMap` from tokenizer A to tokenizer B maps every id of A to ids of B:

* ordinary tokens: identity (they must be the same string at the same id, else the pair is refused);
* a special/added token whose string B also has: that id of B ("same" when at the same id, else "string");
* else a token that is A's bos/eos/unk/pad, where B defines the same role: B's token of that role ("role:eos");
* else through text: A decodes the token, B encodes the text (possibly several ids, possibly none) ("text").

`comparable(a, b)` is the check `lens.load_pair` runs: same width and depth, and the same BPE
(identical ordinary vocabulary, and the same ids for a probe text encoded without special tokens).
`token_map(a, b)` builds the map once per pair of tokenizers and caches it on the source model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import LensError

ROLES = ("eos", "bos", "unk", "pad")
PROBE = ("Q: Natalia sold 48 clips in April, and half as many in May. How many clips did she sell? "
         "A: 48 / 2 = 24; 48 + 24 = 72.\nThe answer is 72. Über café naïve 北京 ∑x² — done!")


def special_ids(tokenizer: Any) -> set[int]:
    """Ids of added and special tokens (everything a tokenizer does not produce by its BPE alone)."""
    ids = set(int(i) for i in getattr(tokenizer, "added_tokens_decoder", {}) or {})
    ids |= set(int(i) for i in (getattr(tokenizer, "all_special_ids", None) or []))
    return ids


def ordinary_vocab(tokenizer: Any) -> dict[str, int]:
    """token -> id of the ordinary (non-added, non-special) tokens."""
    sp = special_ids(tokenizer)
    return {t: i for t, i in tokenizer.get_vocab().items() if i not in sp}


def bpe_differences(ta: Any, tb: Any, examples: int = 5) -> str | None:
    """Why two tokenizers do not share one BPE, with numbers and examples; None when they do."""
    va, vb = ordinary_vocab(ta), ordinary_vocab(tb)
    if va != vb:
        only_a = sorted(set(va) - set(vb))
        only_b = sorted(set(vb) - set(va))
        moved = sorted(t for t in set(va) & set(vb) if va[t] != vb[t])
        n_diff = len(set(va) ^ set(vb)) + len(moved)
        parts = [f"different BPE: {n_diff} ordinary tokens differ (ordinary vocabularies {len(va)} vs {len(vb)})"]
        if moved:
            parts.append(f"{len(moved)} at other ids, e.g. "
                         + ", ".join(f"{t!r} {va[t]} vs {vb[t]}" for t in moved[:examples]))
        if only_a:
            parts.append(f"{len(only_a)} only in the base, e.g. {only_a[:examples]}")
        if only_b:
            parts.append(f"{len(only_b)} only in the thinking model, e.g. {only_b[:examples]}")
        return "; ".join(parts)
    ia = ta(PROBE, add_special_tokens=False)["input_ids"]
    ib = tb(PROBE, add_special_tokens=False)["input_ids"]
    if ia != ib:
        at = next((k for k, (x, y) in enumerate(zip(ia, ib, strict=False)) if x != y), min(len(ia), len(ib)))
        return (f"different BPE: same ordinary vocabulary ({len(va)} tokens) but a probe text encodes to "
                f"{len(ia)} vs {len(ib)} ids, first differing at position {at} (other merges, normalizer or "
                "pre-tokenizer)")
    return None


@dataclass
class TokenMap:
    """How ids of a source tokenizer become ids of a target tokenizer (see the module docstring).

    special: source special id -> target ids (length 1 except through text); ordinary ids are identity.
    how: source special id -> "same", "string", "role:<role>" or "text".
    names: source special id -> (source token, target text of the mapped ids), for reports.
    n_ordinary: how many ordinary tokens the two share at the same ids.
    """

    source: str
    target: str
    n_ordinary: int
    special: dict[int, tuple[int, ...]]
    how: dict[int, str]
    names: dict[int, tuple[str, str]] = field(default_factory=dict)
    target_fill: int = 0
    _steps: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def text_ids(self) -> list[int]:
        """Source ids mapped through text (decode, then encode), sorted."""
        return sorted(i for i, h in self.how.items() if h == "text")

    @property
    def is_identity(self) -> bool:
        """True when every id maps to itself (same tokenizer, or differences only in names of equal roles)."""
        return all(v == (i,) for i, v in self.special.items())

    def map_id(self, i: int) -> tuple[int, ...]:
        """Target ids of one source id (ordinary and unknown ids map to themselves)."""
        return self.special.get(int(i), (int(i),))

    def map_ids(self, ids: list[int]) -> list[int]:
        """A sequence of source ids as target ids (text-mapped ids may become several, or none)."""
        return [j for i in ids for j in self.map_id(i)]

    def step_table(self, n_source: int, n_target: int) -> torch.Tensor:
        """LongTensor [n_source]: one target id per source id, for lockstep decoding (one token per step).

        Ordinary ids map to themselves; a special maps to its first target id (a text mapping of
        several ids is cut to its first, one of none becomes `target_fill`); ids past the target's
        rows (padding rows of the source's embedding) become `target_fill`.
        """
        key = (n_source, n_target)
        if key not in self._steps:
            table = torch.arange(n_source)
            table[table >= n_target] = self.target_fill
            for i, v in self.special.items():
                if i < n_source:
                    table[i] = v[0] if v and v[0] < n_target else self.target_fill
            self._steps[key] = table
        return self._steps[key]

    def as_dict(self) -> dict:
        """JSON-ready summary: counts per kind, every non-identity special and what went through text."""
        kinds: dict[str, int] = {}
        for h in self.how.values():
            kinds[h] = kinds.get(h, 0) + 1
        return {"source": self.source, "target": self.target, "n_ordinary": self.n_ordinary,
                "identity": self.is_identity, "kinds": kinds,
                "mapped": {str(i): {"token": self.names.get(i, ("", ""))[0], "how": self.how[i],
                                    "to": list(self.special[i]), "to_text": self.names.get(i, ("", ""))[1]}
                           for i in sorted(self.special) if self.special[i] != (i,)},
                "through_text": [self.names.get(i, ("", ""))[0] for i in self.text_ids]}


def _role_ids(tokenizer: Any) -> dict[str, int]:
    out = {}
    for r in ROLES:
        i = getattr(tokenizer, f"{r}_token_id", None)
        if isinstance(i, int):
            out[r] = i
    return out


def build_token_map(ta: Any, tb: Any, source: str = "base", target: str = "thinking") -> TokenMap:
    """The map from tokenizer `ta` to tokenizer `tb`; LensError with the reason when they differ in BPE."""
    why = bpe_differences(ta, tb)
    if why is not None:
        raise LensError(f"{source} and {target} are not comparable: {why}")
    vb = tb.get_vocab()
    inv_a = {i: t for t, i in ta.get_vocab().items()}
    roles_a, roles_b = _role_ids(ta), _role_ids(tb)
    special: dict[int, tuple[int, ...]] = {}
    how: dict[int, str] = {}
    names: dict[int, tuple[str, str]] = {}
    for i in sorted(special_ids(ta)):
        tok = inv_a.get(i, ta.convert_ids_to_tokens(i))
        if tok in vb:
            special[i], how[i] = (vb[tok],), "same" if vb[tok] == i else "string"
        else:
            role = next((r for r in ROLES if roles_a.get(r) == i and r in roles_b), None)
            if role is not None:
                special[i], how[i] = (roles_b[role],), f"role:{role}"
            else:
                text = ta.decode([i], skip_special_tokens=False)
                special[i], how[i] = tuple(tb(text, add_special_tokens=False)["input_ids"]), "text"
        names[i] = (str(tok), tb.decode(list(special[i]), skip_special_tokens=False))
    fill = roles_b.get("pad", roles_b.get("eos", 0))
    return TokenMap(source, target, len(ordinary_vocab(ta)), special, how, names, target_fill=int(fill))


def comparable(a: Any, b: Any) -> TokenMap:
    """Check that models `a` (base) and `b` (thinking) are comparable; returns the base -> thinking map.

    Comparable: same width and depth, and the same BPE (ordinary tokens identical at the same ids);
    special tokens and chat templates may differ. Refused with one LensError line naming every
    difference with its numbers.
    """
    problems = []
    if a.d_model != b.d_model:
        problems.append(f"width {a.d_model} vs {b.d_model}")
    if a.n_layers != b.n_layers:
        problems.append(f"layers {a.n_layers} vs {b.n_layers}")
    why = bpe_differences(a.tokenizer, b.tokenizer)
    if why is not None:
        problems.append(why)
    if problems:
        raise LensError(f"{a.spec} and {b.spec} are not comparable: " + "; ".join(problems))
    return token_map(a, b)


def token_map(a: Any, b: Any) -> TokenMap:
    """The map from model `a`'s token ids to model `b`'s, built once and cached on `a` (see TokenMap)."""
    cache = a.extra.setdefault("token_maps", {})
    key = id(b.tokenizer)
    hit = cache.get(key)
    if hit is None or hit[0] is not b.tokenizer or hit[1] is not a.tokenizer:
        tm = build_token_map(a.tokenizer, b.tokenizer, a.spec, b.spec)
        cache[key] = hit = (b.tokenizer, a.tokenizer, tm)
    return hit[2]


def pair_facts(a: Any, b: Any) -> dict:
    """What a pair's report records: both chat templates and the maps both ways (what went through text)."""
    return {"templates": {"base": getattr(a.tokenizer, "chat_template", None),
                          "thinking": getattr(b.tokenizer, "chat_template", None)},
            "token_map": {"base_to_thinking": token_map(a, b).as_dict(),
                          "thinking_to_base": token_map(b, a).as_dict()}}


# ------------------------------------------------------------------ an R1-style thinking side for a chat model

#: SmolLM2-Instruct's chat markup as R1 uses its template: no default system prompt, and the think block
#: opened after the assistant tag
SMOLLM2_R1_CHAT = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'"
    " + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}")
#: SmolLM2's special ids that become <think> and </think>: its code-data markers <filename> (followed by a
#: file's content) and <file_sep> (ends it). After <think> at any of its other unused specials the model
#: ends at once (EOS as its first token); after <filename> it writes text.
SMOLLM2_THINK_IDS = (6, 5)


def r1_style_tokenizer(tokenizer: Any, think_ids: tuple[int, int], chat_template: str,
                       names: tuple[str, str] = ("<think>", "</think>")) -> Any:
    """A copy of `tokenizer` made R1-style: the special tokens at `think_ids` renamed ``<think>`` /
    ``</think>`` (added tokens, not special, as in DeepSeek-R1-Distill, so decoding keeps them) and
    `chat_template` as its chat template (R1's opens ``<think>\\n`` after the assistant tag).

    The ordinary vocabulary, the BPE and every other special token stay as they are, so the pair
    (model with `tokenizer`, same weights with this one) is comparable with a token map that sends
    the renamed ids through text; the ids keep their rows of the embedding (same weights).
    """
    import json
    import tempfile

    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    inv = {i: t for t, i in tokenizer.get_vocab().items()}
    renames = {}
    for i, new in zip(think_ids, names, strict=True):
        if int(i) not in special_ids(tokenizer):
            raise LensError(f"id {i} ({inv.get(int(i))!r}) is not a special token of the tokenizer: only special "
                            "ids are renamed (ordinary tokens must stay identical)")
        renames[int(i)] = new
    js = json.loads(tokenizer.backend_tokenizer.to_str())
    for entry in js.get("added_tokens", []):
        if entry["id"] in renames:
            entry.update(content=renames[entry["id"]], special=False, normalized=False)
    vocab = js["model"]["vocab"]
    if isinstance(vocab, dict):
        for i, new in renames.items():
            vocab.pop(inv[i], None)
            vocab[new] = i
    roles = {f"{r}_token": getattr(tokenizer, f"{r}_token", None) for r in ROLES}
    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(js)),
                                   **{k: v for k, v in roles.items() if isinstance(v, str)})
    fast.chat_template = chat_template
    with tempfile.TemporaryDirectory(prefix="lens-r1style-") as tmp:
        fast.save_pretrained(tmp)
        out = AutoTokenizer.from_pretrained(tmp)
    got = [out.convert_ids_to_tokens(i) for i in renames]
    if got != list(renames.values()) or bpe_differences(tokenizer, out) is not None:
        raise LensError(f"could not make an R1-style copy of the tokenizer (ids {list(renames)} read {got})")
    return out


def smollm2_r1style_tokenizer(tokenizer: Any) -> Any:
    """SmolLM2-Instruct's tokenizer with R1-style ``<think>``/``</think>`` (at its ids 6 and 5,
    `SMOLLM2_THINK_IDS`) and a chat template that opens ``<think>\\n`` after ``<|im_start|>assistant\\n``
    (its own markup otherwise, which its weights know): the thinking side of the bundled
    ``smollm2-135m-instruct-r1style``."""
    return r1_style_tokenizer(tokenizer, SMOLLM2_THINK_IDS, SMOLLM2_R1_CHAT)
