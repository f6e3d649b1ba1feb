"""Content fingerprints of the files a run reads, for cache keys that never go stale.

A cached stage result is reused only when everything it was made from is unchanged: the data files,
the model's Python file, checkpoint and Hugging Face folder, compress's own code and the versions of
the packages it imports. Hashing a large file on every run would be slow, so each file's digest is
remembered with its size and modification time (`fingerprints.json` in the cache) and recomputed
only when either changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import compress

CHUNK = 1 << 20


class Fingerprints:
    """Digests of files and folders, memoised by (size, mtime) in a JSON file."""

    def __init__(self, memo: Path | None = None) -> None:
        self.memo = memo
        self.known: dict[str, list] = {}
        if memo and memo.is_file():
            try:
                self.known = json.loads(memo.read_text())
            except (OSError, ValueError):
                self.known = {}  # a damaged memo only costs rehashing

    def file(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.resolve())
        seen = self.known.get(key)
        if seen and seen[:2] == [stat.st_size, stat.st_mtime_ns]:
            return seen[2]
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
        self.known[key] = [stat.st_size, stat.st_mtime_ns, digest.hexdigest()]
        return digest.hexdigest()

    def of(self, paths: Iterable[Path], suffixes: tuple[str, ...] | None = None) -> str:
        """One digest for files and whole folders (every file below, by relative name)."""
        digest = hashlib.sha256()
        for path in paths:
            for file, name in _files(Path(path), suffixes):
                digest.update(f"{name}\0{self.file(file)}\0".encode())
        return digest.hexdigest()[:32]

    def save(self) -> None:
        if self.memo is None:
            return
        self.memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.memo.with_name(f".{self.memo.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.known))
        os.replace(tmp, self.memo)


def _files(path: Path, suffixes: tuple[str, ...] | None) -> list[tuple[Path, str]]:
    if path.is_file():
        return [(path, path.name)]
    if not path.is_dir():
        return []
    found = sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return [(p, str(p.relative_to(path))) for p in found if suffixes is None or p.suffix in suffixes]


def code_fingerprint(fingerprints: Fingerprints, package: Path | None = None) -> str:
    """compress's own source: a code change invalidates cached results even at the same version."""
    return fingerprints.of([package or Path(compress.__file__).parent], suffixes=(".py",))
