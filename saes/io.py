"""SAE folders: save in the sae_lens format (+ lens metadata), load from a folder or the registry.

A saved folder holds what `sae_lens.SAE.load_from_disk` (and so SAEDashboard / Neuronpedia tools)
read: `cfg.json` (architecture, d_in, d_sae, metadata with `hook_name` = the lens site name, which
is also the TransformerLens hook name) and `sae_weights.safetensors`, plus `sparsity.safetensors`
(log10 firing rates) when known. lens adds `lens.json`: the source model's facts (fingerprint,
width, depth), the site, d_in, the training settings and log, and any evals.

TopK SAEs are saved as sae_lens inference models, which fold decoder norms into the weights:
reconstructions are unchanged and every decoder row has unit norm, so `alpha * direction(f)`
adds a vector of norm exactly alpha.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float

from lens.artifacts import base_metadata, read_json, write_json
from lens.errors import LensError
from lens.models import hub_offline
from lens.outputs import atomic_folder, file_mode
from lens.sites import Site

LENS_META = "lens.json"


@dataclass
class Dictionary:
    """A loaded SAE with the site it reads and the model it was trained on.

    sae: the sae_lens inference SAE (`encode`, `decode`, `W_dec`); site: lens site name (or None
    when unknown); meta: lens metadata (model facts, training settings, evals); path: its folder
    or "release/id".
    """

    sae: Any
    site: str | None
    meta: dict = field(default_factory=dict)
    path: str = ""

    @property
    def d_in(self) -> int:
        return int(self.sae.cfg.d_in)

    @property
    def d_sae(self) -> int:
        return int(self.sae.cfg.d_sae)

    @property
    def architecture(self) -> str:
        return str(self.sae.cfg.architecture())

    @property
    def model(self) -> dict:
        return self.meta.get("model") or {}

    @torch.no_grad()
    def encode(self, x: Float[torch.Tensor, "*rows d_in"]) -> Float[torch.Tensor, "*rows d_sae"]:
        return self.sae.encode(x.to(self.sae.W_enc.device, self.sae.W_enc.dtype))

    @torch.no_grad()
    def decode(self, z: Float[torch.Tensor, "*rows d_sae"]) -> Float[torch.Tensor, "*rows d_in"]:
        return self.sae.decode(z)

    @torch.no_grad()
    def reconstruct(self, x: Float[torch.Tensor, "*rows d_in"]) -> Float[torch.Tensor, "*rows d_in"]:
        return self.decode(self.encode(x)).to(x.device, x.dtype)

    @torch.no_grad()
    def direction(self, feature: int, unit: bool = True) -> Float[torch.Tensor, " d_in"]:
        """Decoder row of `feature` (unit norm by default): the vector the feature writes."""
        if not 0 <= feature < self.d_sae:
            raise LensError(f"feature {feature} is out of range for this SAE (0..{self.d_sae - 1})")
        v = self.sae.W_dec[feature].detach().float().clone()
        return v / v.norm().clamp_min(1e-12) if unit else v

    def check(self, model, site: str | Site | None = None, strict_model: bool = False) -> None:
        """Refuse a model whose width differs from d_in, or a site other than the SAE's.

        strict_model: also refuse weights other than those it was trained on (fingerprint).
        """
        if model is not None and model.d_model != self.d_in:
            raise LensError(f"SAE {self.path} reads width {self.d_in} but {model.spec} has d_model {model.d_model}; "
                            "use an SAE trained on this model")
        if site is not None and self.site is not None and Site.parse(site).name != self.site:
            raise LensError(f"SAE {self.path} was trained at {self.site}, not {Site.parse(site).name}; "
                            f"use site {self.site} or an SAE for that site")
        if model is not None and self.site is not None:
            from lens.sites import resolve

            resolve(model, self.site)
        fp = self.model.get("fingerprint")
        if strict_model and model is not None and fp and fp != model.fingerprint:
            raise LensError(f"SAE {self.path} was trained on {self.model.get('spec')} (fingerprint {fp}), "
                            f"not on {model.spec} ({model.fingerprint})")

    def describe(self) -> dict:
        """JSON-ready summary."""
        return {"path": self.path, "architecture": self.architecture, "d_in": self.d_in, "d_sae": self.d_sae,
                "site": self.site, "model": self.model.get("spec"), "fingerprint": self.model.get("fingerprint"),
                "evals": self.meta.get("evals")}


def save_sae(sae, out: str | Path, *, site: str | None, model: dict | None = None, extra: dict | None = None,
             sparsity: torch.Tensor | None = None) -> Path:
    """Save a sae_lens SAE (training or inference) as an sae_lens folder + lens.json in one atomic step.

    The files are written into a temporary folder that then takes `out`'s place in one rename: a
    reader, or a kill at any point, sees the old folder or the new one, never neither and never half.
    Files of the user's in `out` that an SAE folder does not own are kept; a run's checkpoints are not.
    """
    from safetensors.torch import save_file

    out = Path(out)
    with atomic_folder(out, "sae") as tmp:
        if site is not None:
            sae.cfg.metadata.hook_name = Site.parse(site).name
        if model:
            sae.cfg.metadata.model_name = model.get("spec")
        if hasattr(sae, "save_inference_model"):
            sae.save_inference_model(tmp)
        else:
            sae.save_model(tmp)
        if sparsity is not None:
            save_file({"sparsity": sparsity.detach().float().cpu().contiguous()}, tmp / "sparsity.safetensors")
        meta = base_metadata("sae", format="lens-sae/1", site=site, d_in=int(sae.cfg.d_in),
                             d_sae=int(sae.cfg.d_sae), architecture=sae.cfg.architecture(), model=model or {},
                             **(extra or {}))
        write_json(tmp / LENS_META, meta)
        for f in tmp.iterdir():  # sae_lens writes with the default mode; keep the user's umask
            if f.is_file():
                os.chmod(f, file_mode())
    return out


def _check_finite(sae, where) -> None:
    """Refuse an SAE whose weights hold NaN or inf (every encode would be NaN, every eval null)."""
    for name, t in [*sae.named_parameters(), *sae.named_buffers()]:
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise LensError(f"SAE {where}: {name} contains NaN or inf; re-train it (or restore its weights)")


META_TYPES = {"site": (str, type(None)), "model": dict, "train": dict, "source": dict, "evals": (dict, type(None)),
              "steps": int, "rows": int, "complete": bool, "log": list, "format": str}


def read_meta(path: str | Path) -> dict:
    """An SAE folder's lens.json, checked: a JSON object whose known fields have their types (else a
    LensError naming the field and the file)."""
    f = Path(path) / LENS_META
    meta = read_json(f, "SAE metadata")
    if not isinstance(meta, dict):
        raise LensError(f"SAE metadata {f} is not a JSON object; re-save or re-train the SAE")
    for key, typ in META_TYPES.items():
        if key in meta and (not isinstance(meta[key], typ) or (typ is int and isinstance(meta[key], bool))):
            raise LensError(f"SAE metadata {f}: {key!r} has the wrong type; re-save or re-train the SAE")
    return meta


def update_meta(path: str | Path, **fields: Any) -> None:
    """Add or replace fields of a saved SAE's lens.json (e.g. evals)."""
    p = Path(path) / LENS_META
    meta = read_json(p, "SAE metadata") if p.exists() else {}
    meta.update(fields)
    write_json(p, meta)


