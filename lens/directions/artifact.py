"""`Direction`: a vector in one site's residual space, with how it was made, saved as safetensors + JSON."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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

    site: str
    vector: Float[torch.Tensor, " d_model"]
    model: dict
    method: str
    info: dict = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.site, torch.Tensor) or not isinstance(self.vector, torch.Tensor):
            raise LensError("Direction(site, vector, model, method): the site comes first, then the vector tensor "
                            f"(got {type(self.site).__name__}, {type(self.vector).__name__})")
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

    def intervention(self, scale: float = 1.0, where=None, *, op: str = "add", unit: bool = False):
        """An Intervention that applies this direction (raw vector, or unit vector with `unit=True`): how much,
        then where, as `apply` and `lens.Intervention` order them; the op by name."""
        from ..interventions import Intervention, Where

        vec = self.unit() if unit else self.vector
        return Intervention(self.site, vec, op=op, scale=scale, where=where or Where(), source=self.name or self.method)

    @contextmanager
    def apply(self, model, scale: float = 1.0, where=None, *, op: str = "add", unit: bool = False) -> Iterator:
        """Steer `model` with this direction inside the block (`lens.steer` with `self.intervention(...)`);
        yields the steering handle (its `log` says where it fired). Width and fingerprint are checked."""
        from ..interventions import steer

        self.check(model)
        with steer(model, self.intervention(scale, where, op=op, unit=unit)) as handle:
            yield handle

    def _other(self, other: Direction, sign: str) -> torch.Tensor:
        if not isinstance(other, Direction):
            raise LensError(f"a Direction {sign} {type(other).__name__}: combine directions with directions and "
                            "scale them by numbers")
        if other.site != self.site or other.vector.shape != self.vector.shape:
            raise LensError(f"cannot combine {self.name or self.method} ({self.site}, width {self.vector.numel()}) "
                            f"with {other.name or other.method} ({other.site}, width {other.vector.numel()}): "
                            "directions must share site and width")
        return other.vector.to(self.vector.dtype)

    def _derived(self, vector: torch.Tensor, what: str) -> Direction:
        return Direction(self.site, vector, dict(self.model), "arithmetic", {"expression": what}, what)

    def _label(self) -> str:
        return self.name or self.method

    def __add__(self, other: Direction) -> Direction:
        return self._derived(self.vector + self._other(other, "+"), f"({self._label()} + {other._label()})")

    def __sub__(self, other: Direction) -> Direction:
        return self._derived(self.vector - self._other(other, "-"), f"({self._label()} - {other._label()})")

    def __mul__(self, k: float) -> Direction:
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            return NotImplemented
        return self._derived(self.vector * float(k), f"{float(k):g} * {self._label()}")

    __rmul__ = __mul__

    def __neg__(self) -> Direction:
        return self * -1.0

    def __truediv__(self, k: float) -> Direction:
        if isinstance(k, bool) or not isinstance(k, (int, float)) or k == 0:
            raise LensError("divide a Direction by a non-zero number")
        return self * (1.0 / float(k))

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


class Directions:
    """Directions at several sites, applied together (like steering-vectors' layer dict).

    `Directions([d_layer1, d_layer2])` or `Directions({site: direction})`; one Direction per site.
    Arithmetic works site by site on the same set of sites; `apply(model, scale, where)` steers all of them.
    """

    def __init__(self, items: list[Direction] | dict[str, Direction]):
        items = list(items.values()) if isinstance(items, dict) else list(items)
        if not items:
            raise LensError("Directions needs at least one Direction")
        self.by_site: dict[str, Direction] = {}
        for d in items:
            if not isinstance(d, Direction):
                raise LensError(f"Directions holds Direction objects, got {type(d).__name__}")
            if d.site in self.by_site:
                raise LensError(f"two directions at {d.site}; combine them first (d1 + d2) or keep one")
            self.by_site[d.site] = d

    @property
    def sites(self) -> list[str]:
        return list(self.by_site)

    def __getitem__(self, site: str) -> Direction:
        return self.by_site[Site.parse(site).name]

    def __len__(self) -> int:
        return len(self.by_site)

    def interventions(self, scale: float = 1.0, where=None, *, op: str = "add", unit: bool = False) -> list:
        return [d.intervention(scale, where, op=op, unit=unit) for d in self.by_site.values()]

    @contextmanager
    def apply(self, model, scale: float = 1.0, where=None, *, op: str = "add", unit: bool = False) -> Iterator:
        """Steer `model` at every site inside the block (one `lens.steer` with one intervention per site)."""
        from ..interventions import steer

        for d in self.by_site.values():
            d.check(model)
        with steer(model, self.interventions(scale, where, op=op, unit=unit)) as handle:
            yield handle

    def _zip(self, other: Directions) -> list[tuple[Direction, Direction]]:
        if not isinstance(other, Directions) or set(other.by_site) != set(self.by_site):
            raise LensError("combine Directions over the same sites")
        return [(d, other.by_site[s]) for s, d in self.by_site.items()]

    def __add__(self, other: Directions) -> Directions:
        return Directions([a + b for a, b in self._zip(other)])

    def __sub__(self, other: Directions) -> Directions:
        return Directions([a - b for a, b in self._zip(other)])

    def __mul__(self, k: float) -> Directions:
        return Directions([d * k for d in self.by_site.values()])

    __rmul__ = __mul__


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
    d = Direction(meta["site"], tensors["vector"], meta["model"], meta["method"], meta.get("info", {}),
                  meta.get("name", ""))
    if model is not None:
        d.check(model)
    return d
