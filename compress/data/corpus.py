"""Text that needs no download: sentences from the documentation strings of Python's standard
library as installed on this machine. Enough to distil and evaluate a sentence encoder offline.

More training text comes from the docstrings of installed packages (numpy, torch, ...), read from
their source files without importing them; it depends only on the installed versions.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import inspect
import re
import warnings
from pathlib import Path

MODULES = (
    "argparse", "asyncio", "base64", "bisect", "calendar", "collections", "concurrent.futures", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fractions",
    "functools", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html", "http.client", "http.server",
    "imaplib", "inspect", "io", "ipaddress", "itertools", "json", "locale", "logging", "mailbox", "math",
    "mimetypes", "multiprocessing", "numbers", "operator", "optparse", "os", "pathlib", "pickle", "pkgutil",
    "platform", "poplib", "pprint", "queue", "random", "re", "sched", "secrets", "selectors", "shelve", "shlex",
    "shutil", "signal", "smtplib", "socket", "socketserver", "sqlite3", "ssl", "statistics", "string", "struct",
    "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "trace", "traceback",
    "turtle", "typing", "unittest", "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref",
    "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zoneinfo",
)  # fmt: skip
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def docstrings() -> list[str]:
    texts = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except Exception:  # a module missing from a minimal Python build is simply skipped
            continue
        texts.append(inspect.getdoc(module) or "")
        for _, member in sorted(vars(module).items()):
            if inspect.isclass(member) or inspect.isfunction(member):
                texts.append(inspect.getdoc(member) or "")
    return texts


def sentences(min_words: int = 6, max_words: int = 40) -> list[str]:
    """Unique prose sentences, in a fixed order (sorted by hash, so no order leaks from modules)."""
    return by_hash(prose(docstrings(), min_words, max_words))


def package_sentences(packages: list[str], min_words: int = 6, max_words: int = 40) -> list[str]:
    """Prose sentences from the docstrings in installed packages' source files, in hash order.
    Library docstrings hold more markup than the standard library's (numpy-style sections,
    reStructuredText), so sentences with markup left in them are dropped."""
    markup = ("--", "==", "::", " : ", "`", ">>>", "http", "|")
    found = prose((text for name in packages for text in source_docstrings(name)), min_words, max_words)
    return by_hash({s for s in found if not any(m in s for m in markup)})


def source_docstrings(package: str) -> list[str]:
    """Module, class and function docstrings of an installed package, parsed (not imported)."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise ModuleNotFoundError(package)
    texts = []
    for root in sorted(spec.submodule_search_locations or [Path(spec.origin).parent]):
        for file in sorted(Path(root).rglob("*.py")):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # invalid escapes in old docstrings
                    tree = ast.parse(file.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
            texts += [doc for node in ast.walk(tree) if isinstance(node, kinds) and (doc := ast.get_docstring(node))]
    return texts


def prose(texts, min_words: int, max_words: int) -> set[str]:
    found = set()
    for text in texts:
        for paragraph in re.split(r"\n\s*\n", text):
            flat = " ".join(paragraph.split())
            if not flat or flat.startswith((">>>", "-", "*", ":")):
                continue
            for sentence in _SENTENCE.split(flat):
                words = sentence.split()
                if min_words <= len(words) <= max_words and sentence[0].isupper() and sentence.endswith("."):
                    found.add(sentence)
    return found


def corpus(name: str) -> list[str]:
    """A built-in corpus by its recipe name (schema.CORPORA), in hash order."""
    from compress.data import wordnet

    if name == "stdlib-docs":
        return sentences()
    found = {"wordnet-definitions": wordnet.definitions, "wordnet-examples": wordnet.examples,
             "wordnet-test-examples": wordnet.test_examples}[name]()  # fmt: skip
    return by_hash(found)


def by_hash(found: set[str]) -> list[str]:
    return sorted(found, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
