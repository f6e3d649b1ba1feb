"""Text that needs no download: sentences from the documentation strings of Python's standard
library as installed on this machine. Enough to distil and evaluate a sentence encoder offline."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re

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
    found = set()
    for text in docstrings():
        for paragraph in re.split(r"\n\s*\n", text):
            flat = " ".join(paragraph.split())
            if not flat or flat.startswith((">>>", "-", "*", ":")):
                continue
            for sentence in _SENTENCE.split(flat):
                words = sentence.split()
                if min_words <= len(words) <= max_words and sentence[0].isupper() and sentence.endswith("."):
                    found.add(sentence)
    return sorted(found, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
