"""Sentences for text tasks, tokenized and padded to `max_length`, stored as token ids and
attention masks stacked into one (N, 2, L) int64 array.

Embedding: a file with one sentence per line, or the offline default corpus (documentation strings
of Python's standard library), plus training-only sentences from installed packages' docstrings
(`train_packages`). Classification: a file of `label<TAB>sentence` lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.data import DataSource, LoadContext, Splits, split
from compress.errors import DataError, StageError


class Text(DataSource):
    name, path, text = "text", "file", True
    path_means = "a text file"
    tasks = ("classification", "embedding")
    requires = {"transformers": "'compress-edge[text]'"}

    def check(self, spec) -> list[str]:
        if spec.task == "classification" and not spec.path:
            return ["text classification needs 'path': a file of 'label<TAB>sentence' lines"]
        return []

    def load(self, spec, path: Path | None, ctx: LoadContext) -> Splits:
        return load(spec, path, ctx.seed, tokenizer_ref(spec, ctx.model_arch), ctx.base_dir)

    def inputs(self, spec, path: Path | None, ctx: LoadContext) -> list[Path]:
        """The text file, and the tokenizer's folder: a changed vocabulary changes every token id."""
        from compress.models.sources import resolve_hf_path

        ref = tokenizer_ref(spec, ctx.model_arch)
        try:
            folder = [resolve_hf_path(ref, ctx.base_dir)] if ref else []
        except StageError:
            folder = []  # loading reports the missing folder
        return [*super().inputs(spec, path, ctx), *folder]


def tokenizer_ref(spec, model_arch: str | None) -> str | None:
    """data.tokenizer, or the tokenizer of an hf: model."""
    arch = model_arch or ""
    return spec.tokenizer or (arch[3:] if arch.startswith("hf:") else None)


def load(spec, path: Path | None, seed: int, tokenizer_ref: str | None, base_dir: Path) -> Splits:
    from compress.data.corpus import sentences
    from compress.models.hf import load_tokenizer

    if tokenizer_ref is None:
        raise StageError("text data needs a tokenizer", hint="set data.tokenizer, or use an hf: model")
    labels, names = None, []
    if path is None:
        texts = sentences()
    else:
        try:
            content = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}: not UTF-8 text (byte {exc.start})", hint="save it as UTF-8, one sentence per line"
            ) from None
        texts = [line.strip() for line in content.splitlines() if line.strip()]
    if spec.task == "classification":
        texts, labels, names = labelled(texts, path)
    if len(texts) < 20:
        raise DataError(f"only {len(texts)} sentences in {path}", hint="give at least a few hundred, one per line")
    tokenizer = load_tokenizer(tokenizer_ref, base_dir)
    x = tokenize(tokenizer, texts, spec.max_length)
    if labels is not None:
        return split(x, labels, spec, seed, names, where=str(path))
    # Labels are filled in later from the source model's own outputs (task: embedding).
    splits = split(x, np.zeros((len(x), 1), dtype=np.float32), spec, seed, [], stratify=False,
                   where=str(path or "the default corpus"))  # fmt: skip
    return with_package_text(splits, spec, tokenizer, set(texts))


def tokenize(tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    tokens = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np")
    return np.stack([tokens["input_ids"], tokens["attention_mask"]], axis=1).astype(np.int64)


def with_package_text(splits: Splits, spec, tokenizer, taken: set[str]) -> Splits:
    """More training sentences from `train_packages`; none of them is in the validation or test split."""
    from compress.data.corpus import package_sentences

    if not spec.train_packages:
        return splits
    try:
        extra = [s for s in package_sentences(spec.train_packages) if s not in taken][: spec.train_sentences]
    except ModuleNotFoundError as exc:
        raise StageError(f"train_packages: no installed package '{exc.args[0]}'",
                         hint="name importable packages, e.g. numpy, sklearn, torch") from exc  # fmt: skip
    x = np.concatenate([splits.x_train, tokenize(tokenizer, extra, spec.max_length)])
    y = np.zeros((len(x), *splits.y_train.shape[1:]), dtype=splits.y_train.dtype)
    return Splits(x, y, splits.x_val, splits.y_val, splits.x_test, splits.y_test, splits.class_names)


def labelled(lines: list[str], path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Split `label<TAB>sentence` lines; class names are the sorted distinct labels."""
    pairs = [line.split("\t", 1) for line in lines]
    bad = next((i for i, p in enumerate(pairs) if len(p) != 2), None)
    if bad is not None:
        raise DataError(f"{path}:{bad + 1}: expected 'label<TAB>sentence'", hint="one labelled sentence per line")
    names = sorted({label for label, _ in pairs})
    index = {name: i for i, name in enumerate(names)}
    return [text for _, text in pairs], np.array([index[label] for label, _ in pairs], dtype=np.int64), names
