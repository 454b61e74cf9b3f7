"""Batched generation: greedy or seeded sampling, n samples per prompt, per-step top-2 probabilities.

Decoding runs `lens.decoding.loop.decode_loop` (KV cache on, left padding, attention mask, position
ids from the mask: the forward calls Hugging Face's ``generate`` makes, without its per-call and
per-step bookkeeping), or ``model.hf.generate`` itself with ``backend="hf"``; both give the same
tokens. Hooks registered on the model's layers -- e.g. by ``lens.steer`` -- see ordinary forward calls.

Decoding is fully specified by this module, not by the model's ``generation_config``: no repetition
penalty, no top-k, no minimum length unless asked.

Reproducibility of sampling: every sample (prompt ``i``, sample ``j``) draws from its own
``torch.Generator`` seeded from ``(seed, i, j)``, and draws once per step whatever its batch. So the
same ``seed`` gives the same samples for any ``batch_size`` and any order of prompts, up to float
differences of the logits that padding in a batch can cause (about 1e-6; they change a draw only
when the uniform falls that close to a boundary of the cumulative distribution, i.e. almost never).
For one ``batch_size`` on one device the samples are bit-for-bit identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..batching import left_pad, pad_id
from ..errors import LensError
from ..interventions.engine import batch_rows
from .loop import decode_loop
from .samples import Generation, Sample
from .spans import decode

Prompt = str | Sequence[int]


# ---------------------------------------------------------------------------- sampling presets


@dataclass(frozen=True)
class SamplingPreset:
    """Named sampling settings for pass@k: ``temperature``, nucleus ``top_p``, and where they come from."""

    name: str
    temperature: float
    top_p: float
    source: str

    def as_dict(self) -> dict:
        return {"name": self.name, "temperature": self.temperature, "top_p": self.top_p, "source": self.source}


#: ``default``: the model's own distribution (lens's default). ``yue``: the pass@k paper's settings.
#: ``oat_zero``: the defaults of oat-zero's self-reflection analysis.
SAMPLING_PRESETS: dict[str, SamplingPreset] = {
    "default": SamplingPreset("default", 1.0, 1.0, "lens: softmax of the raw logits, no nucleus"),
    "yue": SamplingPreset(
        "yue", 0.6, 0.95,
        "Yue et al. 2504.13837 (LeapLabTHU/limit-of-RLVR, math/README.md: --temperature 0.6 --top_p 0.95)",
    ),
    "oat_zero": SamplingPreset(
        "oat_zero", 0.6, 0.9,
        "Liu et al., sail-sg/oat-zero analysis/eval_self_reflect.py (temperature 0.6 default, top_p 0.9)",
    ),
}


def sampling_preset(name: str) -> SamplingPreset:
    """The preset called ``name`` (``default``, ``yue``, ``oat_zero``)."""
    if name not in SAMPLING_PRESETS:
        raise LensError(f"unknown sampling preset {name!r}; choose one of {', '.join(SAMPLING_PRESETS)}")
    return SAMPLING_PRESETS[name]


# ---------------------------------------------------------------------------- helpers


def sample_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """The seed of one sample's generator (a hash of the three numbers, 63 bits)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(prompt_index), int(sample_index)])
    return int(state.generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def encode_prompts(model: Any, prompts: Sequence[Prompt], add_special_tokens: bool = True) -> list[list[int]]:
    """Token ids of each prompt (strings are tokenized; id sequences are kept as they are).

    Special tokens are added to a string prompt unless it already starts with the tokenizer's BOS
    text (a chat template's output: one BOS, not two; `lens.batching.adds_special_tokens`).
    """
    from ..batching import adds_special_tokens

    if isinstance(prompts, str):
        raise LensError("prompts must be a list of strings (or of token-id lists), not one string: wrap it in [...]")
    out: list[list[int]] = []
    for p in prompts:
        if isinstance(p, str):
            special = add_special_tokens and adds_special_tokens(model.tokenizer, p)
            out.append(list(model.tokenizer(p, add_special_tokens=special)["input_ids"]))
        else:
            out.append([int(t) for t in p])
        if not out[-1]:
            raise LensError(f"prompt {len(out) - 1} is empty after tokenization; give at least one token")
    return out


def eos_ids(model: Any, eos_token_id: int | Sequence[int] | None | str = "default") -> list[int]:
    """EOS ids: ``"default"`` = the tokenizer's plus the model generation config's; None = none."""
    if eos_token_id is None:
        return []
    if eos_token_id == "default":
        found: list[int] = []
        tok_eos = getattr(model.tokenizer, "eos_token_id", None)
        gen = getattr(model.hf, "generation_config", None)
        cfg_eos = getattr(gen, "eos_token_id", None) if gen is not None else None
        for e in (tok_eos, cfg_eos):
            if e is None:
                continue
            for x in e if isinstance(e, (list, tuple)) else [e]:
                if int(x) not in found:
                    found.append(int(x))
        return found
    if isinstance(eos_token_id, int):
        return [eos_token_id]
    return [int(x) for x in eos_token_id]


# Every GenerationConfig field that changes which tokens HF ``generate`` picks, how it runs the forward
# passes, or what it returns, set to its no-op value: HF fills each field left None from the model's own
# ``generation_config``. (The lengths are set per call: see `generation_config`.)
NEUTRAL_GENERATION = dict(
    do_sample=False, num_beams=1, num_beam_groups=1, num_return_sequences=1, use_cache=True,
    cache_implementation="dynamic", disable_compile=True, repetition_penalty=1.0,
    encoder_repetition_penalty=1.0, no_repeat_ngram_size=0, encoder_no_repeat_ngram_size=0,
    renormalize_logits=False, remove_invalid_values=False, guidance_scale=1.0, temperature=1.0, top_k=50,
    top_p=1.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0, penalty_alpha=0.0, diversity_penalty=0.0,
    suppress_tokens=[], begin_suppress_tokens=[], use_mtp=False, is_assistant=False, token_healing=False,
    output_scores=False, output_logits=False, output_attentions=False, output_hidden_states=False,
    return_dict_in_generate=False,
)
# Fields whose no-op value is None, so they cannot be pinned: a model config that sets one is refused.
UNPINNABLE_GENERATION = (
    "sequence_bias", "bad_words_ids", "forced_bos_token_id", "forced_eos_token_id",
    "exponential_decay_length_penalty", "watermarking_config", "max_time", "stop_strings", "constraints",
    "force_words_ids", "prompt_lookup_num_tokens", "assistant_early_exit", "dola_layers", "prefill_chunk_size",
)


def generation_config(
    model: Any, max_new_tokens: int, pad_id: int, eos: list[int], prompt_len: int, *, cache_given: bool = False,
    **extra: Any,
) -> Any:
    """A GenerationConfig that pins every decoding choice (greedy argmax; sampling is done by `lens`).

    Nothing is inherited from ``model.hf.generation_config``: every field that changes the tokens, the
    forward passes or the output is set to its no-op value (`NEUTRAL_GENERATION`); a model config that
    sets one that cannot be pinned (`UNPINNABLE_GENERATION`: ``bad_words_ids``, ``forced_bos_token_id``,
    ...) is refused with the fix. The length is given as ``max_length = prompt_len + max_new_tokens``
    (``max_new_tokens`` only if the model's config sets that, which would take precedence) and the
    minimum as ``min_length = 0`` (likewise), so HF does not warn that both forms are set.
    cache_given: the call passes its own KV cache, which HF refuses next to a ``cache_implementation``,
    so that field is left unset (and a model config that sets it is refused, except "hybrid", which HF drops).
    """
    from transformers import GenerationConfig

    own = getattr(model.hf, "generation_config", None)
    set_there = [f for f in UNPINNABLE_GENERATION if own is not None and getattr(own, f, None) is not None]
    if cache_given and getattr(own, "cache_implementation", None) not in (None, "hybrid"):  # HF drops "hybrid"
        set_there.append("cache_implementation")
    if set_there:
        raise LensError(
            f"the model's generation_config sets {', '.join(set_there)}, which HF generate would apply on "
            f"top of lens's decoding settings; set model.hf.generation_config.{set_there[0]} = None"
            + ("" if cache_given else " (or keep lens.decoding.generate's backend='lens', which ignores it)")
        )
    lengths: dict[str, int] = {}
    if getattr(own, "max_new_tokens", None) is None:
        lengths["max_length"] = prompt_len + max_new_tokens
    else:
        lengths["max_new_tokens"] = max_new_tokens
    lengths["min_length" if getattr(own, "min_new_tokens", None) is None else "min_new_tokens"] = 0
    return GenerationConfig(
        **{
            **NEUTRAL_GENERATION,
            **lengths,
            **({"cache_implementation": None} if cache_given else {}),
            "pad_token_id": pad_id,
            "eos_token_id": eos or [],  # never None: HF would fill it from the model's generation_config
            **extra,
        }
    )


def cache_kwarg() -> str:
    """Name of ``generate``'s cache argument in the installed transformers (``cache`` or ``past_key_values``)."""
    from transformers.generation import utils

    return "cache" if hasattr(utils, "ALL_CACHE_NAMES") and "cache" in utils.ALL_CACHE_NAMES else "past_key_values"


def top_p_filter(logits: Float[Tensor, "batch vocab"], top_p: float) -> Float[Tensor, "batch vocab"]:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability reaches ``top_p``."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs  # mass strictly above each token
    drop_sorted = before >= top_p
    drop_sorted[:, 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


class StepProcessor:
    """A logits processor that records top-2 probabilities and, when sampling, picks each row's token.

    Sampling: the row's distribution is softmax(logits / temperature) restricted to the nucleus
    ``top_p``; one token is drawn with the row's own generator; the returned scores are -inf except
    at the drawn token, so ``generate``'s greedy argmax emits it.
    """

    def __init__(
        self,
        record_top2: bool,
        generators: list[torch.Generator] | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
    ) -> None:
        self.record_top2 = record_top2
        self.generators = generators
        self.temperature = temperature
        self.top_p = top_p
        self.top2: list[Tensor] = []

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        logits = scores.float()
        if self.record_top2:
            self.top2.append(logits.softmax(-1).topk(2, dim=-1).values.cpu())
        if self.generators is None:
            return scores
        probs = top_p_filter(logits / self.temperature, self.top_p).softmax(-1)
        chosen = torch.stack(
            [torch.multinomial(probs[r], 1, generator=g) for r, g in enumerate(self.generators)]
        ).reshape(-1)
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(out.shape[0], device=out.device), chosen] = 0.0
        return out


class StopStrings:
    """A per-row stopping criterion: a row stops once its new text contains one of ``strings``."""

    def __init__(self, tokenizer: Any, strings: Sequence[str], prompt_width: int, batch: int) -> None:
        self.tokenizer = tokenizer
        self.strings = [s for s in strings if s]
        self.prompt_width = prompt_width
        self.tail = max((len(s) for s in self.strings), default=0) + 4
        self.stopped_at = [0] * batch  # number of new tokens when the row stopped (0: not stopped)

    def __call__(self, input_ids: Tensor, scores: Tensor, **kwargs: Any) -> Tensor:
        n_new = input_ids.shape[1] - self.prompt_width
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for r in range(input_ids.shape[0]):
            if self.stopped_at[r]:
                done[r] = True
                continue
            tail = input_ids[r, max(self.prompt_width, input_ids.shape[1] - self.tail) :].tolist()
            text = decode(self.tokenizer, tail)
            if any(s in text for s in self.strings):
                self.stopped_at[r] = n_new
                done[r] = True
        return done


def cut_at_eos(ids: Sequence[int], eos: Sequence[int]) -> tuple[int, str]:
    """(length up to and including the first EOS, "eos") or (len(ids), "length") when there is none."""
    eos_set = set(eos)
    for j, t in enumerate(ids):
        if t in eos_set:
            return j + 1, "eos"
    return len(ids), "length"


def finish(
    tokenizer: Any,
    new_ids: Sequence[int],
    eos: Sequence[int],
    stopped_at: int,
    stop_strings: Sequence[str],
) -> tuple[list[int], str, str]:
    """(token ids, text, finish reason) of one row's raw generated ids."""
    ids = [int(t) for t in new_ids]
    end, reason = cut_at_eos(ids, eos)
    if stopped_at and stopped_at <= end:
        end, reason = stopped_at, "stop"
    ids = ids[:end]
    text = decode(tokenizer, ids)
    if reason == "stop":
        cut = min((text.find(s) + len(s) for s in stop_strings if s and s in text), default=len(text))
        text = text[:cut]
    return ids, text, reason


# ---------------------------------------------------------------------------- generate


def generate(
    model: Any,
    prompts: Sequence[Prompt],
    max_new_tokens: int = 256,
    *,
    greedy: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    n: int = 1,
    seed: int = 0,
    batch_size: int = 32,
    stop_strings: Sequence[str] = (),
    eos_token_id: int | Sequence[int] | None | str = "default",
    return_top2: bool = False,
    add_special_tokens: bool = True,
    backend: str = "lens",
    data_parallel: bool | None = False,
) -> Generation:
    """Complete every prompt ``n`` times; batched, left-padded, with the KV cache.

    model: a ``lens.Model``. prompts: strings (tokenized with ``add_special_tokens``) or token-id lists.
    greedy: argmax at every step (then the ``n`` samples of a prompt are one generation, copied);
        ``greedy=False`` samples from softmax(logits / temperature) within the nucleus ``top_p``,
        seeded per sample (see the module docstring for what is reproducible).
    batch_size: rows (prompt x sample) per ``generate`` call; rows are grouped by prompt length.
    stop_strings: a sample ends once its text contains one of them (the text keeps the stop string).
    eos_token_id: ``"default"`` (tokenizer's and generation config's EOS), an id, a list, or None.
    return_top2: record p(top-1), p(top-2) of the raw distribution at every generated position.
    backend: ``"lens"`` (`decode_loop`, the default) or ``"hf"`` (``model.hf.generate``); same tokens.
    data_parallel: under a launcher (`lens.distributed`), the ranks share out the batches
        (`lens.distributed.claimed`) and all ranks return every sample, equal to one process's (hooks see only
        their rank's rows). True: split when launched with several processes; False (default): never; None:
        inside a `lens.distributed.data_parallel()` block.
    """
    if backend not in ("lens", "hf"):
        raise LensError(f"unknown decoding backend {backend!r}; use 'lens' or 'hf'")
    if max_new_tokens < 1:
        raise LensError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if n < 1 or batch_size < 1:
        raise LensError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
    if not greedy and (temperature <= 0 or not 0 < top_p <= 1):
        raise LensError(
            f"sampling needs temperature > 0 and 0 < top_p <= 1 (got {temperature}, {top_p}); "
            "use greedy=True for argmax decoding"
        )
    encoded = encode_prompts(model, prompts, add_special_tokens)
    pad = pad_id(model.tokenizer)
    eos = eos_ids(model, eos_token_id)
    rows = [(i, j) for i in range(len(encoded)) for j in range(1 if greedy else n)]
    order = sorted(range(len(rows)), key=lambda r: len(encoded[rows[r][0]]))
    results: dict[tuple[int, int], Sample] = {}
    model.hf.eval()
    from .gather import gather_samples, my_batches

    starts, shared = my_batches(list(range(0, len(order), batch_size)), data_parallel)
    for start in starts:
        chunk = [rows[r] for r in order[start : start + batch_size]]
        ids, mask = left_pad([encoded[i] for i, _ in chunk], pad, model.device)
        gens = None
        if not greedy:
            gens = []
            for i, j in chunk:
                g = torch.Generator(device=model.device)
                g.manual_seed(sample_seed(seed, i, j))
                gens.append(g)
        proc = StepProcessor(return_top2, gens, temperature, top_p)
        stop = StopStrings(model.tokenizer, stop_strings, ids.shape[1], len(chunk)) if stop_strings else None
        with torch.no_grad(), batch_rows([i for i, _ in chunk]):  # per-example steering vectors follow the prompts
            if backend == "lens":
                step = proc if (return_top2 or gens is not None) else None  # greedy without top-2: plain argmax
                new = decode_loop(model.hf, ids, mask, max_new_tokens, pad, eos, step, stop).cpu()
            else:
                from transformers import LogitsProcessorList, StoppingCriteriaList

                out = model.hf.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    generation_config=generation_config(model, max_new_tokens, pad, eos, ids.shape[1]),
                    logits_processor=LogitsProcessorList([proc]),
                    stopping_criteria=StoppingCriteriaList([stop] if stop else []),
                )
                new = out[:, ids.shape[1] :].cpu()
        top2 = torch.stack(proc.top2, dim=1) if return_top2 and proc.top2 else None  # [B, T, 2]
        for r, (i, j) in enumerate(chunk):
            tok_ids, text, reason = finish(
                model.tokenizer, new[r].tolist(), eos, stop.stopped_at[r] if stop else 0, stop_strings
            )
            t2 = top2[r, : len(tok_ids)].clone() if top2 is not None else None
            results[(i, j)] = Sample(i, j, text, tok_ids, len(tok_ids), reason, t2)
    if shared is not None:
        results = gather_samples(results, 1 if greedy else n)
    samples: list[Sample] = []
    for i in range(len(encoded)):
        for j in range(n):
            s = results[(i, 0 if greedy else j)]
            samples.append(s if j == 0 or not greedy else Sample(i, j, s.text, list(s.token_ids),
                                                                  s.n_new_tokens, s.finish_reason, s.top2))
    settings = dict(
        max_new_tokens=max_new_tokens, greedy=greedy, temperature=temperature, top_p=top_p, n=n, seed=seed,
        stop_strings=list(stop_strings), eos_token_id=eos, backend=backend,
    )
    return Generation(samples, len(encoded), n, [len(e) for e in encoded], settings, [list(e) for e in encoded])
