"""The one way a name from a recipe or a report becomes a file name.

Ordinary names (letters, digits, `._-`, and the `[key=value,...]` of sweep points) are kept; any
other character becomes `_`, a leading dot is dropped, and a short hash of the original keeps two
different names from sharing a file. No result can leave its folder.
"""

from __future__ import annotations

import hashlib
import re

UNSAFE = re.compile(r"[^A-Za-z0-9._\-\[\]=,+]")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # what the schema allows for names a user chooses


def file_name(name: str) -> str:
    cleaned = UNSAFE.sub("_", name).lstrip(".")
    if cleaned == name and cleaned:
        return cleaned
    return f"{cleaned or '_'}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
