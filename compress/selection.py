"""Select layers or graph nodes by exact name, class / op type name, or `re:` pattern."""

from __future__ import annotations

import re


def matches(name: str, type_name: str, patterns: list[str]) -> bool:
    """True when `name` or `type_name` equals a pattern, or `name` matches a `re:` pattern."""
    for pattern in patterns:
        if pattern.startswith("re:"):
            if re.search(pattern[3:], name):
                return True
        elif pattern in (name, type_name):
            return True
    return False
