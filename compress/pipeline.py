"""Run a recipe: prepare data, run the stages in order with a cache, measure every variant, report.

Every stage result is stored under `cache/<stage>-<key>/`, where the key hashes the input's key,
the stage's configuration, the data, the seed and the library versions. A folder only appears once
complete (written aside, then renamed), so an interrupted run resumes where it stopped and a
rerun with an unchanged prefix reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from compress import distributed
from compress.artifact import DEPLOYABLE, Artifact, Kind, save_torch
from compress.data import Splits, data_inputs, data_source, load_data
from compress.data.preprocess import mean_std, preprocessing
from compress.errors import UsageError, check_output_folder, writing
from compress.execute import make_cached, result_folder, resume_name
from compress.failures import stage_failure
from compress.fingerprint import Fingerprints, code_fingerprint
from compress.lock import run_lock
from compress.measure import environment
from compress.measure.fleet import measure_all
from compress.measure.jobs import (
    TRACES,
    Deployable,
    companions,
    disturbance_warnings,
    target_warnings,
)
from compress.names import file_name
from compress.recipe import Recipe
from compress.recipe.checks import target_search_dirs
from compress.report.diagnose import (
    budget_warnings,
    format_warnings,
    held_out_warnings,
    not_faster_warnings,
    runtime_warnings,
)
from compress.report.outputs import render_all
from compress.report.pareto import mark_fronts
from compress.report.schema import RecipeInfo, Report, StageFailure, Variant
from compress.report.searched import flags as search_flags
from compress.requirements import check_requirements
from compress.stages import StageContext
from compress.stages.device import check_recipe_devices
from compress.targets import TargetSpec, resolve_targets
from compress.tasks import get_task
from compress.variants import failed_variant, merge_points, parent_variant

# Every package whose code can change a stage's result; compress's own source is fingerprinted too.
CACHE_PACKAGES = ("compress", "torch", "torchvision", "torch-pruning", "timm", "transformers", "tokenizers", "onnx",
                  "onnxruntime", "onnxscript", "openvino", "nncf", "numpy", "scikit-learn", "pillow")  # fmt: skip


def cache_key(*parts: object) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def output_dir(recipe: Recipe, override: str | Path | None) -> Path:
    if override:
        return Path(override)
    if recipe.report.output_dir:
        return recipe.resolve_path(recipe.report.output_dir)
    return Path("reports") / recipe.name


class Pipeline:
    """One run of one recipe into one output folder."""

    def __init__(self, recipe: Recipe, out: Path, log=print, show_progress: bool = True) -> None:
        self.recipe, self.out, self.log, self.show_progress = recipe, out, log, show_progress
        self.search_result = None  # set by a recipe's search (compress.search)
        self.cache = out / "cache"
        self.fingerprints = Fingerprints(self.cache / "fingerprints.json")
        self.versions = {**environment.package_versions(CACHE_PACKAGES),
                         "compress-code": code_fingerprint(self.fingerprints)}  # fmt: skip
        self.task = get_task(recipe.data.task, text=data_source(recipe.data.source).text)
        self.reused = self.computed = 0  # stage results taken from the cache / computed in this run

    def run(self) -> Report | None:
        """The report, written to the output folder. Under torchrun, ranks other than 0 only take part
        in the stages and return None (see compress.distributed)."""
        if not distributed.leader():
            with distributed.joined():
                self.make_variants()
            return None
        with run_lock(self.out):
            remove_outputs(self.out)  # a failed run must not leave the last report to be gated
            remove_orphans(self.cache, self.out / "models")
            targets = resolve_targets(self.recipe.targets, target_search_dirs(self.recipe))
            check_requirements(self.recipe, targets)
            check_recipe_devices(self.recipe)
            with distributed.joined():
                splits, found, failures = self.make_variants()
            self.log(f"cache: {self.reused} stage result(s) reused, {self.computed} computed")
            report = self.measure_and_report(found, failures, targets, splits)
            self.write_outputs(report)
            return report

    def make_variants(self) -> tuple[Splits, list, list[StageFailure]]:
        """The data, the sources and every stage: (splits, variants, failures)."""
        splits, data_key = self.prepare_data()
        sources = self.sources(splits, data_key)
        if distributed.leader():
            self.fingerprints.save()
        if self.task.labels_from_model:
            splits, data_key = self.label_with(sources["model"], splits, data_key)
        return splits, *self.run_points(sources, splits, data_key)

    def run_points(self, sources, splits: Splits, data_key: str) -> tuple[list, list[StageFailure]]:
        """Run every sweep point's chain (or the recipe's one chain); failing stages are recorded."""
        if self.recipe.search:
            from compress.search import run_search

            return run_search(self, sources, splits, data_key)
        if self.recipe.executor.type != "local":
            from compress.graph import run_points_as_graph

            check_executor(self.recipe, distributed.size())
            return run_points_as_graph(self, sources, data_key)
        per_point, failures = [], []
        points = self.recipe.points()
        for label, point in points:
            if label:
                self.log(f"sweep point {label}")
            outputs = dict(sources)
            failures += self.run_stages(point, outputs, splits, data_key, label)
            # What a failed point made before failing is still valid and kept.
            per_point.append((label, self.variants(point, outputs)))
        return merge_points(per_point, len(points)), failures

    # ------------------------------------------------------------------ data and stages

    def prepare_data(self) -> tuple[Splits, str]:
        spec = self.recipe.data
        # Training text read from installed packages changes with their versions.
        extra = environment.module_versions(spec.train_packages) if spec.train_packages else {}
        files = self.fingerprints.of(data_inputs(spec, self.recipe.base_dir, self.recipe.seed, self.recipe.model.arch))
        key = cache_key(
            "data",
            spec.model_dump(exclude={"workers"}),
            files,
            self.recipe.seed,
            self.versions,
            *([extra] if extra else []),
        )
        splits = self.cached_splits(
            f"data-{key}",
            lambda: load_data(spec, self.recipe.base_dir, self.recipe.seed, self.recipe.model.arch, self.cache),
        )
        sizes = f"{len(splits.x_train)}/{len(splits.x_val)}/{len(splits.x_test)}" + "".join(
            f", held-out {name} {len(x)}" for name, (x, _) in splits.held_out.items()
        )
        self.log(
            f"data: {spec.source}, {splits.num_classes} classes, train/val/test {sizes}, input {splits.input_shape}"
        )
        return splits, key

    def cached_splits(self, name: str, make) -> Splits:
        """Reuse the split folder `cache/<name>` if complete, else make it, save it aside and rename it
        into place. Either way the arrays come back memory-mapped from that folder."""
        path = self.splits_folder = self.cache / name  # tasks in other processes read the splits from here
        if distributed.leader() and not Splits.saved(path):
            splits = make()
            with writing(path):
                self.cache.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.cache))
                try:
                    splits.save(tmp)
                    shutil.rmtree(path, ignore_errors=True)
                    os.replace(tmp, path)
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
        distributed.agree()  # the other ranks read the folder once rank 0 has put it in place
        return Splits.load(path)

    def label_with(self, source: Artifact, splits: Splits, data_key: str) -> tuple[Splits, str]:
        """Tasks whose labels are the source model's outputs (embedding fidelity): compute them once."""
        from compress.artifact import load_torch

        def make() -> Splits:
            self.log("data: labelling every split with the source model's outputs")
            model = load_torch(source).eval()
            return splits.with_labels(lambda x: self.task.predict(model, x))

        key = cache_key(data_key, source.key)
        return self.cached_splits(f"labels-{key}", make), key

    def sources(self, splits: Splits, data_key: str) -> dict[str, Artifact]:
        return {name: self.source(name, spec, splits, data_key) for name, spec in self.recipe.sources().items()}

    def run_stages(self, recipe: Recipe, outputs: dict[str, Artifact], splits: Splits, data_key: str,
                   label: str = "") -> list[StageFailure]:  # fmt: skip
        """Run `recipe`'s stages, adding each result to `outputs` (which starts with the sources). A
        failing stage is recorded and the stages that need its result are skipped; the rest run."""
        ctx_base = dict(splits=splits, task=self.task, seed=self.recipe.seed, log=self.log,
                        show_progress=self.show_progress, shared_cache=self.cache,
                        augment=data_source(self.recipe.data.source).augment, workers=self.recipe.data.workers)  # fmt: skip
        failures, previous = [], "model"
        for stage in recipe.stages:
            needs, previous = [stage.input or previous, *stage.references()], stage.name
            if any(name not in outputs for name in needs):
                self.log(
                    f"{stage.name}: skipped: it needs {', '.join(n for n in needs if n not in outputs)}, which failed"
                )
                continue
            parent, refs = outputs[needs[0]], {name: outputs[name] for name in stage.references()}
            key = self.stage_key(stage, parent.key, {n: a.key for n, a in refs.items()}, data_key)
            resume = self.cache / resume_name(stage.name, key)
            make = lambda d, s=stage, p=parent, r=refs, c=resume: s.run(  # noqa: E731
                p, StageContext(workdir=d, refs=r, checkpoints=c, **ctx_base)
            )
            try:
                outputs[stage.name] = self.cached(stage.name, key, make, trains=stage.training() is not None)
            except distributed.TrainingAborted:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded per stage; the other branches go on
                if distributed.leader():  # the other ranks write nothing, not even a log
                    failures.append(stage_failure(exc, stage.name, label, self.out / "logs"))
                    self.log(f"warning: {failures[-1].line()}")
        return failures

    def stage_key(self, stage, parent_key: str, ref_keys: dict[str, str], data_key: str) -> str:
        settings = stage.model_dump(exclude={"resources"})  # where it runs does not change the result
        return cache_key(settings, parent_key, ref_keys, data_key, self.recipe.seed, self.versions)

    def source(self, name: str, spec, splits: Splits, data_key: str) -> Artifact:
        """The initial model (or teacher), built from its recipe section and cached."""
        key = cache_key(name, spec.model_dump(), self.fingerprints.of(self.model_files(spec)), data_key, self.versions)
        return self.cached(name, key, lambda d: self.build_source(name, spec, splits, d))

    def cached(self, name: str, key: str, make, trains: bool = False) -> Artifact:
        """Reuse `cache/<name>-<key>` if complete, else build it aside and rename it into place. Under
        torchrun only rank 0 does; the others take part in a training `make` and then read its result."""
        final = result_folder(self.cache, name, key)
        if not distributed.leader():
            distributed.follow(final, make if trains else None)
            return Artifact.load(final)
        if distributed.agree(Artifact.exists(final)):
            artifact, _ = make_cached(self.cache, name, key, make, self.log)  # reused
            self.reused += 1
            return artifact
        self.computed += 1
        with distributed.telling():  # the other ranks wait for rank 0's word, even when it failed
            artifact, _ = make_cached(self.cache, name, key, make, self.log)
        return artifact

    def build_source(self, name: str, spec, splits: Splits, workdir: Path) -> Artifact:
        import torch

        from compress.models import build_model, count_params

        torch.manual_seed(self.recipe.seed)  # the same seed gives the same initial weights
        shape = splits.input_shape
        model = build_model(spec, self.recipe.base_dir, shape[0], splits.num_classes, shape[-1], self.log,
                            mean_std(self.recipe.data))  # fmt: skip
        arch = spec.arch or spec.python
        problem = self.task.model_problem(model)
        if problem:
            raise UsageError(f"model '{arch}' cannot serve data.task '{self.recipe.data.task}': {problem}",
                             hint="choose a model for the task, or change data.task")  # fmt: skip
        file = save_torch(model, workdir)
        params = count_params(model)
        self.log(f"{name}: {arch}, {params:,} parameters")
        return Artifact(Kind.TORCH, file, lineage=[], meta={"params": params, "arch": arch, "source": name})

    def model_files(self, spec) -> list[Path]:
        """What building a model reads: its Python file, checkpoint and its source's files."""
        from compress.models import model_source, weights_inputs

        files = [self.recipe.resolve_path(spec.python.rpartition(":")[0])] if spec.python else []
        files += [self.recipe.resolve_path(spec.checkpoint)] if spec.checkpoint else []
        files += weights_inputs(spec, self.recipe.base_dir)
        if spec.arch:
            source, name = model_source(spec.arch)
            files += source.inputs(name, self.recipe.base_dir) if source else []
        return files

    # ------------------------------------------------------------------ measurement and report

    def variants(self, recipe: Recipe, outputs: dict[str, Artifact]) -> list[tuple[str, str | None, Artifact]]:
        """(variant name, parent variant, artifact) for each stage that made a deployable model."""
        found: list[tuple[str, str | None, Artifact]] = []
        entry_stages = {s.name for s in recipe.stages if s.consumes == Kind.TORCH and s.produces in DEPLOYABLE}
        for stage in recipe.stages:
            if stage.produces in DEPLOYABLE and stage.name in outputs:
                artifact = outputs[stage.name]
                earlier = [(name, a.lineage) for name, _, a in found]
                found.append((stage.variant, parent_variant(artifact.lineage, earlier, entry_stages), artifact))
        return found

    def measure_and_report(self, found: list, failures: list, targets: list[TargetSpec], splits: Splits) -> Report:
        models_dir = self.out / "models"
        with writing(models_dir):
            models_dir.mkdir(parents=True, exist_ok=True)
        variants = [self.publish(name, parent, artifact, models_dir) for name, parent, artifact in found]
        models = {
            v.name: Deployable(self.out / v.path, a.kind, v.precision, parts=a.meta.get("parts"))
            for v, (_, _, a) in zip(variants, found, strict=True)
        }
        target_infos = measure_all(targets, models, variants, splits, self.task, self.log, self.out)
        fallback = variants[0].name if variants else ""  # empty only when every sweep point failed
        baseline = self.recipe.report.baseline or next((v.name for v in variants if v.precision == "fp32"), fallback)
        report = Report(
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            recipe=RecipeInfo(name=self.recipe.name, path=str(self.recipe.path) if self.recipe.path else None,
                              hash=self.recipe.content_hash),
            environment=environment.capture(), baseline=baseline,
            pareto_batch_size=self.recipe.report.pareto_batch_size, targets=target_infos, variants=variants,
            gates=self.recipe.gates.model_dump(exclude_defaults=True) if self.recipe.gates else None,
            cache={"reused": self.reused, "computed": self.computed},
            preprocessing=preprocessing(self.recipe.data, data_source(self.recipe.data.source).text),
            memory=environment.peak_memory(),
        )  # fmt: skip
        report.failures, report.search = failures, self.search_result
        first = {f.point: f for f in reversed(failures) if f.point}  # one entry per failed sweep point
        report.variants += [failed_variant(f.point, f.message) for f in reversed(first.values())]
        report.warnings += [f.line() for f in failures]
        report.warnings += target_warnings(target_infos) + disturbance_warnings(report.variants)
        mark_fronts(report)
        report.warnings += (
            not_faster_warnings(report, self.out)
            + format_warnings(report)
            + budget_warnings(report)
            + held_out_warnings(report)
            + runtime_warnings(report)
        )
        report.warnings += search_flags(report) if report.search else []
        return report

    def publish(self, name: str, parent: str | None, artifact: Artifact, models_dir: Path) -> Variant:
        """Copy a deployable artifact to models/<variant>.<ext> (with companion files) and describe it."""
        dest = models_dir / f"{file_name(name)}{artifact.path.suffix}"
        size = 0
        for file in [artifact.path, *companions(artifact.path, artifact.kind)]:
            target = dest.with_suffix(file.suffix)
            tmp = target.with_name(f".{target.name}.tmp")
            with writing(target):
                shutil.copyfile(file, tmp)
                os.replace(tmp, target)
            size += target.stat().st_size
        meta = artifact.meta
        details = {k: v for k, v in meta.items() if k not in ("params", "macs", "precision", "format")}
        return Variant(name=name, stages=artifact.lineage, parent=parent, format=meta.get("format", str(artifact.kind)),
                       precision=meta.get("precision", "fp32"), path=str(dest.relative_to(self.out)),
                       size_bytes=size, params=meta.get("params"), macs=meta.get("macs"), details=details)  # fmt: skip

    def write_outputs(self, report: Report) -> None:
        report.save(self.out / "report.json")
        render_all(report, self.out, plot=self.recipe.report.plot)


