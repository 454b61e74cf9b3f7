"""TopK and BatchTopK training SAEs that decode from the active latents only (same SAE, same step, less work).

sae_lens's `TopKTrainingSAE` decodes the dense ``[batch, d_sae]`` activations with a dense matmul, so
the decode and its two gradients cost ``batch x d_sae x d_in`` multiply-adds each although only ``k``
of the ``d_sae`` latents of a row are non-zero. `SparseDecodeTopKTrainingSAE` runs the same training
step (sae_lens's `process_sae_in`, encoder, ``torch.topk`` + ReLU, MSE, AuxK loss, and `SAETrainer`
around it) with the decode as ``embedding_bag`` over the top-k indices weighted by their
values: ``batch x k x d_in`` multiply-adds, the same sum up to float rounding (tested against the
dense step: losses, outputs and every gradient). Gradients flow through the selected entries only,
as in the dense graph, where every other entry's gradient is zero. `SparseDecodeBatchTopKTrainingSAE`
does the same for BatchTopK (``k x batch`` latents chosen over the whole batch, so a row has any
number: ``embedding_bag`` with per-row offsets) and keeps sae_lens's threshold update. The weights,
the configs (``architecture="topk"`` / ``"batchtopk"``) and the saved folders are sae_lens's; only
the training class differs.

With ``rescale_acts_by_decoder_norm`` (sae_lens's training default) the pre-activations are scaled by
the decoder row norms and the decoded values divided by them, as sae_lens does, gathering the k norms
a row uses. Steps the sparse path does not cover (see `sparse_path`: hooks on the SAE's hook points,
autocast, sparse activations, ``hook_z`` reshaping, inputs that are not ``[batch, d_in]``) run sae_lens's
own step unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from sae_lens import BatchTopKTrainingSAE, TopKTrainingSAE
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput


def sparse_path(sae: TopKTrainingSAE, sae_in: torch.Tensor) -> bool:
    """Whether a step can take the sparse decode; else sae_lens's dense step runs: inputs that are not
    ``[batch, d_in]``, sparse activations, ``hook_z`` reshaping, autocast (the dense decode's matmul
    would run in low precision), or any forward or backward hook on the SAE's modules or on every module
    (the sparse decode does not read the hooked ``feature_acts``)."""
    return (
        sae_in.ndim == 2
        and not getattr(sae.cfg, "use_sparse_activations", False)
        and not getattr(sae, "hook_z_reshaping_mode", False)
        and getattr(sae, "d_head", None) is None
        and not torch.is_autocast_enabled(sae_in.device.type)
        and not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
                    for m in sae.modules())
        and not any(_global_hooks())
    )


def _global_hooks() -> tuple:
    """torch's module hooks registered for every module (`register_module_forward_hook` and kin)."""
    from torch.nn.modules import module as mod

    names = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
             "_global_backward_pre_hooks")
    return tuple(getattr(mod, n, {}) for n in names)


def _pre(sae: TopKTrainingSAE, step_input: TrainStepInput):
    """sae_lens's encoder: (pre-activations before and after the decoder-norm rescaling, the norms)."""
    sae_in = sae.process_sae_in(step_input.sae_in)
    raw = sae.hook_sae_acts_pre(sae_in @ sae.W_enc + sae.b_enc)
    norms = sae.W_dec.norm(dim=-1) if sae.cfg.rescale_acts_by_decoder_norm else None
    hidden_pre = raw * norms if norms is not None else raw  # sae_lens's pre-activations, bit for bit
    return raw, hidden_pre, norms


def _output(sae, step_input, hidden_pre, feature_acts, decoded) -> TrainStepOutput:
    """The rest of sae_lens's `TrainingSAE.training_forward_pass`: output hooks, MSE, AuxK, total."""
    sae_out = sae.run_time_activation_norm_fn_out(sae.hook_sae_recons(decoded + sae.b_dec))
    mse_loss = sae.mse_loss_fn(sae_out, step_input.sae_in).sum(dim=-1).mean()
    aux: dict[str, Any] = sae.calculate_aux_loss(
        step_input=step_input, feature_acts=feature_acts, hidden_pre=hidden_pre, sae_out=sae_out
    )
    total = mse_loss
    for value in aux.values():
        total = total + value
    return TrainStepOutput(
        sae_in=step_input.sae_in, sae_out=sae_out, feature_acts=feature_acts, hidden_pre=hidden_pre,
        loss=total, losses={"mse_loss": mse_loss, **aux},
    )


class SparseDecodeTopKTrainingSAE(TopKTrainingSAE):
    """sae_lens's TopK training SAE with the training step's decode computed from the top-k latents."""

    def sparse_path(self, sae_in: torch.Tensor) -> bool:
        return sparse_path(self, sae_in)

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        """sae_lens's `TrainingSAE.training_forward_pass` with ``decode`` = sum of k weighted decoder rows."""
        if not sparse_path(self, step_input.sae_in):
            return super().training_forward_pass(step_input)
        raw, hidden_pre, norms = _pre(self, step_input)
        with torch.no_grad():
            indices = torch.topk(hidden_pre, k=self.activation_fn.k, dim=-1, sorted=False).indices  # as its TopK
        # The k selected values, with gradients through those entries only; hidden_pre keeps its own
        # graph for the AuxK loss.
        picked = raw.gather(-1, indices)
        values = (picked * norms[indices] if norms is not None else picked).relu()
        feature_acts = self.hook_sae_acts_post(torch.zeros_like(raw).scatter_(-1, indices, values.detach()))
        weights = values * (1 / norms)[indices] if norms is not None else values  # as act_times_W_dec
        decoded = F.embedding_bag(indices, self.W_dec, per_sample_weights=weights, mode="sum")
        return _output(self, step_input, hidden_pre, feature_acts, decoded)


class SparseDecodeBatchTopKTrainingSAE(BatchTopKTrainingSAE):
    """sae_lens's BatchTopK training SAE with the decode computed from the latents chosen over the batch."""

    def sparse_path(self, sae_in: torch.Tensor) -> bool:
        return sparse_path(self, sae_in)

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        """sae_lens's BatchTopK step (ReLU, top ``k x batch`` over the flattened batch, the threshold
        update) with the decode as a weighted sum of each row's chosen decoder rows."""
        if not sparse_path(self, step_input.sae_in):
            return super().training_forward_pass(step_input)
        raw, hidden_pre, norms = _pre(self, step_input)
        n_rows, width = hidden_pre.shape
        with torch.no_grad():  # as sae_lens's BatchTopK; sorted, the flat indices run row by row
            n_active = int(self.activation_fn.k * n_rows)
            flat = torch.topk(hidden_pre.relu().flatten(), n_active, dim=-1).indices.sort().values
            rows, cols = flat // width, flat % width
            offsets = torch.searchsorted(rows, torch.arange(n_rows, device=rows.device))
        picked = raw.flatten()[flat]
        values = (picked * norms[cols] if norms is not None else picked).relu()
        acts = torch.zeros_like(raw).flatten().scatter_(0, flat, values.detach()).reshape(raw.shape)
        feature_acts = self.hook_sae_acts_post(acts)
        weights = values * (1 / norms)[cols] if norms is not None else values
        decoded = F.embedding_bag(cols, self.W_dec, offsets, per_sample_weights=weights, mode="sum")
        out = _output(self, step_input, hidden_pre, feature_acts, decoded)
        self.update_topk_threshold(out.feature_acts)  # as sae_lens's BatchTopK step
        out.metrics["topk_threshold"] = self.topk_threshold
        return out
