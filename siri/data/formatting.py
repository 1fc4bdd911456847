"""The prompt format: how a problem becomes the model's input (the instruction appended to it,
the chat template and its options, a system turn), and how a model remembers the format it was
trained with. A problem is a string or a list of chat messages (``[{"role", "content"}, ...]``).

``PromptFormat`` is the format as data; ``PromptFormatter`` applies one with a tokenizer. The
format is saved next to the weights, so evaluation can use the same one by default instead of
guessing:

    PromptFormat(instruction="Put the answer in \\\\boxed{}.", use_chat_template=True).save(model_dir)
    saved_prompt_format(model_dir)      # -> that PromptFormat, or None
    PromptFormatter(tokenizer, saved_prompt_format(model_dir)).ids("What is 1 + 1?")

Every trainer checkpoint and the demo's base model carry ``siri_prompt.json``; a checkpoint
written before that is read through its run's ``config.yaml`` (``RUN_DIR/checkpoints/step_N``).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEEPSCALER_INSTRUCTION", "DEFAULT_PROMPT_FORMAT", "PROMPT_FILE", "PromptFormat", "PromptFormatter",
           "check_chat_template_kwargs", "resolve_prompt_format", "saved_prompt_format"]

DEEPSCALER_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."
"""DeepScaleR's instruction, the one SIRI trains with."""

PROMPT_FILE = "siri_prompt.json"
"""The file in a model directory that holds the format it was trained with."""

_TEMPLATE_ARGUMENTS = ("conversation", "tokenize", "add_generation_prompt")
"""``apply_chat_template`` arguments the formatter sets itself."""


@dataclass(frozen=True)
class PromptFormat:
    """A prompt format.

    Attributes:
        instruction (str | None): appended to every problem after a space, e.g.
            ``DEEPSCALER_INSTRUCTION``; None appends nothing.
        use_chat_template (bool): wrap the text as one user turn with the tokenizer's chat
            template and open the assistant turn; False feeds the raw text (base models).
        system_prompt (str | None): a system turn before the user turn (needs the chat
            template); a message-list prompt that has its own system message keeps it.
        chat_template_kwargs (dict | None): extra keyword arguments for the tokenizer's
            ``apply_chat_template`` (rendered into the template), e.g. ``{"enable_thinking": False}``.
        source (str): where the format came from (for reports; not saved).
    """

    instruction: str | None = None
    use_chat_template: bool = True
    system_prompt: str | None = None
    source: str = "default"
    chat_template_kwargs: dict[str, Any] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        """The contents of ``siri_prompt.json`` (``source`` is not saved)."""
        return json.dumps({k: v for k, v in self.to_dict().items() if k != "source"}, indent=1) + "\n"

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / PROMPT_FILE
        path.write_text(self.to_json())
        return path

    @classmethod
    def from_data_config(cls, data, source: str) -> "PromptFormat":
        """From a :class:`siri.config.DataConfig` (or a dict of its fields; a missing field
        takes this class's default)."""
        get = data.get if isinstance(data, dict) else (lambda k, d=None: getattr(data, k, d))
        return cls(instruction=get("instruction"), use_chat_template=bool(get("use_chat_template", True)),
                   system_prompt=get("system_prompt"), chat_template_kwargs=get("chat_template_kwargs"),
                   source=source)


DEFAULT_PROMPT_FORMAT = PromptFormat(DEEPSCALER_INSTRUCTION, use_chat_template=True, system_prompt=None,
                                     source="siri's default (DeepScaleR)")
"""The format siri trains with when a config names none (``DataConfig``'s defaults) and the
one ``siri eval`` falls back to when the model's own is unknown."""


