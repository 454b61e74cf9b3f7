"""`Intervention` and `Where`: what to do to the residual stream, and at which absolute positions.

An intervention is plain data (site, op, vector, scale, where) so it can be validated, printed,
saved as JSON + safetensors, and compiled to other backends.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Bool, Float, Int

from ..artifacts import base_metadata, load_tensors, read_json, save_tensors, write_json
from ..errors import LensError, check_number
from ..sites import Site

OPS = ("add", "set", "project_out", "clamp")


@dataclass(frozen=True)
class Where:
    """Which absolute positions an intervention touches, relative to each row's prompt length P.

    kind:
      "absolute"     positions as given (`positions`), e.g. (0, 5)
      "prompt_last"  the last n prompt tokens: P-n .. P-1
      "last_prompt_token"      P-1 only: the last prompt token, whose forward (step 0 under the KV
                     cache) produces the first generated token
      "first_generated_token"  P only: the first generated token's own position (read at step 1,
                     when that token is fed back; it shapes the second generated token onwards)
      "first_step"   the same position as "last_prompt_token" (P-1), kept under the name the
                     first-step trigger of He et al. uses ("the first step" = the forward that
                     produces the first generated token), not the first generated token's position
      "generated"    generated tokens k in [start, stop): positions P+start .. P+stop-1 (stop=None: all)
      "prompt"       every prompt position 0 .. P-1
      "all"          every position
      "gate"         positions where the named gate fires (set at run time, e.g. by the hybrid)
    """

    kind: str = "all"
    positions: tuple[int, ...] = ()
    n: int = 1
    start: int = 0
    stop: int | None = None
    gate: str = ""

    def __post_init__(self) -> None:
        kinds = ("absolute", "prompt_last", "first_step", "last_prompt_token", "first_generated_token", "generated",
                 "prompt", "all", "gate")
        if self.kind not in kinds:
            raise LensError(f"unknown position kind {self.kind!r}; use one of {', '.join(kinds)}")
        if self.kind == "absolute" and (not self.positions or min(self.positions) < 0):
            raise LensError("absolute positions must be a non-empty list of positions >= 0")
        if self.kind == "prompt_last" and self.n < 1:
            raise LensError("prompt_last needs n >= 1")
        if self.kind == "generated" and (self.start < 0 or (self.stop is not None and self.stop <= self.start)):
            raise LensError(f"generated window [{self.start}, {self.stop}) is empty or negative")
        if self.kind == "gate" and not self.gate:
            raise LensError("a gate intervention needs the gate's name")

    # constructors that read well at call sites
    @classmethod
    def absolute(cls, *positions: int) -> Where:
        return cls("absolute", positions=tuple(positions))

    @classmethod
    def prompt_last(cls, n: int = 1) -> Where:
        return cls("prompt_last", n=n)

    @classmethod
    def first_step(cls) -> Where:
        """He et al.'s first-step trigger: position P-1, the LAST PROMPT TOKEN, touched once, in the
        forward (step 0 under the KV cache) whose output is the first generated token. The same
        position as `last_prompt_token()`; NOT the first generated token's own position (that is
        `first_generated_token()`, P)."""
        return cls("first_step")

    @classmethod
    def last_prompt_token(cls) -> Where:
        """Position P-1, the last prompt token: its forward (step 0) predicts the first generated token."""
        return cls("last_prompt_token")

    @classmethod
    def first_generated_token(cls) -> Where:
        """Position P, the first generated token itself: touched at step 1, when that token is fed
        back (under the KV cache its keys and values are then seen by every later step)."""
        return cls("first_generated_token")

    @classmethod
    def generated(cls, start: int = 0, stop: int | None = None) -> Where:
        return cls("generated", start=start, stop=stop)

    @classmethod
    def on_gate(cls, name: str) -> Where:
        return cls("gate", gate=name)

    def mask(
        self, positions: Int[torch.Tensor, "batch seq"], prompt_len: Int[torch.Tensor, " batch"]
    ) -> Bool[torch.Tensor, "batch seq"]:
        """Which of the given absolute positions this touches (gates are resolved by the engine).

        prompt_len: [batch] (or already [batch, 1]).
        """
        p, plen = positions, (prompt_len if prompt_len.dim() == 2 else prompt_len[:, None])
        if self.kind == "absolute":
            if len(self.positions) <= 8:  # compare with scalars: no host-to-device copy at every call
                hit = torch.zeros_like(p, dtype=torch.bool)
                for q in self.positions:
                    hit |= p == q
                return hit
            return torch.isin(p, torch.tensor(self.positions, device=p.device))
        if self.kind == "prompt_last":
            return (p >= plen - self.n) & (p < plen)
        if self.kind in ("first_step", "last_prompt_token"):
            return p == plen - 1
        if self.kind == "first_generated_token":
            return p == plen
        if self.kind == "generated":
            lower = p >= (plen + self.start if self.start else plen)
            return lower if self.stop is None else lower & (p < plen + self.stop)
        if self.kind == "prompt":
            return p < plen
        if self.kind == "all":
            return torch.ones_like(p, dtype=torch.bool)
        return torch.zeros_like(p, dtype=torch.bool)  # gate: the engine decides

    def __str__(self) -> str:
        return {
            "absolute": f"positions {list(self.positions)}",
            "prompt_last": f"last {self.n} prompt token(s) (P-{self.n}..P-1)",
            "first_step": "first step: the last prompt token only (position P-1, whose forward produces the "
                          "first generated token)",
            "last_prompt_token": "the last prompt token only (position P-1, whose forward produces the first "
                                 "generated token)",
            "first_generated_token": "the first generated token only (position P, fed back at step 1)",
            "generated": f"generated tokens [{self.start}, {'end' if self.stop is None else self.stop}) "
            f"(positions P+{self.start}..)",
            "prompt": "every prompt token (0..P-1)",
            "all": "every token",
            "gate": f"where gate {self.gate!r} fires",
        }[self.kind]

    def to_json(self) -> dict:
        return {"kind": self.kind, "positions": list(self.positions), "n": self.n, "start": self.start,
                "stop": self.stop, "gate": self.gate}

    @classmethod
    def from_json(cls, d: dict) -> Where:
        """Read what `to_json` wrote; a missing "kind" or a field of the wrong type is a LensError."""
        _need(d, ("kind",), "an intervention's \"where\"")
        try:
            stop = None if d.get("stop") is None else int(d["stop"])
            return cls(d["kind"], tuple(int(p) for p in d.get("positions", ())), int(d.get("n", 1)),
                       int(d.get("start", 0)), stop, str(d.get("gate", "")))
        except (TypeError, ValueError) as e:
            raise LensError(f"an intervention's \"where\" {d!r:.80} has a field of the wrong type ({e})") from None


def _need(d: object, keys: tuple[str, ...], what: str) -> None:
    """`d` is a JSON object holding `keys`; else one LensError naming what is missing."""
    if not isinstance(d, dict):
        raise LensError(f"{what} must be a JSON object, got {type(d).__name__}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise LensError(f"{what} lacks {', '.join(map(repr, missing))}; it holds {sorted(d)}; re-save the spec "
                        "with lens.interventions.save_interventions")


@dataclass
class Intervention:
    """Do `op` with `scale * vector` at `site`, at the positions `where` names.

    op: "add" (h + scale v), "set" (h = scale v), "project_out" (remove the component along v),
        "clamp" (set the component along unit v to `scale`).
    vector: [d_model] (one vector everywhere); [batch, d_model] (row b of each forward call gets vector b:
        per-example steering or patching); or [batch, positions, d_model] with `where` = absolute positions
        (p_0, ..., p_{n-1}): row b at absolute position p_j gets vector [b, j] (activation patching from a
        clean run into a corrupted one, `Intervention.patch`). For project_out/clamp only directions matter.
    source: where the vector came from (a direction file, "sae:PATH#feature", "random", ...), for the log.
    """

    site: str
    vector: Float[torch.Tensor, "*batch_positions d_model"]
    scale: float = 1.0
    where: Where = field(default_factory=Where)
    op: str = "add"
    source: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        self.site = Site.parse(self.site).name
        if isinstance(self.scale, str):
            raise LensError(f"Intervention(site, vector, scale, where, op=...): the op goes by name, e.g. "
                            f"Intervention(site, v, 2.0, Where.first_step(), op={self.scale!r}) (got {self.scale!r} "
                            "where the scale goes)")
        if self.op not in OPS:
            raise LensError(f"unknown op {self.op!r}; use one of {', '.join(OPS)}")
        if not isinstance(self.where, Where):
            raise LensError(f"where must be a lens.Where (e.g. Where.last_prompt_token()), got {self.where!r}; an "
                            "op goes by name (op='project_out')")
        if not isinstance(self.vector, torch.Tensor) or self.vector.dim() not in (1, 2, 3):
            raise LensError("an intervention's vector must be a tensor [d_model], [batch, d_model] or "
                            "[batch, positions, d_model]")
        if self.vector.dim() == 3:
            if self.where.kind != "absolute":
                raise LensError("a per-position vector [batch, positions, d_model] needs where=Where.absolute(p_0, "
                                f"..., p_n-1) naming its positions in order (got {self.where})")
            if self.vector.shape[1] != len(self.where.positions) or len(set(self.where.positions)) != len(
                    self.where.positions):
                raise LensError(f"a per-position vector has {self.vector.shape[1]} positions but where names "
                                f"{list(self.where.positions)}; give each position once, in the vector's order")
        if not torch.isfinite(self.vector).all():
            raise LensError(f"intervention {self.name or self.site}: vector contains NaN or inf")
        check_number("scale", self.scale)
        if self.op in ("project_out", "clamp") and bool((self.vector.norm(dim=-1) == 0).any()):
            raise LensError(f"{self.op} needs non-zero vectors")

    def check(self, model) -> None:
        """Refuse a model whose width differs, or a site that does not exist."""
        from ..sites import resolve

        resolve(model, self.site)
        if self.vector.shape[-1] != model.d_model:
            raise LensError(
                f"intervention {self.name or self.site}: vector width {self.vector.shape[-1]} does not match "
                f"{model.spec} (d_model {model.d_model}); derive the vector from this model"
            )

    def random_like(self, seed: int = 0) -> Intervention:
        """A control: the same site, op, scale and positions with a random direction (Gaussian, seeded)
        of exactly this vector's norm, so any effect it has is what a vector of that size does anyway. A per-example
        or per-position vector gets one random direction per row (and position), each of that row's norm."""
        g = torch.Generator().manual_seed(seed)
        r = torch.randn(tuple(self.vector.shape), generator=g, dtype=torch.float64)
        want = self.vector.double().cpu().norm(dim=-1, keepdim=True)
        r = (r * (want / r.norm(dim=-1, keepdim=True))).to(self.vector.dtype)
        return Intervention(self.site, r.to(self.vector.device), self.scale, self.where, op=self.op,
                            source=f"random (seed {seed}, norm of {self.source or 'the vector'})",
                            name=f"{self.name or 'random'}~{seed}")

    def __str__(self) -> str:
        s = f"{self.op} {self.scale:g} x {self.source or 'vector'} (|v|={float(self.vector.norm()):.3g})"
        return f"{self.name + ': ' if self.name else ''}{s} at {self.site}, {self.where}"

    def to_json(self) -> dict:
        return {"site": self.site, "op": self.op, "scale": self.scale, "where": self.where.to_json(),
                "source": self.source, "name": self.name, "d_model": int(self.vector.shape[-1]),
                "shape": list(self.vector.shape)}

    @classmethod
    def patch(cls, site: str | Site, acts, positions: Sequence[int], *, name: str = "patch") -> Intervention:
        """Activation patching: set `site` at absolute `positions` of every row to the values captured there.

        acts: an `Activations` or a capture folder (`lens.open_capture(...)`, read shard by shard) with
        single-token rows of `site` (e.g. `lens.capture(model, clean_texts, site, "positions:3,4")` or "all"): for
        example b (in input order) and position p_j the row captured at (b, p_j) is used. Run the corrupted
        inputs (one row per captured example, same order) inside `lens.steer(model, iv)`."""
        name_ = Site.parse(site).name
        if not len(positions):
            raise LensError("patching needs at least one position, e.g. Intervention.patch(site, acts, [3, 4])")
        wanted = torch.tensor(sorted({int(p) for p in positions}), dtype=torch.long)
        found: dict[tuple[int, int], torch.Tensor] = {}
        n = 0
        parts = ((acts.shard_site(i, name_) for i in range(len(acts.manifest["shards"])))  # a CaptureFolder: one
                 if hasattr(acts, "shard_site") else [acts])  # shard at a time, that site and the row metadata only
        for part in parts:
            if not len(part):
                continue
            n = max(n, int(part.example.max()) + 1)
            keep = ((part.end == part.start + 1) & torch.isin(part.start, wanted)).nonzero(as_tuple=True)[0]
            rows = part[name_].index_select(0, keep)  # a copy: the shard's other rows are freed
            for k, e, p in zip(range(len(keep)), part.example[keep].tolist(), part.start[keep].tolist(),
                               strict=True):
                found[(e, p)] = rows[k]
        missing = [(b, p) for b in range(n) for p in positions if (b, int(p)) not in found]
        if missing:
            raise LensError(f"patching needs the captured row of every example at every position; missing "
                            f"(example, position) {missing[:5]}; capture with select 'all' or 'positions:...'")
        if not n:
            raise LensError("patching needs captured rows; the activations are empty")
        vec = torch.stack([torch.stack([found[(b, int(p))] for p in positions]) for b in range(n)])
        return cls(name_, vec, op="set", where=Where.absolute(*positions), source="patch", name=name)


