"""Training and evaluation data: rows from local files or named Hub datasets
(``load_rows``), the prompt format (``PromptFormat``, applied by ``PromptFormatter``; the one a
model was trained with: ``saved_prompt_format``), tokenized prompts (``PromptDataset``) and
their resumable order (``PromptSampler``)."""
from siri.data.formatting import (DEEPSCALER_INSTRUCTION, DEFAULT_PROMPT_FORMAT, PROMPT_FILE, PromptFormat,
                                  PromptFormatter, resolve_prompt_format, saved_prompt_format)
from siri.data.prompts import PromptDataset, PromptExample, PromptSampler, load_prompt_dataset
from siri.data.sources import NAMED_DATASETS, DatasetSpec, LoadedRows, load_rows

__all__ = ["DEEPSCALER_INSTRUCTION", "DEFAULT_PROMPT_FORMAT", "NAMED_DATASETS", "PROMPT_FILE", "DatasetSpec",
           "LoadedRows", "PromptDataset", "PromptExample", "PromptFormat", "PromptFormatter", "PromptSampler",
           "load_prompt_dataset", "load_rows", "resolve_prompt_format", "saved_prompt_format"]
