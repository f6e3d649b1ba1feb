"""Which stage results are variants across sweep points, what they are called, and which earlier
variant each derives from (its `parent`, the baseline of its speed-up)."""

from __future__ import annotations

from compress.artifact import Artifact
from compress.report.schema import Variant


def merge_points(per_point: list[tuple[str, list]], total: int | None = None) -> list[tuple[str, str | None, Artifact]]:
    """One entry per distinct artifact across sweep points. A variant every point made alike keeps
    its name; one that differs between points, or that only some points made, is `name[point]`."""
    keys: dict[str, set[str]] = {}
    made: dict[str, int] = {}
    for _, found in per_point:
        for name, _, artifact in found:
            keys.setdefault(name, set()).add(artifact.key)
            made[name] = made.get(name, 0) + 1
    total = total or len(per_point)
    seen: set[str] = set()
    merged = []
    for label, found in per_point:
        rename: dict[str, str] = {}
        for name, parent, artifact in found:
            alike = len(keys[name]) == 1 and made[name] == total
            rename[name] = name if alike or not label else f"{name}[{label}]"
            if artifact.key not in seen:
                seen.add(artifact.key)
                merged.append((rename[name], rename.get(parent, parent) if parent else None, artifact))
    return merged


def failed_variant(label: str, message: str) -> Variant:
    """A sweep point that failed, kept in the report with its error."""
    return Variant(name=f"failed[{label}]", stages=[], format="–", precision="–", path="", size_bytes=0,
                   errors=[message])  # fmt: skip


def parent_variant(lineage: list[str], earlier: list[tuple[str, list[str]]], entry_stages: set[str]) -> str | None:
    """The closest earlier variant this one derives from.

    W is an ancestor of V when W's chain is a prefix of V's (V was made from W), or when W is the
    deployable form of a model in V's chain (W's last stage turned a PyTorch model from V's chain
    into a file). Siblings, such as two quantizations of one export, are not. The longest chain wins.
    """
    best, best_len = None, 0
    for name, other in earlier:
        ancestor = lineage[: len(other)] == other
        exported = other[-1] in entry_stages and lineage[: len(other) - 1] == other[:-1]
        if (ancestor or exported) and len(other) > best_len:
            best, best_len = name, len(other)
    return best
