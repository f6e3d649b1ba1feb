"""Sentences for text tasks, tokenized and padded to `max_length`, stored as token ids and
attention masks stacked into one (N, 2, L) int64 array.

Embedding: a file with one sentence per line, or the offline default corpus (documentation strings
of Python's standard library), plus training-only sentences from installed packages' docstrings
(`train_packages`) and other text (`train_text`). Classification: a file of `label<TAB>sentence`
lines. Either can carry further test sets from other text (`held_out`)."""

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
        """The text files, WordNet's data when a corpus reads it, and the tokenizer's folder: a changed
        vocabulary changes every token id."""
        from compress.data import wordnet
        from compress.models.sources import resolve_hf_path
        from compress.recipe.schema import CORPORA

        ref = tokenizer_ref(spec, ctx.model_arch)
        refs = [*spec.train_text, *(h.text for h in spec.held_out)]
        files = [ctx.base_dir / Path(r).expanduser() for r in refs if r not in CORPORA]
        folders = [*(found(lambda: resolve_hf_path(ref, ctx.base_dir)) if ref else []),
                   *(found(wordnet.data_folder) if any(r.startswith("wordnet-") for r in refs) else [])]  # fmt: skip
        return [*super().inputs(spec, path, ctx), *(f for f in files if f.is_file()), *folders]


def found(locate) -> list[Path]:
    try:
        return [locate()]
    except StageError:
        return []  # loading reports what is missing


def tokenizer_ref(spec, model_arch: str | None) -> str | None:
    """data.tokenizer, or the tokenizer of an hf: model."""
    arch = model_arch or ""
    return spec.tokenizer or (arch[3:] if arch.startswith("hf:") else None)


def load(spec, path: Path | None, seed: int, tokenizer_ref: str | None, base_dir: Path) -> Splits:
    from compress.models.hf import load_tokenizer

    if tokenizer_ref is None:
        raise StageError("text data needs a tokenizer", hint="set data.tokenizer, or use an hf: model")
    labels, names = None, []
    texts = lines("stdlib-docs" if path is None else str(path), base_dir)
    if spec.task == "classification":
        texts, labels, names = labelled(texts, path)
    if len(texts) < 20:
        raise DataError(f"only {len(texts)} sentences in {path}", hint="give at least a few hundred, one per line")
    tokenizer = load_tokenizer(tokenizer_ref, base_dir)
    x = tokenize(tokenizer, texts, spec.max_length)
    if labels is not None:
        splits = split(x, labels, spec, seed, names, where=str(path))
        return with_held_out(splits, spec, tokenizer, set(texts), base_dir)
    # Labels are filled in later from the source model's own outputs (task: embedding).
    splits = split(x, np.zeros((len(x), 1), dtype=np.float32), spec, seed, [], stratify=False,
                   where=str(path or "the default corpus"))  # fmt: skip
    extra = extra_sentences(spec, set(texts), base_dir)
    return with_held_out(with_training_text(splits, spec, tokenizer, extra), spec, tokenizer, {*texts, *extra},
                         base_dir)  # fmt: skip


def lines(ref: str, base_dir: Path) -> list[str]:
    """The sentences of a built-in corpus (by name), or the non-empty lines of a UTF-8 text file."""
    from compress.data.corpus import corpus
    from compress.recipe.schema import CORPORA

    if ref in CORPORA:
        return corpus(ref)
    path = base_dir / Path(ref).expanduser()
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"{path}: no such file", hint=f"give a text file, or a built-in corpus: {', '.join(CORPORA)}"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text (byte {exc.start})", hint="save it as UTF-8, one sentence per line"
        ) from None
    return [line.strip() for line in content.splitlines() if line.strip()]


def tokenize(tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    tokens = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np")
    return np.stack([tokens["input_ids"], tokens["attention_mask"]], axis=1).astype(np.int64)


def extra_sentences(spec, taken: set[str], base_dir: Path) -> list[str]:
    """Training-only sentences from `train_packages` and `train_text`, none of them in the validation
    or test split: at most `train_sentences`, a fixed subset in hash order."""
    from compress.data.corpus import by_hash, package_sentences

    try:
        found = set(package_sentences(spec.train_packages)) if spec.train_packages else set()
    except ModuleNotFoundError as exc:
        raise StageError(f"train_packages: no installed package '{exc.args[0]}'",
                         hint="name importable packages, e.g. numpy, sklearn, torch") from exc  # fmt: skip
    for ref in spec.train_text:
        found.update(lines(ref, base_dir))
    return by_hash(found - taken)[: spec.train_sentences]


def with_training_text(splits: Splits, spec, tokenizer, extra: list[str]) -> Splits:
    if not extra:
        return splits
    x = np.concatenate([splits.x_train, tokenize(tokenizer, extra, spec.max_length)])
    y = np.zeros((len(x), *splits.y_train.shape[1:]), dtype=splits.y_train.dtype)
    return Splits(x, y, splits.x_val, splits.y_val, splits.x_test, splits.y_test, splits.class_names)


def with_held_out(splits: Splits, spec, tokenizer, seen: set[str], base_dir: Path) -> Splits:
    """`held_out`'s sets, without any sentence that is also in the data or the training text."""
    held = {}
    for h in spec.held_out:
        texts = lines(h.text, base_dir)
        labels = np.zeros((len(texts), 1), dtype=np.float32)  # embedding: filled in from the source model
        if spec.task == "classification":
            texts, labels = relabelled(texts, base_dir / h.text, splits.class_names)
        unseen = [i for i, t in enumerate(texts) if t not in seen]
        texts, labels = [texts[i] for i in unseen], labels[unseen]
        if len(texts) < 20:
            raise DataError(f"held_out {h.name}: only {len(texts)} sentences not also in the data",
                            hint="give at least a few hundred other sentences")  # fmt: skip
        held[h.name] = (tokenize(tokenizer, texts[: h.samples], spec.max_length), labels[: h.samples])
    splits.held_out = held
    return splits


def relabelled(lines: list[str], path: Path, class_names: list[str]) -> tuple[list[str], np.ndarray]:
    """A held-out file's `label<TAB>sentence` lines, labelled with the data's class indices."""
    texts, labels, names = labelled(lines, path)
    unknown = sorted(set(names) - set(class_names))
    if unknown:
        raise DataError(f"{path}: labels not in the data: {', '.join(unknown[:5])}",
                        hint=f"use the data's labels: {', '.join(class_names[:10])}")  # fmt: skip
    index = np.array([class_names.index(n) for n in names], dtype=np.int64)
    return texts, index[labels]


def labelled(lines: list[str], path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Split `label<TAB>sentence` lines; class names are the sorted distinct labels."""
    pairs = [line.split("\t", 1) for line in lines]
    bad = next((i for i, p in enumerate(pairs) if len(p) != 2), None)
    if bad is not None:
        raise DataError(f"{path}:{bad + 1}: expected 'label<TAB>sentence'", hint="one labelled sentence per line")
    names = sorted({label for label, _ in pairs})
    index = {name: i for i, name in enumerate(names)}
    return [text for _, text in pairs], np.array([index[label] for label, _ in pairs], dtype=np.int64), names
