"""`compress profile`: measure existing model files on targets and write the usual report.

No recipe and no data: each file is timed on each target (here or on a device over SSH) with
random inputs shaped like its own, under the same protocol, and the device's state is recorded.
This is the CPU / Jetson latency report for a model that was made elsewhere.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

from compress.artifact import Kind
from compress.errors import UsageError, check_output_folder, first_line
from compress.lock import run_lock
from compress.measure import environment
from compress.measure.fleet import measure_all
from compress.measure.jobs import Deployable, disturbance_warnings, target_warnings
from compress.report.outputs import render_all
from compress.report.pareto import mark_fronts
from compress.report.schema import RecipeInfo, Report, Variant
from compress.runtimes import check_available
from compress.runtimes.base import is_quantized
from compress.targets import TargetSpec

FORMATS = {".onnx": Kind.ONNX, ".xml": Kind.OPENVINO}


def deployable(path: Path) -> Deployable:
    """A model file as a runtime sees it; INT8 when it holds Q/DQ (ONNX) or FakeQuantize (IR) nodes."""
    kind = FORMATS.get(path.suffix)
    if kind is None or not path.is_file():
        raise UsageError(f"{path}: not an .onnx or OpenVINO .xml file" if path.is_file() else f"{path} not found",
                         hint="pass an ONNX model or an OpenVINO IR (.xml with its .bin beside it)")  # fmt: skip
    problem = model_file_problem(path, kind)
    if problem:
        raise UsageError(f"{path}: {problem}", hint="pass a complete model file, as exported or converted")
    return Deployable(path, kind, "int8" if is_quantized(path, kind) else "fp32")


def model_file_problem(path: Path, kind: Kind) -> str | None:
    """What keeps a runtime from loading `path`, found before any measuring (None: nothing)."""
    if path.stat().st_size == 0:
        return "the file is empty"
    if kind == Kind.ONNX:
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf and onnx raise several types for damaged files
            return f"not a valid ONNX model ({first_line(exc)})"
        return None if model.HasField("graph") and model.graph.output else "not a valid ONNX model (it holds no graph)"
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return f"not an OpenVINO IR file (not valid XML: {exc})"
    if root.tag != "net" or root.find("layers") is None:
        found = f"its root element is <{root.tag}>, not <net>" if root.tag != "net" else "it has no <layers>"
        return f"not an OpenVINO IR file ({found})"
    weights = path.with_suffix(".bin")
    if not weights.is_file() and root.find(".//data[@offset]") is not None:
        return f"its weights file {weights.name} is missing; it belongs beside the .xml"
    return None


def variant_names(paths: list[Path]) -> list[str]:
    """File stems, made unique with their folder when two files share a stem."""
    stems = [p.stem for p in paths]
    return [p.stem if stems.count(p.stem) == 1 else f"{p.parent.name}/{p.stem}" for p in paths]


def profile(paths: list[Path], targets: list[TargetSpec], out: Path, sequence_length: int = 128, log=print) -> Report:
    """Time every file on every target and write report.json, report.md, report.html and plots."""
    if sequence_length < 1:
        raise UsageError(f"--sequence-length must be at least 1, got {sequence_length}",
                         hint="free non-batch input dimensions (e.g. tokens) take this length")  # fmt: skip
    check_output_folder(out)
    models = {name: deployable(p) for name, p in zip(variant_names(paths), paths, strict=True)}
    check_available(targets)
    variants = [variant(name, m) for name, m in models.items()]
    with run_lock(out):
        infos = measure_all(targets, models, variants, None, None, log, out, sequence_length)
        digest = hashlib.sha256(b"".join(m.path.read_bytes() for m in models.values())).hexdigest()[:16]
        report = Report(created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        recipe=RecipeInfo(name="profile", path=None, hash=digest), environment=environment.capture(),
                        baseline=variants[0].name, targets=infos, variants=variants)  # fmt: skip
        report.warnings += target_warnings(infos) + disturbance_warnings(variants)
        report.warnings.append("inputs were random (no data given), so no accuracy was measured")
        mark_fronts(report)
        report.save(out / "report.json")
        render_all(report, out)
    return report


def variant(name: str, model: Deployable) -> Variant:
    files = [model.path, *model.companions]
    return Variant(name=name, stages=[], format=str(model.kind), precision=model.precision, path=str(model.path.resolve()),
                   size_bytes=sum(f.stat().st_size for f in files))  # fmt: skip
