"""Render report.json as markdown (for pull requests) and as tables in the terminal."""

from __future__ import annotations

from compress.report.details import AccuracyControl, ControlStep
from compress.report.layers import LAYERS_NOTE, op_table, share
from compress.report.schema import Accuracy, Latency, Report, TargetInfo, Variant
from compress.report.searched import search_lines

MB = 1_000_000
COLUMNS = ("variant", "parent", "size MB", "× smaller", "{metric} %", "Δ pts", "p50 ms", "p90 ms", "× faster",
           "× vs parent", "front")  # fmt: skip


def columns(report: Report) -> tuple[str, ...]:
    """The comparison columns, naming the task's metric (accuracy, cosine, ...)."""
    metric = next((v.accuracy.metric for v in report.variants if v.accuracy), "accuracy")
    return tuple(c.format(metric=metric) for c in COLUMNS)


BATCH_COLUMNS = ("variant", "p50 ms", "p90 ms", "items/s", "× faster")


def _ratio(base: float | None, value: float | None) -> str:
    if not base or not value:
        return "–"
    return f"{base / value:.2f}×"


def _speedup(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def comparison_rows(report: Report, target: TargetInfo) -> list[tuple[str, ...]]:
    """One row per variant: size, accuracy and latency against the baseline on one target."""
    batch = report.batch_for(target.name)
    base = report.variant(report.baseline)
    base_acc = base.accuracy_on(target.name) if base else None
    base_lat = base.latency_at(target.name, batch) if base else None
    rows = []
    for v in report.variants:
        acc, lat = v.accuracy_on(target.name), v.latency_at(target.name, batch)
        delta = f"{acc.value - base_acc.value:+.2f}" if acc and base_acc else "–"
        rows.append((
            v.name, v.parent or "–", f"{v.size_bytes / MB:.3f}", _ratio(base.size_bytes if base else None, v.size_bytes),
            _fmt(acc.value if acc else None), delta, _fmt(lat.p50_ms if lat else None, 3),
            _fmt(lat.p90_ms if lat else None, 3), _ratio(base_lat.p50_ms if base_lat else None, lat.p50_ms if lat else None),
            _speedup(v.speedup_vs_parent.get(target.name)), "yes" if v.pareto.get(target.name) else "",
        ))  # fmt: skip
    return rows


def batch_rows(report: Report, target: TargetInfo, batch: int) -> list[tuple[str, ...]]:
    base = report.variant(report.baseline)
    base_lat = base.latency_at(target.name, batch) if base else None
    rows = []
    for v in report.variants:
        lat = v.latency_at(target.name, batch)
        rows.append((v.name, _fmt(lat.p50_ms if lat else None, 3), _fmt(lat.p90_ms if lat else None, 3),
                     _fmt(lat.throughput if lat else None, 1),
                     _ratio(base_lat.p50_ms if base_lat else None, lat.p50_ms if lat else None)))  # fmt: skip
    return rows


def parts_latency(variant: Variant, target: str) -> Latency | None:
    """The variant's latency on `target` that has a time per part, at the smallest batch size."""
    return min((x for x in variant.latency if x.target == target and x.parts), key=lambda x: x.batch_size, default=None)


def parts_table(report: Report, target: TargetInfo) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Where the time goes: one row per variant with a breakdown on `target` (its batch size, p50,
    and each part's ms and share of p50), parts in the order the rules name them; no rows when none."""
    found = [(v.name, lat) for v in report.variants if (lat := parts_latency(v, target.name))]
    names = list(dict.fromkeys(part for _, lat in found for part in lat.parts))
    rows = [(name, str(lat.batch_size), _fmt(lat.p50_ms, 3), *(share(lat.parts.get(p), lat.p50_ms) for p in names))
            for name, lat in found]  # fmt: skip
    return ("variant", "batch", "p50 ms", *(f"{p} ms" for p in names)), rows


def metrics_table(report: Report, target: TargetInfo) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The task's further figures on `target` (detection: mAP@.5 and mAP@.75) and the metric on each
    held-out set, each with its change from the baseline; no rows when there are none."""
    found = [(v.name, acc) for v in report.variants if (acc := v.accuracy_on(target.name)) and further(acc)]
    if not found:
        return (), []
    base = report.variant(report.baseline)
    base_acc = base.accuracy_on(target.name) if base else None
    names = list(dict.fromkeys(key for _, acc in found for key in further(acc)))
    metric = found[0][1].metric

    def cell(value: float | None, reference: float | None) -> str:
        change = f" ({value - reference:+.2f})" if value is not None and reference is not None else ""
        return _fmt(value) + change

    rows = [(name, cell(acc.value, base_acc.value if base_acc else None),
             *(cell(further(acc).get(k), further(base_acc).get(k) if base_acc else None) for k in names))
            for name, acc in found]  # fmt: skip
    return ("variant", metric, *names), rows


def further(acc: Accuracy) -> dict[str, float]:
    """An accuracy's further figures, held-out sets named '<metric> on <set>'."""
    return {**(acc.details or {}), **{f"{acc.metric} on {n}": v for n, v in (acc.held_out or {}).items()}}


METRICS_NOTE = ("Each figure on the test split in this target's runtime, in points, or on the held-out set it "
                "names (data.held_out: other text, never trained on); in brackets, the change from the baseline.")  # fmt: skip
PARTS_NOTE = ("Time per part of the model, from the runtime's own profiler: each part's share of the profiled "
              "time, applied to the p50 measured without the profiler (which slows every call down).")  # fmt: skip


def readable(value) -> str:
    """A value as words rather than Python's repr: {'warmup': 10, 'rounds': 3} -> 'warmup 10, rounds 3'."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_inner(v)}" for k, v in value.items()) or "–"
    if isinstance(value, list | tuple):
        return ", ".join(readable(x) for x in value) or "–"
    return "–" if value is None else str(value)


def _inner(value) -> str:
    return f"({readable(value)})" if isinstance(value, dict | list | tuple) else readable(value)


def target_title(target: TargetInfo) -> str:
    threads = f"{target.threads} thread{'s' if target.threads != 1 else ''}"
    where = f" at {target.host}" if target.host else ""
    where += f" x {len(target.boards)} boards" if target.boards else ""
    return f"{target.name} ({target.runtime} on {target.device}{where}, {threads})"


FLEETS = {"spread": "each variant measured once, on whichever board was free",
          "merged": "every board measured every variant; each variant's calls on all boards form one distribution"}  # fmt: skip


def device_lines(target: TargetInfo) -> list[str]:
    """The device's recorded state, one fact per line: what makes its numbers comparable or not."""
    if target.error:
        return [f"Not measured: {target.error}"]
    if not target.boards:
        return state_lines(target.state, "Device")
    lines = [f"Fleet of {len(target.boards)} boards: {FLEETS.get(target.fleet or '', target.fleet)}"]
    for b in target.boards:
        label = f"Board {b.name} ({b.host}, {len(b.variants)} variant(s)), device"
        lines += [f"Board {b.name} ({b.host}) dropped out: {b.error}"] if b.error else state_lines(b.state, label)
    return lines


def state_lines(state: dict, label: str) -> list[str]:
    before, after = state.get("state_before") or {}, state.get("state_after") or {}
    if not before:
        return []  # no state recorded (a report from before states were, or one built by hand)
    cpu = before.get("cpu", {})
    lines = [f"{label} {before.get('hostname')}: {cpu.get('model')} ({cpu.get('logical_cores')} cores), "
             f"{before.get('os')}, governor {cpu.get('governor') or 'unknown'}, "
             f"load {readable(cpu.get('load_average'))} before / {readable(after.get('load_average'))} after"]  # fmt: skip
    hottest = [max(s.get("temperatures_c", {}).values(), default=None) for s in (before, after)]
    if hottest[0] is not None:
        lines.append(f"Hottest sensor: {hottest[0]:.1f} °C before, {hottest[1]:.1f} °C after")
    jetson = before.get("jetson")
    if jetson:
        mode = (jetson.get("power_mode") or {}).get("name")
        lines.append(f"Jetson {jetson.get('model')}: L4T {jetson.get('l4t')}, JetPack {jetson.get('jetpack')}, "
                     f"power mode {mode}, jetson_clocks {'on' if jetson.get('jetson_clocks') else 'off'}, "
                     f"GPU {jetson.get('gpu_clock_mhz')} MHz, EMC {jetson.get('emc_clock_mhz')} MHz")  # fmt: skip
    for gpu in before.get("gpu") or []:
        lines.append(f"GPU {gpu.get('name')}: driver {gpu.get('driver_version')}, {gpu.get('pstate')}, "
                     f"SM {gpu.get('clocks.sm')} MHz, {gpu.get('temperature.gpu')} °C, {gpu.get('power.draw')} W")  # fmt: skip
    power = state.get("power")
    if power:
        lines.append("Mean power while timing: " + ", ".join(f"{k} {v} mW" for k, v in power["mean_mw"].items()))
    return lines


def target_facts(report: Report, target: TargetInfo) -> list[str]:
    """The device's state, what executed the variants, and each p50's interval."""
    return device_lines(target) + provider_lines(report, target) + interval_lines(report, target)


def provider_lines(report: Report, target: TargetInfo) -> list[str]:
    """What executed the variants on this target (ONNX Runtime's provider, OpenVINO's device)."""
    timed = [x for v in report.variants for x in v.latency if x.target == target.name]
    used = sorted({x.provider for x in timed if x.provider})
    shapes = sorted({x.shapes for x in timed if x.shapes})
    compiled = f"; input shapes compiled: {', '.join(shapes)}" if shapes else ""
    return [f"Executed by: {', '.join(used)}{compiled}"] if used else []


def interval_lines(report: Report, target: TargetInfo) -> list[str]:
    """p50 with its 95 % interval per variant and batch, flagging runs the time cap ended early and
    runs other load disturbed."""
    cells = []
    for v in report.variants:
        for lat in (x for x in v.latency if x.target == target.name):
            if lat.p50_ci_low_ms is None:
                continue
            flag = " (time cap reached: unstable)" if lat.stable is False else ""
            flag += " (disturbed: other load on the machine)" if lat.disturbed else ""
            flag += board_note(lat.boards)
            cells.append(f"{v.name}@{lat.batch_size} {lat.p50_ms:.4g} [{lat.p50_ci_low_ms:.4g}, "
                         f"{lat.p50_ci_high_ms:.4g}] ms{flag}")  # fmt: skip
    return ["p50 with 95 % interval: " + "; ".join(cells)] if cells else []


def board_note(boards: dict[str, float] | None) -> str:
    """Which board of a fleet measured an entry, or each board's own p50 in a merged one."""
    if not boards:
        return ""
    if len(boards) == 1:
        return f" on board {next(iter(boards))}"
    return " (boards: " + ", ".join(f"{b} {p50:.4g}" for b, p50 in boards.items()) + ")"


def _md_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def to_markdown(report: Report) -> str:
    r = report.recipe
    scored = any(v.accuracy for v in report.variants)
    accuracy = ("Accuracy is measured by running each exported file in the target's runtime on the test split"
                if scored else "No accuracy was measured (model files profiled with random inputs)")  # fmt: skip
    lines = [f"# compress report: {r.name}", "",
             f"Recipe `{r.path or r.name}` (hash `{r.hash}`), created {report.created}. "
             f"Baseline: `{report.baseline}`. {accuracy}; latency is measured per call after warm-up.", ""]  # fmt: skip
    for target in report.targets:
        batch = report.batch_for(target.name)
        lines += [f"## {target_title(target)}", "", f"Batch size {batch}; ratios are against `{report.baseline}`.", ""]
        lines += _md_table(columns(report), comparison_rows(report, target)) + [""]
        lines += (front_lines(report, target.name) + [""]) if scored else []
        lines += [f"- {x}" for x in target_facts(report, target)] + [""]
        header, rows = metrics_table(report, target)
        if rows:
            lines += ["### Metrics", "", METRICS_NOTE, ""] + _md_table(header, rows) + [""]
        header, rows = parts_table(report, target)
        if rows:
            lines += ["### Where the time goes", "", PARTS_NOTE, ""] + _md_table(header, rows) + [""]
        header, rows = op_table(report, target)
        if rows:
            lines += ["### Time per op type", "", LAYERS_NOTE, ""] + _md_table(header, rows) + [""]
        for other in target.batch_sizes:
            if other != batch and any(v.latency_at(target.name, other) for v in report.variants):
                lines += (
                    [f"### Batch size {other}", ""] + _md_table(BATCH_COLUMNS, batch_rows(report, target, other)) + [""]
                )
    if len(report.targets) > 1:
        lines += ["## Across targets", ""] + front_lines(report, "*") + [""]
    lines += search_lines(report) + _details(report) + _environment(report)
    return "\n".join(lines) + "\n"


def front_lines(report: Report, target: str) -> list[str]:
    """One line per front of a target: its members and the suggested knee."""
    lines = []
    for f in report.fronts:
        if f.target == target:
            name = f"accuracy vs {f.latency}" + (" vs size" if f.with_size else "")
            lines.append(f"- Front ({name}): {', '.join(f.members) or '–'}; knee: **{f.knee or '–'}**")
    return lines


def _details(report: Report) -> list[str]:
    lines = ["## Variants", ""]
    for v in report.variants:
        lines.append(f"- **{v.name}** ({v.format}, {v.precision}): {' → '.join(v.stages)}; `{v.path}`")
        for key in ("activations", "weights", "per_channel", "calibration", "quantized_ops", "float_ops"):
            if key in v.details:
                lines.append(f"  - {key}: {v.details[key]}")
        pruning = v.pruning()
        lines += [f"  - attention {a['module']} ({a['layout']}) x{a['layers']}: {a['outcome']}"
                  for a in (pruning.attention or [] if pruning else [])]  # fmt: skip
        if pruning and pruning.blocks:
            b = pruning.blocks
            lines.append(f"  - blocks removed from `{b['stack']}`: {', '.join(map(str, b['removed']))} of {b['blocks']} "
                         f"(training loss {b['loss'][0]} -> {b['loss'][-1]})")  # fmt: skip
        if pruning and pruning.reconstruction:
            r = pruning.reconstruction
            lines.append(f"  - {r['layers']} Linear layers refitted to their unpruned outputs: relative output error "
                         f"{r['error_before']} -> {r['error_after']}")  # fmt: skip
        if pruning and pruning.ratios:
            lines.append("  - ratios by sensitivity: " + ", ".join(f"`{g}` {r:.2f}" for g, r in pruning.ratios.items()))
        lines += _precision_map(v)
        lines += _accuracy_control(v.accuracy_control())
        if fallback := v.details.get("fallback"):
            lines.append(f"  - fallback: {fallback['reason']}; QAT {fallback['qat_val_accuracy']} on val against "
                         f"PTQ's {fallback['ptq_val_accuracy']}: **{fallback['used']}** kept")  # fmt: skip
        lines += [f"  - error: {e}" for e in v.errors]
    if report.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report.warnings]
    return lines + [""]


def _precision_map(v: Variant, shown: int = 10) -> list[str]:
    """Which layers of a quantized variant run in its precision and which stayed in float (by design,
    by `ignore`, or sent back by accuracy-aware PTQ)."""
    q = v.quantization()
    if q is None:
        return []
    quantized = q.quantized_layers if q.quantized_ops is None else q.quantized_ops
    floats = q.float_nodes or q.float_layers or []
    names = f": {', '.join(f'`{n}`' for n in floats[:shown])}{' …' if len(floats) > shown else ''}" if floats else ""
    return [f"  - precision map: {quantized if quantized is not None else '?'} layer(s) in {q.precision}, "
            f"{len(floats)} in float{names}"]  # fmt: skip


def _accuracy_control(control: AccuracyControl | None) -> list[str]:
    """The budget, whether it held, and each layer returned to float with what it cost or saved."""
    if not control:
        return []
    outcome = "met" if control.met else "**not met**"
    ranked = f", layers ranked by {control.ranked_by}" if control.ranked_by else ""
    lines = [f"  - accuracy budget: {control.budget_points} points on val (fp32 {control.fp32_val_accuracy}): "
             f"{outcome} with {len(control.float_nodes)} layer(s) in float{ranked}"]  # fmt: skip
    for step in control.steps:
        p50 = f", p50 {step.p50_ms} ms" if step.p50_ms is not None else ""
        lines.append(f"    - {_step_action(step)}: {step.val_accuracy} on val{p50}")
    return lines


def _step_action(step: ControlStep) -> str:
    if step.float_layer:
        return f"`{step.float_layer}` back to float (sensitivity {step.sensitivity})"
    if step.int8_layer:
        return f"`{step.int8_layer}` tried back in INT8 ({'kept' if step.kept else 'stays float'})"
    return step.label or "all quantized"


def _environment(report: Report) -> list[str]:
    env = report.environment
    cpu = env.get("cpu", {})
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
    lines = ["## Environment", "", f"- CPU: {cpu.get('model')} ({cpu.get('logical_cores')} logical cores); "
             f"ISA: {', '.join(cpu.get('isa', [])) or 'unknown'}", f"- OS: {env.get('os')}, Python {env.get('python')}",
             f"- Packages: {packages}"]  # fmt: skip
    for t in report.targets:
        p = t.protocol
        lines.append(f"- {t.name}: {t.threads} thread(s), batches {t.batch_sizes}, warm-up {p.get('warmup')}, "
                     f"≥{p.get('min_iterations')} iterations and ≥{p.get('min_seconds')} s in {p.get('rounds')} interleaved rounds")  # fmt: skip
    return lines


def print_tables(report: Report, console) -> None:
    """The same comparison as report.md, as rich tables."""
    from rich.table import Table
    from rich.text import Text

    for target in report.targets:
        table = Table(title=f"{target_title(target)}, batch {report.batch_for(target.name)}")
        for i, column in enumerate(columns(report)):
            table.add_column(column, justify="left" if i < 2 else "right")
        for row in comparison_rows(report, target):
            table.add_row(*(Text(cell) for cell in row))  # plain text: names like 'pruned[ratio=0.3]' are not markup
        console.print(table)
    for warning in report.warnings:
        console.print(Text("warning: ", style="yellow") + Text(warning))  # plain text, as above
