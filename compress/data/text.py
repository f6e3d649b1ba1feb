"""Sentences for text tasks: a file with one sentence per line, or the offline default corpus
(documentation strings of Python's standard library). Tokenized and padded to `max_length`, and
stored as token ids and attention masks stacked into one (N, 2, L) int64 array."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.data import Splits, split
from compress.errors import StageError


def load(spec, path: Path | None, seed: int, tokenizer_ref: str | None, base_dir: Path) -> Splits:
    from compress.data.corpus import sentences
    from compress.models.hf import load_tokenizer

    if tokenizer_ref is None:
        raise StageError("text data needs a tokenizer", hint="set data.tokenizer, or use an hf: model")
    if path is None:
        texts = sentences()
    else:
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(texts) < 20:
        raise StageError(f"only {len(texts)} sentences in {path}", hint="give at least a few hundred, one per line")
    tokens = load_tokenizer(tokenizer_ref, base_dir)(
        texts, padding="max_length", truncation=True, max_length=spec.max_length, return_tensors="np"
    )
    x = np.stack([tokens["input_ids"], tokens["attention_mask"]], axis=1).astype(np.int64)
    # Labels are filled in later from the source model's own outputs (task: embedding).
    return split(x, np.zeros((len(x), 1), dtype=np.float32), spec, seed, [], stratify=False)
