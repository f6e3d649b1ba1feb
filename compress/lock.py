"""One run per output directory: a lock file holding the owner's PID, taken over when stale."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from compress.errors import LockedError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _alive(pid):
                raise LockedError(f"another compress run (PID {pid}) is writing {folder}",
                                  hint="wait for it to finish, or choose another --output") from None  # fmt: skip
            path.unlink(missing_ok=True)  # left behind by a run that was killed
    else:
        raise LockedError(f"cannot lock {folder}", hint="check the folder is writable")
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
