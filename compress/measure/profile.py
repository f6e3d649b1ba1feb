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
from compress.errors import UsageError
from compress.lock import run_lock
from compress.measure import environment
from compress.measure.jobs import Deployable, disturbance_warnings, measure_all, target_warnings
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
    return Deployable(path, kind, "int8" if is_quantized(path, kind) else "fp32")


def variant_names(paths: list[Path]) -> list[str]:
    """File stems, made unique with their folder when two files share a stem."""
    stems = [p.stem for p in paths]
    return [p.stem if stems.count(p.stem) == 1 else f"{p.parent.name}/{p.stem}" for p in paths]


def profile(paths: list[Path], targets: list[TargetSpec], out: Path, sequence_length: int = 128, log=print) -> Report:
    """Time every file on every target and write report.json, report.md, report.html and plots."""
    models = {name: deployable(p) for name, p in zip(variant_names(paths), paths, strict=True)}
    check_available(targets)
    variants = [variant(name, m) for name, m in models.items()]
    with run_lock(out):
        infos = measure_all(targets, models, variants, None, None, log, sequence_length)
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
