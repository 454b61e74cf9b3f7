"""The thinking model's reasoning phase, as the paper's hybrid_eval.py handles it (mode paper).

Every row starts in the reasoning phase. There the gate may fire, and a base EOS is replaced by the
thinking model's greedy token. When the thinking model's greedy token is its end-of-reasoning marker
(``cfg.think_close``, e.g. ``</think>``), that step is not steered: the thinking model is fed its marker,
the base is given ``cfg.answer_prompt`` (the paper's "\\n\\nFinal answer: "; one token per step), and the
row enters the answer phase: no steering, no EOS suppression, the base answers freely. Used only when the
thinking tokenizer encodes the marker as one token (the paper's BPE-suffix detection of a marker split
into several tokens is not ported); otherwise nothing here changes the loop (`active` is False).
All on the host, one instance per generation of the KV-cached loop (`lens.hybrid.reference` ports the
same state machine with its own code).
"""

from __future__ import annotations

import torch

from ..models import Model
from .config import HybridConfig


class Region:
    def __init__(self, cfg: HybridConfig, base: Model, thinking: Model, n: int, eos: int):
        close = []
        if cfg.mode == "paper" and cfg.think_close:
            close = thinking.tokenizer.encode(cfg.think_close, add_special_tokens=False)
        self.close = int(close[0]) if len(close) == 1 else None
        self.active = self.close is not None
        self.answer = base.tokenizer.encode(cfg.answer_prompt, add_special_tokens=False) if self.active else []
        self.inside = torch.ones(n, dtype=torch.bool)
        self.queue: list[list[int]] = [[] for _ in range(n)]
        self.closed_at = [-1] * n  # step at which each row left the reasoning phase
        self.eos = eos

    def allowed(self, think_top_raw: torch.Tensor) -> torch.Tensor:
        """Rows where steering may act this step (thinking model's greedy ids in its own vocabulary)."""
        if not self.active:
            return torch.ones(len(think_top_raw), dtype=torch.bool)
        busy = torch.tensor([bool(q) for q in self.queue], dtype=torch.bool)
        return self.inside & ~busy & (think_top_raw != self.close)

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
            elif int(think_top_raw[r]) == self.close:
                feed[r] = self.close
                self.closed_at[r] = k
                if self.answer:
                    token[r] = self.answer[0]
                    self.queue[r] = list(self.answer[1:])
            elif int(token[r]) == self.eos:
                token[r] = think_top[r]
            if not self.queue[r] and self.closed_at[r] >= 0:
                self.inside[r] = False
        return token, feed
