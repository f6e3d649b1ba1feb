"""Runtimes: load a deployable artifact and run it. One interface, one module per runtime."""

from __future__ import annotations

from typing import TYPE_CHECKING

from compress import registry
from compress.errors import RuntimeMissingError

if TYPE_CHECKING:
    from compress.runtimes.base import Runtime


def get_runtime(name: str) -> Runtime:
    """The runtime registered as `name`; a clear error naming the extra when it is not installed."""
    cls = registry.resolve(registry.RUNTIMES, name)
    if not cls.available():
        raise RuntimeMissingError(
            f"runtime '{name}' is not installed",
            hint=f"pip install 'compress[{cls.extra}]'" if cls.extra else f"install {cls.package}",
        )
    return cls()
