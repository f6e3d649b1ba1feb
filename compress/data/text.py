"""Sentences for text tasks, tokenized and padded to `max_length`, stored as token ids and
attention masks stacked into one (N, 2, L) int64 array.

Embedding: a file with one sentence per line, or the offline default corpus (documentation strings
of Python's standard library). Classification: a file of `label<TAB>sentence` lines."""

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
    labels, names = None, []
    if path is None:
        texts = sentences()
    else:
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if spec.task == "classification":
        texts, labels, names = labelled(texts, path)
    if len(texts) < 20:
        raise StageError(f"only {len(texts)} sentences in {path}", hint="give at least a few hundred, one per line")
    tokens = load_tokenizer(tokenizer_ref, base_dir)(
        texts, padding="max_length", truncation=True, max_length=spec.max_length, return_tensors="np"
    )
    x = np.stack([tokens["input_ids"], tokens["attention_mask"]], axis=1).astype(np.int64)
    if labels is not None:
        return split(x, labels, spec, seed, names)
    # Labels are filled in later from the source model's own outputs (task: embedding).
    return split(x, np.zeros((len(x), 1), dtype=np.float32), spec, seed, [], stratify=False)


def labelled(lines: list[str], path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Split `label<TAB>sentence` lines; class names are the sorted distinct labels."""
    pairs = [line.split("\t", 1) for line in lines]
    bad = next((i for i, p in enumerate(pairs) if len(p) != 2), None)
    if bad is not None:
        raise StageError(f"{path}:{bad + 1}: expected 'label<TAB>sentence'", hint="one labelled sentence per line")
    names = sorted({label for label, _ in pairs})
    index = {name: i for i, name in enumerate(names)}
    return [text for _, text in pairs], np.array([index[label] for label, _ in pairs], dtype=np.int64), names
