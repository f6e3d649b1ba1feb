"""`--set PATH=VALUE` overrides and the field paths they (and sweeps) use."""

from __future__ import annotations

import re
from typing import Any

from compress.errors import Problem, RecipeError
from compress.yamlconfig import parse_yaml, suggest

_SEGMENT = re.compile(r"^([A-Za-z_][\w-]*)((?:\[[^\[\]]+\])*)$")


def parse_field_path(text: str) -> list[str | int] | None:
    """'stages[2].calibration.samples' -> ['stages', 2, 'calibration', 'samples'].

    A stage may also be named: 'stages[train].epochs'. Returns None for malformed paths.
    """
    parts: list[str | int] = []
    for segment in text.split("."):
        match = _SEGMENT.match(segment)
        if match is None:
            return None
        parts.append(match.group(1))
        for index in re.findall(r"\[([^\[\]]+)\]", match.group(2)):
            parts.append(int(index) if index.isdigit() else index)
    return parts


def apply_override(data: dict, item: str) -> list[Problem]:
    """Apply one `path=value` override in place; the value is parsed as YAML."""
    where = f"--set {item}"
    field, sep, raw = item.partition("=")
    parts = parse_field_path(field.strip()) if sep else None
    if parts is None:
        return [Problem(field, "expected PATH=VALUE, e.g. stages[train].epochs=3", where)]
    try:
        value, _ = parse_yaml(raw, where)  # the recipe's own guards: no cycles, bounded depth and size
    except RecipeError as exc:
        shown = repr(raw if len(raw) <= 40 else raw[:37] + "...")
        reason = exc.problems[0].message  # "not valid YAML: ...", or what the walk found (a cycle, ...)
        syntax = reason.startswith("not valid YAML: ")
        message = f"value {shown} is {reason}" if syntax else f"value {shown}: {reason}"
        return [Problem(field, message, where)]
    return set_field(data, parts, value, field, where)


def set_field(data: dict, parts: list[str | int], value: Any, field: str, where: str) -> list[Problem]:
    """Set the field at `parts` (from parse_field_path) to `value`, in place; problems name `where`."""
    node: Any = data
    walked = ""  # the path descended so far, as written in field paths
    for part, following in zip(parts, parts[1:], strict=False):
        in_list = isinstance(node, list)
        node, problem = _descend(node, part, field, where)
        if problem:
            return [problem]
        walked += f"[{part}]" if in_list else (f".{part}" if walked else str(part))
        if not isinstance(node, (dict, list)):
            return [Problem(walked, f"cannot set '{following}' inside a scalar value", where)]
    last: Any = parts[-1]
    if isinstance(node, list):
        last, problem = _stage_index(node, last, field, where)
        if problem:
            return [problem]
    node[last] = value
    return []


def _descend(node: Any, part: Any, field: str, where: str) -> tuple[Any, Problem | None]:
    if isinstance(node, list):
        index, problem = _stage_index(node, part, field, where)
        return (node[index] if problem is None else None), problem
    if node.get(part) is None:  # absent, or an empty YAML value
        node[part] = {}
    return node[part], None


def _stage_index(items: list, part: Any, field: str, where: str) -> tuple[Any, Problem | None]:
    """Find a list item by position or, for stages, by `name` (or `type` when unnamed)."""
    if isinstance(part, int):
        if 0 <= part < len(items):
            return part, None
        return None, Problem(field, f"index {part} is out of range (0..{len(items) - 1})", where)
    names = [(it.get("name") or it.get("type")) if isinstance(it, dict) else None for it in items]
    if part in names:
        return names.index(part), None
    known = [n for n in names if n]
    return None, Problem(field, f"no stage named '{part}'{suggest(part, known)}", where)
