"""Progress bars on a terminal, nothing elsewhere (CI logs stay readable)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(label: str, total: int, enabled: bool = True, done: int = 0) -> Iterator[Callable[[str], None]]:
    """Yield `advance(status)`; draws a rich bar only when stderr is a terminal. `done` steps are
    already complete (a resumed training)."""
    if not enabled:
        yield lambda status="": None
        return
    if not sys.stderr.isatty():  # logs and CI: one plain line per step instead of a bar
        count = [done]

        def line(status: str = "") -> None:
            count[0] += 1
            print(f"{label}: {count[0]}/{total} {status}", file=sys.stderr, flush=True)

        yield line
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[status]}"))  # fmt: skip
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(label, total=total, completed=done, status="")
        yield lambda status="": progress.update(task, advance=1, status=status)
