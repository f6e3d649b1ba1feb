"""Where the time goes: a runtime's per-node profile summed into the parts of a model.

Rules are an ordered list `[[part, [name prefixes...], [op types...]], ...]`, e.g.

    [["postprocess", [], ["NonMaxSuppression", "RoiAlign", "TopK"]],
     ["backbone", ["/backbone/body"], []], ["neck", ["/backbone/fpn"], []],
     ["heads", ["/rpn", "/roi_heads"], []]]

A node belongs to the first part that names its op type (any case) or a prefix its name starts
with; a node that none claims that way goes to the first part whose prefix appears later in its
name, after a prefix the runtime added (OpenVINO's layout reorders, "x_abcd_acdb_/backbone/...");
the rest is "other". Names are compared with '.' and '/' alike and
without a leading '/', so "/backbone/body" also claims the weights "backbone.body.0.weight" and a
torch module path written with dots. Runtimes rename nodes as they fuse and quantize them but keep
the exporter's path at the start (ONNX Runtime: "/backbone/layer1/Conv_token_3",
"/neck/Relu_output_0_nchwc"; OpenVINO: "/backbone/layer1/Conv/WithoutBiases").

Profiling slows every call, so the profiled milliseconds are used for shares: `breakdown` scales
them to the p50 measured without the profiler and keeps the profiled total beside it.

Standard library only: this runs on devices (see compress.agent.job).
"""

from __future__ import annotations

import math

OTHER = "other"
PROFILE_SECONDS = 1.0  # profile about this long ...
MIN_RUNS, MAX_RUNS = 10, 100  # ... in at least / at most this many runs (ONNX Runtime logs every node of every run)


def runs_for(p50_ms: float, seconds: float = PROFILE_SECONDS) -> int:
    """How many calls to profile a model whose p50 is `p50_ms` for about `seconds` (at most
    PROFILE_SECONDS: a protocol asking for shorter timing gets a shorter profile too)."""
    seconds = min(seconds, PROFILE_SECONDS)
    wanted = math.ceil(seconds * 1000.0 / p50_ms) if p50_ms > 0 else MAX_RUNS
    return max(MIN_RUNS, min(MAX_RUNS, wanted))


def _normal(name: str) -> str:
    return name.replace(".", "/").lstrip("/")


def _rules(rules: list) -> list[tuple[str, list[str], set[str]]]:
    """(part, normalized prefixes, lower-case op types) per rule; a rule may leave out its op types."""
    parsed = []
    for rule in rules:
        part, prefixes, ops = (list(rule) + [[], []])[:3]
        parsed.append((str(part), [p for p in map(_normal, prefixes or []) if p], {o.lower() for o in ops or []}))
    return parsed


def part_of(name: str, op: str, rules: list) -> str:
    """The part a node belongs to (see the module's docstring)."""
    return _part_of(_normal(name), op.lower(), _rules(rules))


def _part_of(name: str, op: str, parsed: list) -> str:
    for part, prefixes, ops in parsed:
        if op in ops or any(name.startswith(p) for p in prefixes):
            return part
    for part, prefixes, _ in parsed:
        if any("/" + p in name for p in prefixes):
            return part
    return OTHER


def assign(profile: list[dict], rules: list) -> dict[str, float]:
    """{part: ms} in the rules' order (every part named, 0.0 when no node landed there), then
    "other" when some node belongs to no part."""
    parsed = _rules(rules)
    totals = {part: 0.0 for part, _, _ in parsed}
    for node in profile:
        part = _part_of(_normal(node["name"]), str(node.get("op", "")).lower(), parsed)
        totals[part] = totals.get(part, 0.0) + float(node["ms"])
    return totals


def scale(parts: dict[str, float], p50_ms: float) -> dict[str, float] | None:
    """The parts scaled to sum to `p50_ms` (each keeps its share); None when nothing was profiled."""
    total = sum(parts.values())
    if total <= 0:
        return None
    return {part: round(ms * p50_ms / total, 5) for part, ms in parts.items()}


def breakdown(profile: list[dict], rules: list, p50_ms: float) -> dict | None:
    """What a latency entry records: {"parts": {part: ms summing to p50_ms}, "parts_profiled_ms":
    the profiled total}; None when the profile holds no time."""
    parts = assign(profile, rules)
    scaled = scale(parts, p50_ms)
    if scaled is None:
        return None
    return {"parts": scaled, "parts_profiled_ms": round(sum(parts.values()), 5)}


TOP_LAYERS = 10  # layers kept in the report's summary; the full trace is written beside it


def layer_summary(profile: list[dict], p50_ms: float, top: int = TOP_LAYERS) -> dict | None:
    """What a latency entry records of a profile: {"layers": {"by_op": {op type: ms}, "top": the
    `top` slowest nodes, "profiled_ms", "nodes"}}, ms scaled to `p50_ms` like the parts; None when
    the profile holds no time."""
    by_op: dict[str, float] = {}
    for node in profile:
        op = str(node.get("op", ""))
        by_op[op] = by_op.get(op, 0.0) + float(node["ms"])
    scaled = scale(dict(sorted(by_op.items(), key=lambda item: -item[1])), p50_ms)
    if scaled is None:
        return None
    total = sum(by_op.values())
    ranked = sorted(profile, key=lambda node: -float(node["ms"]))[:top]
    return {"layers": {
        "by_op": scaled,
        "top": [{"name": n["name"], "op": n.get("op", ""), "ms": round(float(n["ms"]) * p50_ms / total, 5)}
                for n in ranked],
        "profiled_ms": round(total, 5), "nodes": len(profile),
    }}  # fmt: skip