def save_interventions(path: str | Path, items: list[Intervention], model=None, overwrite: bool = False) -> None:
    """Save a list as `path/spec.json` (readable) + `path/vectors.safetensors` in one atomic step.

    `path` must be new, empty or an intervention folder (replaced only with `overwrite=True`, keeping
    the user's other files there)."""
    from ..outputs import atomic_folder, check_output, writer_lock

    path = Path(path)
    check_output(path, "interventions", overwrite=overwrite)
    meta = base_metadata("interventions", model=model.facts() if model is not None else None,
                         interventions=[i.to_json() for i in items])
    with writer_lock(path, "intervention spec"), atomic_folder(path, "interventions") as tmp:
        save_tensors(tmp / "vectors.safetensors", {str(k): i.vector for k, i in enumerate(items)}, meta)
        write_json(tmp / "spec.json", meta)


def load_interventions(path: str | Path, model=None) -> list[Intervention]:
    """Load what `save_interventions` wrote; with `model`, check width and sites against it."""
    path = Path(path)
    meta = read_json(path / "spec.json", "intervention spec")
    _need(meta, ("interventions",), f"intervention spec {path / 'spec.json'}")
    if not isinstance(meta["interventions"], list):
        raise LensError(f"intervention spec {path / 'spec.json'}: \"interventions\" must be a list")
    tensors, _ = load_tensors(path / "vectors.safetensors", "intervention vectors")
    items = []
    for k, d in enumerate(meta["interventions"]):
        what = f"intervention {k} of {path / 'spec.json'}"
        _need(d, ("site", "op", "scale", "where"), what)
        if str(k) not in tensors:
            raise LensError(f"{path}/vectors.safetensors lacks vector {k}; the spec and vectors do not match")
        if not isinstance(d["site"], str) or not isinstance(d["op"], str):
            raise LensError(f"{what}: \"site\" and \"op\" must be strings")
        check_number(f"{what}: \"scale\"", d["scale"])
        try:
            where = Where.from_json(d["where"])
        except LensError as e:
            raise LensError(f"{what}: {e}") from None
        items.append(Intervention(d["site"], tensors[str(k)], d["scale"], where, op=d["op"],
                                  source=str(d.get("source", "")), name=str(d.get("name", ""))))
    if model is not None:
        for i in items:
            i.check(model)
    return items


def describe(items: list[Intervention]) -> str:
    """One line per intervention."""
    return "\n".join(str(i) for i in items) if items else "(no interventions)"


def to_json_text(items: list[Intervention]) -> str:
    return json.dumps([i.to_json() for i in items], indent=2)
