"""Errors meant for users: a message, a hint and an exit code, rendered once by the CLI."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class ExitCode:
    """Process exit codes; the README documents each one."""

    OK = 0
    GATE_FAILED = 1
    BAD_INPUT = 2  # recipe, target, override, data or command-line mistakes
    RUNTIME_MISSING = 3  # a target's runtime is not installed
    STAGE_FAILED = 4  # a stage ran and failed (e.g. the export check), or an output could not be written
    LOCKED = 5  # another run holds the output directory
    TARGET_FAILED = 6  # the report was written, but a target (e.g. a remote device) could not be measured
    INTERRUPTED = 130


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none (libraries raise both)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class CompressError(Exception):
    """Base of every error shown to a user without a traceback."""

    exit_code = ExitCode.STAGE_FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def lines(self) -> list[str]:
        out = [self.message]
        if self.hint:
            out.append(f"hint: {self.hint}")
        return out


@dataclass(frozen=True)
class Problem:
    """One mistake in a recipe or target file, located as precisely as the YAML allows."""

    path: str  # field path, e.g. stages[2].calibration.samples
    message: str
    file: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based

    def __str__(self) -> str:
        where = self.file or "<recipe>"
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class RecipeError(CompressError):
    """All problems found in one recipe (or target) file, reported together."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, problems: list[Problem], what: str = "recipe") -> None:
        self.problems = problems
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(
            f"invalid {what} ({count})",
            hint="fix the fields listed above; `compress schema` prints every allowed key",
        )

    def lines(self) -> list[str]:
        return [self.message + ":", *(f"  - {p}" for p in self.problems), f"hint: {self.hint}"]


class UsageError(CompressError):
    """A bad command-line argument or input file."""

    exit_code = ExitCode.BAD_INPUT


class DataError(CompressError):
    """A user's data file or folder that cannot be used as given; the message names it and says
    what was expected."""

    exit_code = ExitCode.BAD_INPUT


class RuntimeMissingError(CompressError):
    """A target names a runtime whose package is not installed."""

    exit_code = ExitCode.RUNTIME_MISSING


class StageError(CompressError):
    """A stage ran and could not produce a valid result."""

    exit_code = ExitCode.STAGE_FAILED


class LockedError(CompressError):
    exit_code = ExitCode.LOCKED


class TargetError(CompressError):
    """A whole target could not be measured (unreachable host, refused key, missing runtime there)."""

    exit_code = ExitCode.TARGET_FAILED


class OutputError(CompressError):
    """An output could not be written (disk full, no permission): the path and the system's reason."""

    exit_code = ExitCode.STAGE_FAILED

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}", hint="check free space and permissions there")


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Report an OSError while writing `path` as one OutputError naming it."""
    try:
        yield
    except OSError as exc:
        raise OutputError(path, exc.strerror or first_line(exc)) from None


def check_output_folder(folder: Path, what: str | None = None) -> None:
    """Refuse, before any work, an output folder that cannot exist because a file is in its way."""
    for part in [folder, *folder.parents]:
        if part.exists():
            if not part.is_dir():
                raise UsageError(f"{what or f'output folder {folder}'}: {part} is a file, not a folder",
                                 hint="choose a folder whose path does not go through a file")  # fmt: skip
            return
