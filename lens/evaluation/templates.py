"""Prompt templates: how a question becomes a prompt.

* ``plain``: ``Q: {question}\\nA:`` (the CoT-decoding paper's format);
* ``user_assistant``: ``User: {question}\\nAssistant:`` (the hybrid paper's base-model prompt,
  thinking-llms-interp ``hybrid/hybrid_eval.py`` ``_build_task_prompts``; the default of ``lens hybrid``
  for a base model on other pairs);
* ``identity`` / ``organism``: the question unchanged (the organism's questions already read
  ``Q:47+38+26=?\\n``);
* ``r1_zero``: DeepSeek-R1-Zero's training template, ending in ``Assistant: <think>`` so the
  completion starts inside the thinking block;
* ``chat``: the tokenizer's chat template (``apply_chat_template``, generation prompt added); with
  ``no_think=True`` the user message gets a ``/no_think`` suffix and the template receives
  ``enable_thinking=False`` (Qwen3's switches; other templates ignore both);
* a format string with ``{question}``, or any callable ``question -> prompt``.

Each model of a pair may get its own prompt: `own_template` picks a model's template (its chat
template when it has one and none was asked for, else the plain one) and `model_prompts` builds them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import LensError, closest

R1_ZERO = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
    "tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
    "User: {question}\nAssistant: <think>"
)
PLAIN = "Q: {question}\nA:"
USER_ASSISTANT = "User: {question}\nAssistant:"

TEMPLATES: dict[str, str] = {"plain": PLAIN, "user_assistant": USER_ASSISTANT, "identity": "{question}",
                             "organism": "{question}", "r1_zero": R1_ZERO}


def chat_prompt(question: str, tokenizer: Any, *, no_think: bool = False, system: str | None = None) -> str:
    """The tokenizer's chat template around one user turn, ready for generation."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise LensError(
            "the 'chat' template needs a tokenizer with a chat template (tokenizer.chat_template is empty); "
            "use 'plain' or 'r1_zero' for base models"
        )
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages.append({"role": "user", "content": question + (" /no_think" if no_think else "")})
    kwargs = {"enable_thinking": False} if no_think else {}
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)


def apply_template(
    template: str | Callable[[str], str],
    questions: Sequence[str],
    tokenizer: Any = None,
    *,
    no_think: bool = False,
    system: str | None = None,
) -> list[str]:
    """Prompts for ``questions`` with a named template, a ``{question}`` format string or a callable."""
    if isinstance(questions, str):
        raise LensError("questions must be a list of strings, not one string: wrap it in [...]")
    if callable(template):
        return [template(q) for q in questions]
    if template == "chat":
        return [chat_prompt(q, tokenizer, no_think=no_think, system=system) for q in questions]
    if template in TEMPLATES:
        fmt = TEMPLATES[template]
    elif "{question}" in template:
        fmt = template
    else:
        hint = closest(template, [*TEMPLATES, "chat"])
        raise LensError(
            f"unknown template {template!r}; use one of {sorted([*TEMPLATES, 'chat'])}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + ", a format string containing {question}, or a function"
        )
    return [fmt.replace("{question}", q) for q in questions]


def own_template(model: Any, template: str | Callable[[str], str] | None = None, *, fallback: str = "plain",
                 ) -> str | Callable[[str], str]:
    """The template a model's prompts use: `template` when given, else ``chat`` when the model's
    tokenizer has a chat template (a thinking model's own format, e.g. R1's ``<｜User｜>...<｜Assistant｜><think>``),
    else `fallback` (``plain``: a base model without a chat template)."""
    if template is not None:
        return template
    tok = getattr(model, "tokenizer", model)
    return "chat" if getattr(tok, "chat_template", None) else fallback


def model_prompts(model: Any, questions: Sequence[str], template: str | Callable[[str], str] | None = None,
                  **kwargs: Any) -> list[str]:
    """Prompts for ``questions`` in `model`'s own template (`own_template`), built with its own tokenizer."""
    return apply_template(own_template(model, template), questions, getattr(model, "tokenizer", model), **kwargs)
