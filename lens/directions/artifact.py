"""`Direction`: a vector in one site's residual space, with how it was made, saved as safetensors + JSON."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float

from ..artifacts import base_metadata, load_tensors, read_json, save_tensors, write_json
from ..errors import LensError
from ..outputs import atomic_folder, check_output, writer_lock
from ..sites import Site


@dataclass
class Direction:
    """A direction at `site` of the model described by `model` (facts: spec, fingerprint, d_model...).

    method: how it was made ("diff_of_means", "one_vs_rest", "pca", "optimised", ...);
    info: counts of the token sets, norms, labels and anything else worth keeping.
    """

    vector: Float[torch.Tensor, " d_model"]
    site: str
    model: dict
    method: str
    info: dict = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        self.site = Site.parse(self.site).name
        if not torch.isfinite(self.vector).all():
            raise LensError(f"direction {self.name or self.method} at {self.site} contains NaN or inf")

    @property
    def norm(self) -> float:
        return float(self.vector.norm())

    def unit(self) -> Float[torch.Tensor, " d_model"]:
        return self.vector / self.vector.norm().clamp_min(1e-12)

    def check(self, model) -> None:
        """Refuse another width; warn when the weights fingerprint differs (same width, other weights)."""
        if self.vector.numel() != model.d_model:
            raise LensError(
                f"direction {self.name or self.method} has width {self.vector.numel()} but {model.spec} has "
                f"d_model {model.d_model}; it was made on {self.model.get('spec')}. Re-derive it on this model"
            )
        if self.model.get("fingerprint") and self.model["fingerprint"] != model.fingerprint:
            warnings.warn(
                f"direction {self.name or self.method} was made on {self.model.get('spec')} "
                f"(fingerprint {self.model['fingerprint']}), not on {model.spec} ({model.fingerprint})",
                stacklevel=2,
            )

    def intervention(self, scale: float = 1.0, op: str = "add", where=None, unit: bool = False):
        """An Intervention that applies this direction (raw vector, or unit vector with `unit=True`)."""
        from ..interventions import Intervention, Where

        vec = self.unit() if unit else self.vector
        return Intervention(self.site, vec, op=op, scale=scale, where=where or Where(), source=self.name or self.method)

    def save(self, path: str | Path, overwrite: bool = False) -> None:
        """Write `path/direction.safetensors` and `path/direction.json` as one atomic step.

        `path` must be new, empty or a direction folder; an existing direction is replaced only with
        `overwrite=True` (the user's other files in the folder are kept).
        """
        path = Path(path)
        check_output(path, "direction", overwrite=overwrite)
        meta = base_metadata("direction", name=self.name, site=self.site, model=self.model, method=self.method,
                             info=self.info, d_model=int(self.vector.numel()), norm=self.norm, dtype="float32")
        with writer_lock(path, "direction"), atomic_folder(path, "direction") as tmp:
            save_tensors(tmp / "direction.safetensors", {"vector": self.vector.float()}, meta)
            write_json(tmp / "direction.json", meta)

    def __str__(self) -> str:
        return (f"Direction {self.name or self.method} at {self.site}: |v|={self.norm:.4g}, "
                f"d_model={self.vector.numel()}, from {self.model.get('spec')}")


def load_direction(path: str | Path, model=None) -> Direction:
    """Load a saved Direction; with `model`, check width (error) and fingerprint (warning)."""
    path = Path(path)
    meta = read_json(path / "direction.json", "direction")
    fields = {"site": str, "model": dict, "method": str, "d_model": int, "info": dict, "name": str}
    if not isinstance(meta, dict) or any(not isinstance(meta.get(k), t) or isinstance(meta.get(k), bool)
                                         for k, t in fields.items()):
        bad = next((k for k, t in fields.items() if not isinstance(meta, dict) or not isinstance(meta.get(k), t)),
                   "the file")
        raise LensError(f"{path / 'direction.json'}: {bad!r} is missing or of the wrong type; re-create the direction")
    tensors, stored = load_tensors(path / "direction.safetensors", "direction")
    if "vector" not in tensors or tensors["vector"].dim() != 1 or tensors["vector"].numel() != meta["d_model"] \
            or any(stored.get(k) != meta[k] for k in ("site", "model", "method", "d_model") if k in stored):
        raise LensError(f"{path}: direction.safetensors does not match direction.json; re-create it")
    d = Direction(tensors["vector"], meta["site"], meta["model"], meta["method"], meta.get("info", {}),
                  meta.get("name", ""))
    if model is not None:
        d.check(model)
    return d
