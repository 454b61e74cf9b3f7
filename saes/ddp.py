"""Data-parallel SAE training: sae_lens's `SAETrainer` on each rank, gradients averaged by PyTorch DDP.

Under `torchrun` / `accelerate launch` every rank builds the same global batch (the same shuffled
stream of the same source) and trains on its contiguous share (`share`). `attach` routes the trainer's
`training_forward_pass` through `torch.nn.parallel.DistributedDataParallel`, so the backward pass
all-reduces the gradients to their mean over ranks before sae_lens clips them and steps Adam: every
rank applies the update of the mean loss over the whole global batch, which is what one process
computes (the losses of topk, jumprelu and standard SAEs are means over rows). `sync_stats` then
merges the dead-latent bookkeeping (latents that fired on any rank, firing counts summed) so the
next step's dead mask and AuxK loss are the global ones.

That is exact for architectures whose loss is a mean over rows of per-row terms and whose training state is
their parameters: topk, abstopk, standard, gated, jumprelu and matching_pursuit (each trained by two gloo
processes equals one process within 1e-5, tests/test_sae_scale.py). BatchTopK and the architectures built on
it (matryoshka_batchtopk, and any registered subclass) choose their latents over the whole batch and keep a
running threshold (`topk_threshold`, a buffer) from each batch's smallest active value; a rank sees only its
share, and DDP copies rank 0's buffers to the others, so they are refused (`check_parallel`), as is any SAE
with buffers (`check_state`: training state that all-reducing gradients does not merge).
"""

from __future__ import annotations

import torch
from jaxtyping import Float

from lens.distributed import Ranks
from lens.errors import LensError

PARALLEL_FIX = ("train it in one process (lens sae train without torchrun / accelerate launch), or pick an "
                "architecture that trains data-parallel: topk, abstopk, jumprelu, standard, gated, matching_pursuit")


def check_parallel(architecture: str, batch_size: int, r: Ranks) -> None:
    """Refuse settings a data-parallel run cannot train like one process (with the fix): a BatchTopK-family
    architecture (its training class is sae_lens's BatchTopKTrainingSAE or a subclass), a batch that does not
    split into equal shares."""
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE

    from .config import training_classes

    if r.world > 1 and issubclass(training_classes(architecture)[0], BatchTopKTrainingSAE):
        raise LensError(f"{architecture} cannot train data-parallel across {r.world} processes: it picks its "
                        "latents over the whole batch and keeps a running threshold from each batch, and a "
                        f"process sees only its share; {PARALLEL_FIX}")
    if batch_size % r.world:
        raise LensError(f"batch_size ({batch_size}) must be a multiple of the number of processes ({r.world}) so "
                        "each takes an equal share of every batch; change --batch-size or --nproc-per-node")


def check_state(sae, architecture: str) -> None:
    """Refuse an SAE that keeps training state in buffers (e.g. a running threshold): each process would update
    it from its own share, and all-reducing gradients does not merge it."""
    names = [name for name, _ in sae.named_buffers()]
    if names:
        raise LensError(f"{architecture} cannot train data-parallel: its SAE keeps training state outside its "
                        f"parameters ({', '.join(names)}) that each process would update from its own share; "
                        f"{PARALLEL_FIX}")


def share(batch: Float[torch.Tensor, "batch d_in"], r: Ranks) -> Float[torch.Tensor, "share d_in"]:
    """Rank r's contiguous share of a global batch (equal shares; `check_parallel` guarantees they divide)."""
    n = batch.shape[0] // r.world
    return batch[r.rank * n : (r.rank + 1) * n]


class _TrainingForward(torch.nn.Module):
    """The SAE as a module whose forward is sae_lens's training forward pass (what DDP wraps)."""

    def __init__(self, sae):
        super().__init__()
        self.sae = sae

    def forward(self, step_input):
        return type(self.sae).training_forward_pass(self.sae, step_input)


def attach(trainer, device: str) -> None:
    """Make `trainer`'s steps all-reduce gradients across the process group (joined before this)."""
    from torch.nn.parallel import DistributedDataParallel

    sae = trainer.sae
    ids = [torch.device(device).index] if torch.device(device).type == "cuda" else None
    ddp = DistributedDataParallel(_TrainingForward(sae), device_ids=ids)
    sae.training_forward_pass = lambda step_input: ddp(step_input)  # what SAETrainer._train_step calls
    trainer._lens_ddp = ddp


def detach(trainer) -> None:
    """Undo `attach` (before the SAE is saved or reused)."""
    if "training_forward_pass" in trainer.sae.__dict__:
        del trainer.sae.__dict__["training_forward_pass"]
    trainer.__dict__.pop("_lens_ddp", None)


def stats_before(trainer) -> torch.Tensor:
    """The firing counts before a step (what `sync_stats` adds every rank's new counts to)."""
    return trainer.act_freq_scores.clone()


def sync_stats(trainer, before: torch.Tensor) -> None:
    """After a step on each rank's share: firing counts summed over ranks, and a latent counted as fired
    (`n_forward_passes_since_fired` reset) when it fired on any rank, as one process on the whole batch."""
    import torch.distributed as dist

    new = trainer.act_freq_scores - before
    dist.all_reduce(new)
    trainer.act_freq_scores = before + new
    dist.all_reduce(trainer.n_forward_passes_since_fired, op=dist.ReduceOp.MIN)
