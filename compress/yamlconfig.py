"""Load YAML with the position of every key, and turn pydantic errors into located problems.

Recipes and target files share this: each problem names the file, line, column and field path,
says what was expected, and suggests the closest key or value for a misspelling.
"""

from __future__ import annotations

import contextlib
import difflib
import types
import typing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ValidationError

from compress.errors import Problem, RecipeError

PathKey = tuple[Union[str, int], ...]
Marks = dict[PathKey, tuple[int, int]]  # field path -> (line, column), both 1-based


def read_yaml(path: Path, what: str = "recipe") -> tuple[Any, Marks]:
    """Parse a YAML file safely; return its data and the position of every node."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError([Problem("", "file not found", file=str(path))], what) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError([Problem("", f"cannot read file: {exc}", file=str(path))], what) from None
    return parse_yaml(text, str(path), what)


MAX_DEPTH = 64  # nesting no recipe or target needs; deeper is refused before anything walks it
MAX_NODES = 100_000  # values once aliases are expanded: a few anchors can otherwise stand for billions


def parse_yaml(text: str, filename: str, what: str = "recipe") -> tuple[Any, Marks]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        reason = getattr(exc, "problem", None) or str(exc)
        problem = Problem("", f"not valid YAML: {reason}", filename, line, col)
        raise RecipeError([problem], what) from None
    except RecursionError:
        raise RecipeError([Problem("", f"not valid YAML: nested too deeply (at most {MAX_DEPTH} levels)",
                                   filename, 1, 1)], what) from None  # fmt: skip
    marks: Marks = {}
    problems: list[Problem] = []
    if node is not None:
        _MarkWalk(marks, problems, filename).visit(node, ())
    if problems:
        raise RecipeError(problems, what)
    return data, marks


class _MarkWalk:
    """Record the position of every node; find duplicate keys, aliases that contain themselves,
    nesting past MAX_DEPTH and documents that expand past MAX_NODES."""

    class Stop(Exception):
        pass

    def __init__(self, marks: Marks, problems: list[Problem], filename: str) -> None:
        self.marks, self.problems, self.filename = marks, problems, filename
        self.open: set[int] = set()  # the nodes being walked: meeting one again is a cycle
        self.count = 0

    def visit(self, node: yaml.Node, path: PathKey) -> None:
        with contextlib.suppress(self.Stop):
            self._visit(node, path)

    def _fail(self, node: yaml.Node, path: PathKey, message: str) -> None:
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        self.problems.append(Problem(dotted(path), message, self.filename, line, col))
        raise self.Stop

    def _visit(self, node: yaml.Node, path: PathKey) -> None:
        self.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        self.count += 1
        if id(node) in self.open:
            self._fail(node, path, "an alias here refers to a node that contains it; YAML cycles are not allowed")
        if len(path) > MAX_DEPTH:
            self._fail(node, path[:MAX_DEPTH], f"nested too deeply (at most {MAX_DEPTH} levels)")
        if self.count > MAX_NODES:
            self._fail(node, (), f"the file holds more than {MAX_NODES} values once its aliases are expanded")
        self.open.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
                child = (*path, key)
                if key in seen:
                    line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                    self.problems.append(Problem(dotted(child), "key appears twice", self.filename, line, col))
                seen.add(key)
                self._visit(value_node, child)
                # Point errors about a key at the key itself, not at its value.
                self.marks[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._visit(item, (*path, index))
        self.open.discard(id(node))


def dotted(path: PathKey) -> str:
    """('stages', 2, 'calibration') -> 'stages[2].calibration'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass(frozen=True)
class Locator:
    """Where a file's fields are: problems found after validation point at their line."""

    marks: Marks
    filename: str | None

    def at(self, path: PathKey, message: str) -> Problem:
        return locate(path, self.marks, self.filename, message)


def locate(path: PathKey, marks: Marks, filename: str | None, message: str) -> Problem:
    """A problem at `path`, placed at the nearest enclosing node that has a position."""
    for depth in range(len(path), -1, -1):
        if path[:depth] in marks:
            line, col = marks[path[:depth]]
            return Problem(dotted(path), message, filename, line, col)
    return Problem(dotted(path), message, filename)


