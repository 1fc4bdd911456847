"""How a model was trained to see its prompts: the instruction appended to each problem and
whether the chat template wraps it. Saved next to the weights, so evaluation can use the
same format by default instead of guessing.

    PromptFormat(instruction="Put the answer in \\\\boxed{}.", use_chat_template=True).save(model_dir)
    saved_prompt_format(model_dir)      # -> that PromptFormat, or None

Every trainer checkpoint and the demo's base model carry ``siri_prompt.json``; a checkpoint
written before that is read through its run's ``config.yaml`` (``RUN_DIR/checkpoints/step_N``).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import yaml

PROMPT_FILE = "siri_prompt.json"


@dataclass(frozen=True)
class PromptFormat:
    """``instruction`` (str | None): appended after a space; ``use_chat_template``: one user
    turn in the tokenizer's template; ``system_prompt``: a system turn; ``source``: where the
    format came from (for reports)."""

    instruction: str | None
    use_chat_template: bool = True
    system_prompt: str | None = None
    source: str = "default"

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
        """From a :class:`siri.config.DataConfig` (or a dict of its fields)."""
        get = data.get if isinstance(data, dict) else (lambda k, d=None: getattr(data, k, d))
        return cls(instruction=get("instruction"), use_chat_template=bool(get("use_chat_template", True)),
                   system_prompt=get("system_prompt"), source=source)


def saved_prompt_format(model_dir: str | os.PathLike) -> PromptFormat | None:
    """The format ``model_dir`` was trained with: its ``siri_prompt.json``, else the ``data``
    section of ``RUN_DIR/config.yaml`` for a checkpoint ``RUN_DIR/checkpoints/step_N``, else None."""
    model_dir = Path(model_dir)
    saved = model_dir / PROMPT_FILE
    if saved.is_file():
        return replace(PromptFormat(**json.loads(saved.read_text())), source=str(saved))
    run_config = model_dir.parent.parent / "config.yaml"
    if model_dir.parent.name == "checkpoints" and run_config.is_file():
        from siri.config import DataConfig

        data = (yaml.safe_load(run_config.read_text()) or {}).get("data") or {}
        defaults = {"instruction": DataConfig.instruction, "use_chat_template": DataConfig.use_chat_template,
                    "system_prompt": DataConfig.system_prompt}
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
        system_prompt=base.system_prompt,
        source=f"command line over {base.source}" if explicit else base.source)
