"""Training configuration for SAEs, and the sae_lens training SAE it builds.

`TrainConfig` holds everything a run needs besides the activations (architecture, width,
sparsity, optimiser, buffer, checkpoints). It is plain data: saved with every checkpoint and
compared on resume, so a resumed run cannot silently continue with other settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from lens.errors import LensError, check_number

ARCHITECTURES = ("topk", "batchtopk", "jumprelu", "standard")


@dataclass
class TrainConfig:
    """Settings of one SAE training run.

    architecture: "topk" | "batchtopk" | "jumprelu" | "standard" (L1), all sae_lens training SAEs.
    d_sae: number of latents; None means `expansion * d_in`.
    k: active latents per row (topk) or on average per row (batchtopk).
    l1_coefficient: sparsity weight of the standard SAE; l0_coefficient: of the JumpReLU SAE.
    total_rows: training rows (activation vectors) to consume; the stream is re-read in epochs.
    batch_size: rows per optimiser step; buffer_rows: rows held in the shuffling buffer
        (the only activation memory besides one shard being read).
    normalize: "none" or "expected_average_only_in" (scale rows to norm sqrt(d_in) while
        training; the factor is folded into the weights at the end).
    checkpoint_every: optimiser steps between checkpoints (0: only at the end).
    sparse_decode: topk and batchtopk: decode each training batch from its active latents
        (`saes.sparse_decode`; the same step as sae_lens's dense one up to float rounding, about
        d_sae / k times less decoder work); False runs sae_lens's training classes as they are.
    """

    architecture: str = "topk"
    d_sae: int | None = None
    expansion: int = 8
    k: int = 16
    l1_coefficient: float = 5.0
    l0_coefficient: float = 1.0
    jumprelu_init_threshold: float = 0.01
    lr: float = 1e-3
    lr_end: float | None = None
    lr_warm_up_steps: int = 0
    lr_decay_steps: int = 0
    total_rows: int = 200_000
    batch_size: int = 1024
    buffer_rows: int = 32_768
    dead_feature_window: int = 500
    feature_sampling_window: int = 1000
    normalize: str = "none"
    checkpoint_every: int = 200
    seed: int = 0
    device: str = "cpu"
    sparse_decode: bool = True

    def __post_init__(self) -> None:
        """Refuse settings no run can use: each number finite and in its range, k within d_sae when given."""
        if self.architecture not in ARCHITECTURES:
            raise LensError(f"unknown SAE architecture {self.architecture!r}; use one of {', '.join(ARCHITECTURES)}")
        for name in ("expansion", "k", "total_rows", "batch_size", "buffer_rows", "dead_feature_window",
                     "feature_sampling_window"):
            check_number(name, getattr(self, name), 1, integer=True)
        for name in ("lr_warm_up_steps", "lr_decay_steps", "checkpoint_every", "seed"):
            check_number(name, getattr(self, name), 0, integer=True)
        check_number("d_sae", self.d_sae, 1, integer=True)
        check_number("lr", self.lr, 0, lo_open=True)
        check_number("lr_end", self.lr_end, 0)
        for name in ("l1_coefficient", "l0_coefficient", "jumprelu_init_threshold"):
            check_number(name, getattr(self, name), 0)
        if self.total_rows < self.batch_size:
            raise LensError(f"total_rows ({self.total_rows}) must be at least batch_size ({self.batch_size})")
        if self.buffer_rows < 2 * self.batch_size:
            raise LensError(f"buffer_rows ({self.buffer_rows}) must be at least 2 x batch_size ({self.batch_size})")
        if self.normalize not in ("none", "expected_average_only_in"):
            raise LensError(f"normalize must be 'none' or 'expected_average_only_in', got {self.normalize!r}")
        if self.d_sae is not None:
            self.check_width(1)

    def check_width(self, d_in: int) -> None:
        """Refuse a k larger than the SAE's width on `d_in`-dimensional rows (topk, batchtopk)."""
        width = self.width(d_in)
        if self.architecture in ("topk", "batchtopk") and self.k > width:
            how = "as given" if self.d_sae else f"= expansion {self.expansion} x d_in {d_in}"
            raise LensError(f"k ({self.k}) is larger than d_sae ({width} {how}); lower k or widen the SAE "
                            "(--k, --expansion, --d-sae)")

    def width(self, d_in: int) -> int:
        return int(self.d_sae or self.expansion * d_in)

    @property
    def total_steps(self) -> int:
        return self.total_rows // self.batch_size

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def differs(self, other: TrainConfig) -> list[str]:
        """Names of settings that differ (device, checkpoint cadence and the decode path do not count)."""
        skip = {"device", "checkpoint_every", "sparse_decode"}
        a, b = self.to_json(), other.to_json()
        return [k for k in a if k not in skip and a[k] != b[k]]


def training_sae(cfg: TrainConfig, d_in: int, metadata: dict[str, Any] | None = None):
    """A fresh sae_lens training SAE of `cfg.architecture` (seeded by `cfg.seed`)."""
    import torch
    from sae_lens import (
        BatchTopKTrainingSAE,
        BatchTopKTrainingSAEConfig,
        JumpReLUTrainingSAE,
        JumpReLUTrainingSAEConfig,
        StandardTrainingSAE,
        StandardTrainingSAEConfig,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )
    from sae_lens.saes.sae import SAEMetadata

    cfg.check_width(d_in)
    common = dict(d_in=d_in, d_sae=cfg.width(d_in), device=cfg.device, dtype="float32",
                  normalize_activations=cfg.normalize)
    torch.manual_seed(cfg.seed)
    if cfg.architecture == "topk":
        from .sparse_decode import SparseDecodeTopKTrainingSAE

        cls = SparseDecodeTopKTrainingSAE if cfg.sparse_decode else TopKTrainingSAE
        sae = cls(TopKTrainingSAEConfig(k=cfg.k, **common))
    elif cfg.architecture == "batchtopk":
        from .sparse_decode import SparseDecodeBatchTopKTrainingSAE

        cls = SparseDecodeBatchTopKTrainingSAE if cfg.sparse_decode else BatchTopKTrainingSAE
        sae = cls(BatchTopKTrainingSAEConfig(k=float(cfg.k), **common))
    elif cfg.architecture == "jumprelu":
        sae = JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(
            l0_coefficient=cfg.l0_coefficient, jumprelu_init_threshold=cfg.jumprelu_init_threshold, **common))
    else:
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(l1_coefficient=cfg.l1_coefficient, **common))
    if metadata:
        sae.cfg.metadata = SAEMetadata(**{**sae.cfg.metadata.to_dict(), **metadata})
    return sae