class PromptFormatter:
    """Formats a problem as the model's input text and token ids.

    Args:
        tokenizer: a transformers tokenizer (``PreTrainedTokenizerBase``).
        prompt_format (PromptFormat | None): the format; None builds one from ``fields``.
        **fields: ``instruction``, ``use_chat_template``, ``system_prompt``,
            ``chat_template_kwargs``, as in :class:`PromptFormat` (and with its defaults: no
            instruction, chat template on).

    Raises:
        ValueError: use_chat_template without a tokenizer chat template, a system_prompt
            without the chat template, or chat_template_kwargs that are not a mapping with
            string keys or that set an argument the formatter sets itself.
    """

    def __init__(self, tokenizer, prompt_format: PromptFormat | None = None, **fields: Any):
        fmt = prompt_format if prompt_format is not None else PromptFormat(**fields)
        if fmt.use_chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"{type(tokenizer).__name__} has no chat template; set "
                             "use_chat_template=False to feed the raw prompt text")
        if fmt.system_prompt is not None and not fmt.use_chat_template:
            raise ValueError("system_prompt needs use_chat_template=True")
        check_chat_template_kwargs(fmt.chat_template_kwargs)
        self.tokenizer = tokenizer
        self.format = fmt

    def messages(self, prompt: list[dict]) -> list[dict]:
        """The chat messages a message-list ``prompt`` is rendered from: a copy with the
        instruction appended (after a space) to the last user message's content and the
        system prompt put first unless the list has a system message; roles, order and
        other keys are kept. Raises ValueError for a list that is not chat messages."""
        from siri.data.sources import chat_messages_problem

        problem = chat_messages_problem(prompt)
        if problem is not None:
            raise ValueError(f"the prompt is {problem[1]}")
        fmt = self.format
        messages = [dict(m) for m in prompt]
        if fmt.instruction is not None:
            last = max(i for i, m in enumerate(messages) if m["role"] == "user")
            messages[last]["content"] = f"{messages[last]['content']} {fmt.instruction}"
        if fmt.system_prompt is not None and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": fmt.system_prompt})
        return messages

    def text(self, prompt: str | list[dict]) -> str:
        """The full model input for ``prompt``: a problem's text, or a list of chat messages
        (``[{"role": str, "content": str}, ...]``, which needs the chat template)."""
        fmt = self.format
        if isinstance(prompt, str):
            content = prompt if fmt.instruction is None else f"{prompt} {fmt.instruction}"
            if not fmt.use_chat_template:
                return content
            messages = [{"role": "user", "content": content}]
            if fmt.system_prompt is not None:
                messages.insert(0, {"role": "system", "content": fmt.system_prompt})
        elif not fmt.use_chat_template:
            raise ValueError("a prompt given as chat messages needs the chat template: set use_chat_template=True "
                             "(data.use_chat_template), or give prompts as plain text")
        else:
            messages = self.messages(prompt)
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  **(fmt.chat_template_kwargs or {}))

    def ids(self, prompt: str | list[dict]) -> list[int]:
        """The token ids (list[int]) of ``text(prompt)``, without added special tokens (the
        template already holds any BOS)."""
        return self.tokenizer(self.text(prompt), add_special_tokens=False)["input_ids"]


def check_chat_template_kwargs(kwargs, name: str = "chat_template_kwargs") -> None:
    """Raise ValueError (its message starting with ``name``) unless ``kwargs`` is None or a
    mapping with string keys that leaves ``conversation``, ``tokenize`` and
    ``add_generation_prompt`` to the formatter."""
    if kwargs is None:
        return
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ValueError(f"{name} must be a mapping with string keys (e.g. {{enable_thinking: false}}), "
                         f"got {kwargs!r}")
    taken = [k for k in _TEMPLATE_ARGUMENTS if k in kwargs]
    if taken:
        raise ValueError(f"{name} must not set {taken}: the formatter sets {list(_TEMPLATE_ARGUMENTS)} itself")


def saved_prompt_format(model_dir: str | os.PathLike) -> PromptFormat | None:
    """The format ``model_dir`` was trained with: its ``siri_prompt.json``, else the ``data``
    section of ``RUN_DIR/config.yaml`` for a checkpoint ``RUN_DIR/checkpoints/step_N`` (a field
    the section lacks takes ``DEFAULT_PROMPT_FORMAT``'s value, as training did), else None."""
    model_dir = Path(model_dir)
    saved = model_dir / PROMPT_FILE
    if saved.is_file():
        return replace(PromptFormat(**json.loads(saved.read_text())), source=str(saved))
    run_config = model_dir.parent.parent / "config.yaml"
    if model_dir.parent.name == "checkpoints" and run_config.is_file():
        data = (yaml.safe_load(run_config.read_text()) or {}).get("data") or {}
        defaults = {k: v for k, v in DEFAULT_PROMPT_FORMAT.to_dict().items() if k != "source"}
        return PromptFormat.from_data_config({**defaults, **data}, source=str(run_config))
    return None


def resolve_prompt_format(model_dir: str | os.PathLike, default: PromptFormat, *, instruction: str | None = None,
                          no_instruction: bool = False, use_chat_template: bool | None = None) -> PromptFormat:
    """The format to evaluate ``model_dir`` with: what the command line says, else what the
    model was trained with, else ``default``."""
    base = saved_prompt_format(model_dir) or default
    explicit = instruction is not None or no_instruction or use_chat_template is not None
    return PromptFormat(
        instruction=None if no_instruction else (instruction if instruction is not None else base.instruction),
        use_chat_template=base.use_chat_template if use_chat_template is None else use_chat_template,
        system_prompt=base.system_prompt, chat_template_kwargs=base.chat_template_kwargs,
        source=f"command line over {base.source}" if explicit else base.source)
