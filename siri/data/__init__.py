"""Training and evaluation data: rows from local files or named Hub datasets
(``load_rows``), prompt formatting (``PromptFormatter``), tokenized prompts
(``PromptDataset``) and their resumable order (``PromptSampler``)."""
from siri.data.formatting import DEEPSCALER_INSTRUCTION, PromptFormatter
from siri.data.prompts import PromptDataset, PromptExample, PromptSampler
from siri.data.sources import NAMED_DATASETS, DatasetSpec, LoadedRows, load_rows

__all__ = ["DEEPSCALER_INSTRUCTION", "NAMED_DATASETS", "DatasetSpec", "LoadedRows", "PromptDataset",
           "PromptExample", "PromptFormatter", "PromptSampler", "load_rows"]
