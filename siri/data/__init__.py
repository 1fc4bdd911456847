"""Training and evaluation data: rows from local files, named or any Hub datasets, or records
in memory (``load_rows``, ``rows_from_records``; a prompt is text or chat messages), the prompt format (``PromptFormat``, applied by ``PromptFormatter``; the one a
model was trained with: ``saved_prompt_format``), tokenized prompts (``PromptDataset``) and
their resumable order (``PromptSampler``)."""
from siri.data.formatting import (DEEPSCALER_INSTRUCTION, DEFAULT_PROMPT_FORMAT, PROMPT_FILE, PromptFormat,
                                  PromptFormatter, check_chat_template_kwargs, resolve_prompt_format,
                                  saved_prompt_format)
from siri.data.prompts import PromptDataset, PromptExample, PromptSampler, load_prompt_dataset
from siri.data.sources import (ANSWER_KEYS, NAMED_DATASETS, PROMPT_KEYS, DatasetSpec, LoadedRows,
                               chat_messages_problem, load_rows, looks_like_local_path, rows_from_records)

__all__ = ["ANSWER_KEYS", "DEEPSCALER_INSTRUCTION", "DEFAULT_PROMPT_FORMAT", "NAMED_DATASETS", "PROMPT_FILE",
           "PROMPT_KEYS", "DatasetSpec", "LoadedRows", "PromptDataset", "PromptExample", "PromptFormat",
           "PromptFormatter", "PromptSampler", "chat_messages_problem", "check_chat_template_kwargs",
           "load_prompt_dataset", "load_rows", "looks_like_local_path", "resolve_prompt_format",
           "rows_from_records", "saved_prompt_format"]
