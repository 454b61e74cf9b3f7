"""TopK training SAE that decodes from each row's k active latents only (same SAE, same step, less work).

sae_lens's `TopKTrainingSAE` decodes the dense ``[batch, d_sae]`` activations with a dense matmul, so
the decode and its two gradients cost ``batch x d_sae x d_in`` multiply-adds each although only ``k``
of the ``d_sae`` latents of a row are non-zero. `SparseDecodeTopKTrainingSAE` runs the same training
step (sae_lens's `process_sae_in`, encoder, ``torch.topk`` + ReLU, hooks, MSE, AuxK loss, and
`SAETrainer` around it) with the decode as ``embedding_bag`` over the top-k indices weighted by their
values: ``batch x k x d_in`` multiply-adds, the same sum up to float rounding (tested against the
dense step: losses, outputs and every gradient). The weights, the config (``architecture="topk"``)
and the saved folder are sae_lens's; only the training class differs.

With ``rescale_acts_by_decoder_norm`` (sae_lens's training default) the pre-activations are scaled by
the decoder row norms and the decoded values divided by them, as sae_lens does, gathering the k norms
a row uses. Configurations the sparse path does not cover (sparse activations, ``hook_z`` reshaping,
inputs that are not ``[batch, d_in]``) run sae_lens's own step unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from sae_lens import TopKTrainingSAE
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput


class SparseDecodeTopKTrainingSAE(TopKTrainingSAE):
    """sae_lens's TopK training SAE with the training step's decode computed from the top-k latents."""

    def sparse_path(self, sae_in: torch.Tensor) -> bool:
        """Whether this step can take the sparse decode (else sae_lens's dense step runs)."""
        cfg = self.cfg
        return (
            sae_in.ndim == 2
            and not getattr(cfg, "use_sparse_activations", False)
            and getattr(self, "d_head", None) is None
        )

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        """sae_lens's `TrainingSAE.training_forward_pass` with ``decode`` = sum of k weighted decoder rows."""
        if not self.sparse_path(step_input.sae_in):
            return super().training_forward_pass(step_input)
        sae_in = self.process_sae_in(step_input.sae_in)
        raw = self.hook_sae_acts_pre(sae_in @ self.W_enc + self.b_enc)
        norms = self.W_dec.norm(dim=-1) if self.cfg.rescale_acts_by_decoder_norm else None
        hidden_pre = raw * norms if norms is not None else raw  # sae_lens's pre-activations, bit for bit
        with torch.no_grad():
            indices = torch.topk(hidden_pre, k=self.cfg.k, dim=-1, sorted=False).indices  # as sae_lens's TopK
        # The k selected values, with gradients through those entries only (sae_lens's dense graph gives
        # every other entry a zero gradient); hidden_pre keeps its own graph for the AuxK loss.
        picked = raw.gather(-1, indices)
        values = (picked * norms[indices] if norms is not None else picked).relu()
        feature_acts = self.hook_sae_acts_post(torch.zeros_like(raw).scatter_(-1, indices, values.detach()))
        weights = values * (1 / norms)[indices] if norms is not None else values  # as act_times_W_dec
        decoded = F.embedding_bag(indices, self.W_dec, per_sample_weights=weights, mode="sum")
        sae_out = self.run_time_activation_norm_fn_out(self.hook_sae_recons(decoded + self.b_dec))
        mse_loss = self.mse_loss_fn(sae_out, step_input.sae_in).sum(dim=-1).mean()
        aux: dict[str, Any] = self.calculate_aux_loss(
            step_input=step_input, feature_acts=feature_acts, hidden_pre=hidden_pre, sae_out=sae_out
        )
        total = mse_loss
        for value in aux.values():
            total = total + value
        return TrainStepOutput(
            sae_in=step_input.sae_in, sae_out=sae_out, feature_acts=feature_acts, hidden_pre=hidden_pre,
            loss=total, losses={"mse_loss": mse_loss, **aux},
        )
