"""Turning a problem into the model's input: the instruction, the chat template, token ids."""
from __future__ import annotations

__all__ = ["DEEPSCALER_INSTRUCTION", "PromptFormatter"]

DEEPSCALER_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."


class PromptFormatter:
    """Formats a problem as the model's input text and token ids.

    Args:
        tokenizer: a transformers tokenizer (``PreTrainedTokenizerBase``).
        instruction (str | None): appended to every problem after a space, e.g.
            ``DEEPSCALER_INSTRUCTION``; None appends nothing.
        use_chat_template (bool): wrap the text as one user turn with the tokenizer's chat
            template and open the assistant turn. The tokenizer must have a template;
            set False to feed the raw text (base models).
        system_prompt (str | None): a system turn before the user turn (needs the chat
            template).

    Raises:
        ValueError: use_chat_template without a tokenizer chat template, or a
            system_prompt without the chat template.
    """

    def __init__(self, tokenizer, *, instruction: str | None = None, use_chat_template: bool = True,
                 system_prompt: str | None = None):
        if use_chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"{type(tokenizer).__name__} has no chat template; set "
                             "use_chat_template=False to feed the raw prompt text")
        if system_prompt is not None and not use_chat_template:
            raise ValueError("system_prompt needs use_chat_template=True")
        self.tokenizer = tokenizer
        self.instruction = instruction
        self.use_chat_template = use_chat_template
        self.system_prompt = system_prompt

    def text(self, prompt: str) -> str:
        """The full model input for ``prompt`` (a str)."""
        content = prompt if self.instruction is None else f"{prompt} {self.instruction}"
        if not self.use_chat_template:
            return content
        messages = [{"role": "user", "content": content}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def ids(self, prompt: str) -> list[int]:
        """The token ids (list[int]) of ``text(prompt)``, without added special tokens (the
        template already holds any BOS)."""
        return self.tokenizer(self.text(prompt), add_special_tokens=False)["input_ids"]
