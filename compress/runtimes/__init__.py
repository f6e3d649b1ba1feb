"""Runtimes: load a deployable artifact and run it. One interface (base.py), one module per runtime,
each registered by name in compress.registry (or by a plug-in's entry point)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from compress import registry
from compress.errors import RuntimeMissingError

if TYPE_CHECKING:
    from pathlib import Path

    from compress.runtimes.base import Runtime, Session
    from compress.targets import TargetSpec


def runtime_class(name: str) -> type[Runtime]:
    return registry.resolve("runtimes", name)


def open_session(runtime: str, path: Path, threads: int = 1) -> Session:
    """A model file loaded in a runtime with its defaults (stages use this to check and compare
    candidates; targets measure through get_runtime)."""
    return runtime_class(runtime)().load(path, threads)


def check_available(targets: list[TargetSpec]) -> None:
    """Fail before any work when a target's runtime is missing, naming the extra to install."""
    for target in targets:
        if target.host is not None or target.hosts:
            continue  # the device checks its own runtime when it measures
        cls = runtime_class(target.runtime)
        if not cls.available():
            install = f"pip install 'compress-edge[{cls.extra}]'" if cls.extra else f"pip install {cls.package}"
            raise RuntimeMissingError(f"target '{target.name}' needs runtime '{target.runtime}', which is not installed",
                                      hint=f"{install}, or measure on other targets")  # fmt: skip


def get_runtime(target: TargetSpec) -> Runtime:
    """The runtime a target names, configured from the target."""
    check_available([target])
    return runtime_class(target.runtime)(target)
