"""Interventions as data, and the engine that applies them at exact absolute token positions.

Position convention (everywhere in lens): the absolute position of a token is its index in its
own unpadded sequence (0 = first token, BOS included). A prompt of P tokens occupies 0..P-1; the
k-th generated token (k = 0, 1, ...) sits at P + k. Under the KV cache step 0 is the forward pass
over the prompt (it predicts generated token 0) and step s >= 1 processes generated token s - 1
at position P + s - 1. An intervention names positions, never steps, so steering under the KV
cache and a full recompute of the same sequence touch exactly the same tokens.
"""

from .engine import FiredLog, steer
from .spec import Intervention, Where

__all__ = ["FiredLog", "Intervention", "Where", "steer"]