def validate(model: type[BaseModel], data: Any, marks: Marks, filename: str | None, what: str):
    """Validate `data` against `model`; raise one RecipeError listing every problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(model, data, err, marks, filename) for err in exc.errors()]
        raise RecipeError(_merged(problems), what) from None


def _merged(problems: list[Problem]) -> list[Problem]:
    """One problem per field: a value that fits none of a union's forms (e.g. a number or `auto`)
    is one problem that says what each form expected."""
    by_path: dict[str, list[Problem]] = {}
    for p in problems:
        by_path.setdefault(p.path, []).append(p)
    return [replace(same[0], message="; or: ".join(dict.fromkeys(p.message for p in same)))
            for same in by_path.values()]  # fmt: skip


def _problem(model: type[BaseModel], data: Any, err: dict, marks: Marks, filename: str | None):
    path = _data_path(data, err["loc"])
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        allowed = sorted(allowed_keys(model, data, path[:-1]))
        message = f"unknown key '{path[-1]}'" + suggest(str(path[-1]), allowed)
        message += f"; allowed keys: {', '.join(allowed)}" if allowed else ""
    elif kind == "missing":
        message = "required field is missing"
    elif kind == "union_tag_invalid":
        path = (*path, err["ctx"]["discriminator"].strip("'"))
        expected = _expected_values(err)
        tag = err["ctx"]["tag"]
        message = f"unknown type '{tag}'{suggest(tag, expected)}; expected one of: {', '.join(expected)}"
    elif kind == "literal_error":
        expected = _expected_values(err)
        message = f"unknown value {value!r}{suggest(str(value), expected)}"
        message += f"; expected one of: {', '.join(expected)}"
    elif kind == "union_tag_not_found":
        path = (*path, err["ctx"]["discriminator"].strip("'"))
        message = "required field is missing"
    else:
        message = f"{err['msg'].rstrip('.')} (got {_short(value)})"
        if kind.startswith("value_error"):
            message = err["msg"].removeprefix("Value error, ")
    return locate(path, marks, filename, message)


def _expected_values(err: dict) -> list[str]:
    ctx = err.get("ctx", {})
    raw = ctx.get("expected_tags") or ctx.get("expected") or ""
    return [part.strip(" '\"") for part in raw.replace(" or ", ", ").split(",") if part.strip()]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _data_path(data: Any, loc: tuple) -> PathKey:
    """Map pydantic's error location onto the user's data, dropping the union tags it inserts."""
    path: list = []
    node = data
    for i, part in enumerate(loc):
        is_tag = isinstance(part, str) and not (isinstance(node, dict) and part in node)
        if is_tag and (isinstance(node, list) or i < len(loc) - 1 or _member_name(part)):
            continue  # e.g. 'train' in ('stages', 0, 'train', 'epochs'), "literal['auto']" at the end
        path.append(part)
        node = _child(node, part)
    return tuple(path)


def _member_name(part: str) -> bool:
    """Whether the last part of an error's location names a union's member (`literal['auto']`,
    `list[str]`, `constrained-float`, `float`, a model class), as no recipe field is named."""
    return not part.isidentifier() or part[0].isupper() or part in {"float", "int", "str", "bool", "none"}


def allowed_keys(model: type[BaseModel], data: Any, path: PathKey) -> list[str]:
    """The keys allowed at `path` (a mapping inside `data`), found by walking the model's types."""
    annotation: Any = model
    node = data
    for part in path:
        if isinstance(part, str):
            owner = _pick_model(annotation, node)
            field = owner.model_fields.get(part) if owner else None
            if field is None:
                return []
            annotation = field.annotation
        else:
            lists = [a for a in _flatten(annotation) if typing.get_origin(a) is list]
            if not lists:
                return []
            annotation = typing.get_args(lists[0])[0]
        node = _child(node, part)
    owner = _pick_model(annotation, node)
    return list(owner.model_fields) if owner else []


def _child(node: Any, part: Any) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _pick_model(annotation: Any, node: Any) -> type[BaseModel] | None:
    """The model class that describes `node`; for tagged unions, the one its `type` selects."""
    models = [a for a in _flatten(annotation) if _is_model(a)]
    if isinstance(node, dict) and "type" in node:
        for cand in models:
            field = cand.model_fields.get("type")
            if field is not None and node["type"] in typing.get_args(field.annotation):
                return cand
    return models[0] if models else None


def _flatten(annotation: Any) -> list:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _flatten(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [x for arg in typing.get_args(annotation) for x in _flatten(arg)]
    return [annotation] if annotation is not None else []


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)
