"""The thinking model's reasoning phase, as the paper's hybrid_eval.py handles it (mode paper).

Every row starts in the reasoning phase. There the gate may fire, and a base EOS is replaced by the
thinking model's greedy token. The phase ends when the thinking model's greedy tokens spell its
end-of-reasoning marker (``cfg.think_close``, e.g. ``</think>``), recognised as hybrid_eval.py does
(`CloseMarker`):

* a marker the thinking tokenizer encodes as one id (DeepSeek-R1-Distill's ``</think>``): the step whose
  greedy token is that id. That step is not steered, and the thinking model is fed its marker;
* a marker it splits into several pieces (a base tokenizer writing ``</think>`` as text, e.g. Qwen2.5's
  ``'</', 'think', '>'`` as Open-Reasoner-Zero uses it): BPE-suffix detection. The greedy tokens are
  matched against any token whose text ends with the marker's first piece (``'</'``, ``' </'``,
  ``'.</'``, ...), then the marker's other pieces in order. While a match is under way the thinking
  model is fed its own greedy token, whatever the base emits; steering and the gate go on as usual.

When the marker is complete, the base is given ``cfg.answer_prompt`` (the paper's "\\n\\nFinal answer: ";
one token per step) and the row enters the answer phase: no steering, no EOS suppression, the base
answers freely. All on the host, one instance per generation of the KV-cached loop
(`lens.hybrid.reference` ports the same state machine with its own code and the same `CloseMarker`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import Model
from .config import HybridConfig


@dataclass(frozen=True)
class CloseMarker:
    """How the end of the thinking model's reasoning shows in its greedy tokens.

    single: the marker's id when it is one token; openers: the ids whose text ends with the marker's first
    piece, and suffix: its other pieces in order (BPE-suffix detection of a marker of several pieces).
    """

    single: int | None = None
    openers: frozenset[int] = frozenset()
    suffix: tuple[int, ...] = ()

    @property
    def active(self) -> bool:
        """Whether a marker is recognised at all (mode paper with a marker the tokenizer can encode)."""
        return self.single is not None or bool(self.suffix)

    def step(self, state: int, token: int) -> tuple[int, str]:
        """(next state, ``"close"`` | ``"partial"`` | ``""``) after the thinking model's greedy `token`.

        state 0: no match under way; state i >= 1: the opener and the first i - 1 suffix pieces were seen.
        ``"close"``: the marker is complete; ``"partial"``: a match is under way (feed the thinking model its
        own token). A new opener restarts the match; any other token drops it (hybrid_eval.py's machine).
        """
        if self.single is not None:
            return 0, "close" if token == self.single else ""
        if state > 0 and token == self.suffix[state - 1]:
            return (0, "close") if state == len(self.suffix) else (state + 1, "partial")
        if token in self.openers:
            return 1, "partial"
        return 0, ""


def close_marker(thinking: Model, text: str | None) -> CloseMarker:
    """The `CloseMarker` of `text` in the thinking model's tokenizer (cached on the model); inactive for no
    text or text that encodes to nothing."""
    tok = thinking.tokenizer
    ids = tok.encode(text, add_special_tokens=False) if text else []
    if len(ids) <= 1:
        return CloseMarker(int(ids[0]) if ids else None)
    cache = thinking.extra.setdefault("close_markers", {})
    key = (id(tok), text)
    if key not in cache:
        head = tok.decode([ids[0]])
        texts = tok.batch_decode([[i] for i in range(len(tok))])
        cache[key] = CloseMarker(None, frozenset(i for i, t in enumerate(texts) if t.endswith(head)),
                                 tuple(int(i) for i in ids[1:]))
    return cache[key]


class Region:
    def __init__(self, cfg: HybridConfig, base: Model, thinking: Model, n: int, eos: int):
        self.marker = close_marker(thinking, cfg.think_close) if cfg.mode == "paper" else CloseMarker()
        self.close = self.marker.single
        self.active = self.marker.active
        self.answer = base.tokenizer.encode(cfg.answer_prompt, add_special_tokens=False) if self.active else []
        self.inside = torch.ones(n, dtype=torch.bool)
        self.queue: list[list[int]] = [[] for _ in range(n)]
        self.partial = [0] * n  # each row's state in the marker's match (`CloseMarker.step`)
        self.closed_at = [-1] * n  # step at which each row left the reasoning phase
        self.eos = eos

    def allowed(self, think_top_raw: torch.Tensor) -> torch.Tensor:
        """Rows where steering may act this step (thinking model's greedy ids in its own vocabulary)."""
        if not self.active:
            return torch.ones(len(think_top_raw), dtype=torch.bool)
        busy = torch.tensor([bool(q) for q in self.queue], dtype=torch.bool)
        allowed = self.inside & ~busy
        return allowed & (think_top_raw != self.close) if self.close is not None else allowed

    def apply(self, k: int, token: torch.Tensor, think_top: torch.Tensor, think_top_raw: torch.Tensor,
              done: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(base token per row, thinking-side id to feed per row or -1 = the base token through the map)."""
        feed = torch.full_like(token, -1)
        if not self.active:
            return token, feed
        token = token.clone()
        for r in range(len(token)):
            if done[r] or not (self.inside[r] or self.queue[r]):
                continue
            if self.queue[r]:  # giving the base its answer prompt
                token[r] = self.queue[r].pop(0)
            else:
                own = int(think_top_raw[r])
                self.partial[r], seen = self.marker.step(self.partial[r], own)
                if seen == "close":
                    feed[r] = own
                    self.closed_at[r] = k
                    if self.answer:
                        token[r] = self.answer[0]
                        self.queue[r] = list(self.answer[1:])
                elif seen == "partial":  # the thinking model spells its marker: fed its own token
                    feed[r] = own
                elif int(token[r]) == self.eos:
                    token[r] = think_top[r]
            if not self.queue[r] and self.closed_at[r] >= 0:
                self.inside[r] = False
        return token, feed