def remove_orphans(*folders: Path) -> None:
    """Half-made stage folders and temporary files a killed run left: every temporary name starts with
    a dot. Safe under the run lock, since no other run writes here."""
    for path in (p for folder in folders if folder.is_dir() for p in folder.glob(".*")):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def remove_outputs(folder: Path) -> None:
    for name in ("report.json", "report.md", "report.html"):
        (folder / name).unlink(missing_ok=True)
    shutil.rmtree(folder / TRACES, ignore_errors=True)  # profiles of the last run's variants


def check_executor(recipe: Recipe, processes: int) -> None:
    """Data-parallel training runs in the local executor; the task executors run stages elsewhere."""
    if processes > 1 and recipe.executor.type != "local":
        raise UsageError(f"executor {recipe.executor.type} runs stages as tasks; data-parallel training "
                         "(--nproc, torchrun) runs in the local executor",
                         hint="use one of the two: drop --nproc, or --executor local")  # fmt: skip


def run_recipe(
    recipe: Recipe, output: str | Path | None = None, log=print, show_progress: bool = True
) -> Report | None:
    """Run `recipe` end to end; returns the report also written to the output folder (None on ranks
    other than 0 under torchrun)."""
    out = output_dir(recipe, output)
    check_output_folder(out)
    return Pipeline(recipe, out, log, show_progress).run()