def load_sae(source: str | Path | Dictionary, model=None, site: str | Site | None = None, *,
             device: str = "cpu", strict_model: bool = False) -> Dictionary:
    """Load an SAE from a folder, or from the sae_lens registry as "RELEASE/ID" or "sae_lens:RELEASE:ID".

    With `model` (and `site`), refuses a width or site mismatch with a LensError that says why.
    """
    if isinstance(source, Dictionary):
        d = source
    else:
        from sae_lens import SAE

        text = str(source)
        path = Path(text).expanduser()
        if path.is_dir():
            if not (path / "cfg.json").exists():
                raise LensError(f"{path} is not an SAE folder (no cfg.json); train one with `lens sae train` "
                                "or point at a sae_lens folder")
            try:
                sae = SAE.load_from_disk(str(path), device=device)
            except Exception as e:  # sae_lens raises many kinds for damaged folders
                why = " ".join(str(e).split())[:200]  # one line whatever torch wrote
                raise LensError(f"cannot load the SAE in {path} ({type(e).__name__}: {why}); "
                                "re-save or re-train it") from None
            _check_finite(sae, path)
            meta = read_meta(path) if (path / LENS_META).exists() else {}
            hook = meta.get("site") or sae.cfg.metadata.hook_name
            d = Dictionary(sae, Site.parse(hook).name if hook else None, meta, str(path))
        else:
            if text.startswith("sae_lens:"):
                release, _, sae_id = text[len("sae_lens:"):].partition(":")
            elif "/" in text and not text.startswith((".", "/", "~")):
                release, _, sae_id = text.partition("/")
            else:
                raise LensError(f"SAE {text} is neither a folder nor a registry name (RELEASE/ID or "
                                "sae_lens:RELEASE:ID)")
            if hub_offline():
                raise LensError(f"SAE {text} comes from the sae_lens registry, which needs the hub, and the hub is "
                                "offline (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE); download it elsewhere and pass "
                                "its folder")
            try:
                sae = SAE.from_pretrained(release, sae_id, device=device)
            except Exception as e:
                raise LensError(f"cannot load {release}/{sae_id} from the sae_lens registry "
                                f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
            _check_finite(sae, f"{release}/{sae_id}")
            hook = sae.cfg.metadata.hook_name
            d = Dictionary(sae, hook if hook and hook.startswith("blocks.") else None,
                           {"model": {"spec": sae.cfg.metadata.model_name}, "release": release, "id": sae_id},
                           f"{release}/{sae_id}")
    if model is not None or site is not None:
        d.check(model, site, strict_model)
    return d
