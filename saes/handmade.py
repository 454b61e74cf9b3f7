"""A hand-made dictionary: unit-norm random decoder rows, the encoder their transpose, a fixed threshold.

Untrained and cheap, for checks and benchmarks that need an SAE of a given width at a site without training
one (the steer-check's runs, data-parallel equality): its latents are random directions of the residual.
"""

from __future__ import annotations

import torch

from .io import Dictionary


def handmade_dictionary(d_model: int, site: str, d_sae: int = 32, *, seed: int = 0, threshold: float = 0.5,
                        model: dict | None = None) -> Dictionary:
    """A StandardSAE of `d_sae` latents over width `d_model` whose decoder rows are unit random directions
    (seeded), encoder = decoder transposed, encoder bias -`threshold`, decoder bias 0, read at `site`."""
    from sae_lens import StandardSAE, StandardSAEConfig

    dirs = torch.randn(d_sae, d_model, generator=torch.Generator().manual_seed(seed))
    dirs /= dirs.norm(dim=1, keepdim=True)
    sae = StandardSAE(StandardSAEConfig(d_in=d_model, d_sae=d_sae, apply_b_dec_to_input=False))
    with torch.no_grad():
        sae.W_dec.copy_(dirs)
        sae.W_enc.copy_(dirs.T)
        sae.b_enc.fill_(-threshold)
        sae.b_dec.zero_()
    return Dictionary(sae, site, {"model": model or {}}, "handmade")
