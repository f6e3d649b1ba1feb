"""A stage that fails does not take the run down: its error is recorded, every branch and sweep point
that does not depend on it goes on, and the report says what failed.

Errors of compress's own (CompressError) carry their message and hint. Anything else is unexpected
(a library's IndexError inside torch-pruning, say): the user gets its first line, the stage and
where the full traceback was written, never the traceback on the terminal.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from compress.errors import CompressError, first_line
from compress.names import file_name
from compress.report.schema import StageFailure


def stage_failure(exc: Exception, stage: str, point: str, logs: Path) -> StageFailure:
    if isinstance(exc, CompressError):
        return StageFailure(stage=stage, point=point, message=exc.message, hint=exc.hint)
    log = logs / f"{file_name(stage)}{'-' + file_name(point) if point else ''}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
    return StageFailure(stage=stage, point=point, message=f"{type(exc).__name__}: {first_line(exc)}", log=str(log),
                        hint="an unexpected error inside the stage (often a model the library does not support); "
                        f"the full traceback is in {log}")  # fmt: skip
