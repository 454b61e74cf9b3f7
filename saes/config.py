"""Training configuration for SAEs, and the sae_lens training SAE it builds.

`TrainConfig` holds everything a run needs besides the activations (architecture, width,
sparsity, optimiser, buffer, checkpoints). It is plain data: saved with every checkpoint and
compared on resume, so a resumed run cannot silently continue with other settings.

The architecture is any name in sae_lens's training-class registry (`sae_lens.register_sae_training_class`;
`registered_architectures()` lists them: standard, gated, topk, abstopk, jumprelu, batchtopk,
matryoshka_batchtopk, matching_pursuit in sae_lens 6, plus any a user registers before training). The
registered config class gets the width, device and normalisation, every `TrainConfig` sparsity setting it
has a field for (`k`, `l1_coefficient`, `l0_coefficient`, `jumprelu_init_threshold`), and
`TrainConfig.options` for its other fields (e.g. `matryoshka_widths`).

Creating a `TrainConfig` checks only what needs no sae_lens (numbers, option names lens fills, JSON values), so
modules can hold configs without importing sae_lens (seconds). `TrainConfig.validate()` checks the rest against
the registry (a registered architecture, options its config class has, k within d_sae); `train_sae`,
`training_sae` and `lens sae train` call it before anything is written, so an architecture a user registers
after creating the config trains too.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from lens.errors import LensError, check_number

SHARED_SETTINGS = ("k", "l1_coefficient", "l0_coefficient", "jumprelu_init_threshold")
"""`TrainConfig` fields handed to every registered config class that has a field of the same name."""

LENS_SET = ("d_in", "d_sae", "device", "dtype", "metadata", "normalize_activations")
"""Config-class fields lens fills from the data and `TrainConfig` (not settable through `options`)."""

BUILTIN_ARCHITECTURES = ("abstopk", "batchtopk", "gated", "jumprelu", "matching_pursuit", "matryoshka_batchtopk",
                         "standard", "topk")
"""The architectures sae_lens registers itself (`registered_architectures()` without a user's; a test keeps the
two equal), named without importing sae_lens, e.g. in `lens sae train --help`."""


def registered_architectures() -> tuple[str, ...]:
    """Names of the SAE architectures sae_lens can train (its training-class registry), sorted."""
    import sae_lens  # noqa: F401  (importing sae_lens registers its built-in architectures)
    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY

    return tuple(sorted(SAE_TRAINING_CLASS_REGISTRY))


def training_classes(architecture: str) -> tuple[type, type]:
    """sae_lens's (training SAE class, training config class) registered as `architecture`.

    An unregistered name raises a LensError listing the registered ones."""
    import sae_lens  # noqa: F401
    from sae_lens.registry import get_sae_training_class

    try:
        return get_sae_training_class(architecture)
    except (KeyError, TypeError):
        raise LensError(f"unknown SAE architecture {architecture!r}; use one of "
                        f"{', '.join(registered_architectures())} (sae_lens's training registry)") from None


def config_fields(architecture: str) -> dict[str, Any]:
    """Field name -> type of the training config class registered as `architecture`."""
    cfg_cls = training_classes(architecture)[1]
    try:
        hints = typing.get_type_hints(cfg_cls)
    except Exception:  # an annotation that does not resolve here: fall back to the raw ones
        hints = {}
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cfg_cls)}


@dataclass
class TrainConfig:
    """Settings of one SAE training run.

    architecture: a name in sae_lens's training registry (`registered_architectures()`): "topk",
        "batchtopk", "jumprelu", "standard" (L1), "gated", "matryoshka_batchtopk", ...
    d_sae: number of latents; None means `expansion * d_in`.
    k: active latents per row (topk) or on average per row (batchtopk).
    l1_coefficient: sparsity weight of the standard SAE; l0_coefficient: of the JumpReLU SAE.
    total_rows: training rows (activation vectors) to consume; the stream is re-read in epochs.
    batch_size: rows per optimiser step; buffer_rows: rows held in the shuffling buffer
        (the only activation memory besides one shard being read).
    normalize: "none" or "expected_average_only_in" (scale rows to norm sqrt(d_in) while
        training; the factor is folded into the weights at the end).
    checkpoint_every: optimiser steps between checkpoints (0: only at the end).
    options: further fields of the architecture's sae_lens config class, by name (JSON values), e.g.
        {"matryoshka_widths": [64, 256]} or {"aux_loss_coefficient": 0.5}; the ones lens fills (`LENS_SET`,
        `SHARED_SETTINGS`) are refused on creation, names the class lacks by `validate`.
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
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse settings no run can use that are known without sae_lens: a non-name architecture, options
        that are not a dict of JSON values or that lens fills, each number finite and in its range.
        `validate` checks the rest against sae_lens's registry."""
        if not isinstance(self.architecture, str):
            raise LensError(f"architecture must be a name, got {self.architecture!r}")
        self._check_option_values()
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

    def _check_option_values(self) -> None:
        if not isinstance(self.options, dict):
            raise LensError(f"options must be a dict of {self.architecture} config fields, got {self.options!r}")
        for name in self.options:
            if not isinstance(name, str):
                raise LensError(f"option names must be strings, got {name!r}")
            if name in SHARED_SETTINGS:
                flag = {"k": "--k", "l1_coefficient": "--l1", "l0_coefficient": "--l0"}.get(name)
                raise LensError(f"option {name!r} is set by lens from TrainConfig.{name}"
                                f"{f' ({flag} in lens sae train)' if flag else ''}, not by options")
            if name in LENS_SET:
                raise LensError(f"option {name!r} is set by lens from the data and TrainConfig (d_sae / expansion, "
                                "device, normalize), not by options")
        try:
            json.dumps(self.options)
        except (TypeError, ValueError) as e:
            raise LensError(f"options must be JSON values (they are saved with every checkpoint): {e}") from None

    def validate(self) -> TrainConfig:
        """Check the settings against sae_lens's training registry (imports sae_lens): the architecture is
        registered (else a LensError lists the registered ones), every option is a field of its config class,
        and k is within d_sae when d_sae is given. Returns self."""
        known = config_fields(self.architecture)
        settable = sorted(set(known) - set(LENS_SET) - set(SHARED_SETTINGS))
        for name in self.options:
            if name not in known:
                raise LensError(f"option {name!r} is not a setting of the {self.architecture} SAE; its settings: "
                                f"{', '.join(settable) or 'none'}")
        if self.d_sae is not None:
            self.check_width(1)
        return self

    def check_width(self, d_in: int) -> None:
        """Refuse a k larger than the SAE's width on `d_in`-dimensional rows (architectures with a k)."""
        width = self.width(d_in)
        if "k" in config_fields(self.architecture) and self.k > width:
            how = "as given" if self.d_sae else f"= expansion {self.expansion} x d_in {d_in}"
            raise LensError(f"k ({self.k}) is larger than d_sae ({width} {how}); lower k or widen the SAE "
                            "(--k, --expansion, --d-sae)")

    def width(self, d_in: int) -> int:
        return int(self.d_sae or self.expansion * d_in)

    @property
    def total_steps(self) -> int:
        return self.total_rows // self.batch_size

    def to_json(self) -> dict:
        return asdict(self)  # options: deep-copied JSON values

    @classmethod
    def from_json(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def differs(self, other: TrainConfig) -> list[str]:
        """Names of settings that differ (device, checkpoint cadence and the decode path do not count)."""
        skip = {"device", "checkpoint_every", "sparse_decode"}
        a, b = self.to_json(), other.to_json()
        return [k for k in a if k not in skip and a[k] != b[k]]


def _coerce(value: Any, kind: Any) -> Any:
    """`value` as the config field's type where it is a plain number type (batchtopk's k is a float)."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _sparse_decode_class(cls: type) -> type | None:
    """lens's sparse-decode subclass of sae_lens's TopK / BatchTopK training class, if `cls` is one of those."""
    from .sparse_decode import SparseDecodeBatchTopKTrainingSAE, SparseDecodeTopKTrainingSAE

    for sparse in (SparseDecodeTopKTrainingSAE, SparseDecodeBatchTopKTrainingSAE):
        if sparse.__bases__[0] is cls:
            return sparse
    return None


def training_sae(cfg: TrainConfig, d_in: int, metadata: dict[str, Any] | None = None):
    """A fresh sae_lens training SAE of `cfg.architecture` (seeded by `cfg.seed`), from sae_lens's registry.

    A setting the config class refuses (e.g. matryoshka widths that do not increase) raises a LensError."""
    import torch
    from sae_lens.saes.sae import SAEMetadata

    cfg.validate()
    sae_cls, cfg_cls = training_classes(cfg.architecture)
    known = config_fields(cfg.architecture)
    cfg.check_width(d_in)
    kwargs: dict[str, Any] = dict(d_in=d_in, d_sae=cfg.width(d_in), device=cfg.device, dtype="float32",
                                  normalize_activations=cfg.normalize)
    for name in SHARED_SETTINGS:
        if name in known:
            kwargs[name] = _coerce(getattr(cfg, name), known[name])
    kwargs.update({name: _coerce(copy.deepcopy(value), known[name]) for name, value in cfg.options.items()})  # sae_lens
    # may extend a list it is given (matryoshka widths); the copy keeps cfg.options as saved
    if cfg.sparse_decode:
        sae_cls = _sparse_decode_class(sae_cls) or sae_cls
    torch.manual_seed(cfg.seed)
    try:
        sae = sae_cls(cfg_cls(**kwargs))
    except (ValueError, TypeError, AssertionError) as e:
        why = (str(e).splitlines() or [""])[0][:200]
        raise LensError(f"sae_lens refused the {cfg.architecture} settings ({type(e).__name__}: {why}); change "
                        "them (its own fields: TrainConfig.options, --option in lens sae train)") from None
    if metadata:
        sae.cfg.metadata = SAEMetadata(**{**sae.cfg.metadata.to_dict(), **metadata})
    return sae
