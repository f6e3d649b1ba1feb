"""The device's model store: model files named by the hash of their content, kept between runs so an
unchanged model is not sent again. A file is checked against its name before each use, since the
store lives in a folder other programs could write to."""

from __future__ import annotations

import hashlib
from pathlib import Path

DIGEST_LENGTH = 32


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:DIGEST_LENGTH]


def verify(path: Path, expected: str) -> None:
    """Raise (and drop the copy, so the next run sends it again) when a stored model was altered."""
    if digest(path) != expected:
        for companion in path.parent.glob(f"{expected}.*"):
            companion.unlink()
        raise ValueError("the device's stored copy of this model does not match what was sent (its hash "
                         "differs); it was removed: run again to send it anew")  # fmt: skip
