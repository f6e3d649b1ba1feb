"""The recipe: its schema, YAML loading, `--set` overrides and the checks that span fields.

A recipe is plain data. Every mistake found while loading is collected and raised as one
RecipeError whose problems name the file, line, column and field path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, model_validator

from compress import registry
from compress.errors import Problem, RecipeError
from compress.report.gates import Gates
from compress.targets import TargetSpec, find_target, missing_target_problem
from compress.yamlconfig import Marks, locate, parse_yaml, read_yaml, suggest, validate

TORCH, ONNX, OPENVINO = "torch", "onnx", "openvino"  # artifact kinds that flow between stages
DEPLOYABLE = (ONNX, OPENVINO)  # kinds a runtime can measure; each such stage output is a variant


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(Strict):
    """A model from the built-in zoo, torchvision, or the user's own Python file."""

    arch: str | None = Field(None, description="zoo name (resnet, mobilenetv2, vit) or torchvision:<name>")
    python: str | None = Field(None, description="path/to/file.py:function returning an nn.Module; runs that code")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the builder")
    checkpoint: str | None = Field(None, description="state_dict file loaded with weights_only=True")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.arch is None) == (self.python is None):
            raise ValueError("give exactly one of 'arch' or 'python'")
        return self


class DataSpec(Strict):
    """Where examples come from and how they are split; the task fixes inputs, outputs and metric."""

    source: Literal["digits", "imagefolder", "npz", "text"] = "digits"
    path: str | None = Field(None, description="folder (imagefolder), .npz file (npz) or text file (text)")
    task: Literal["classification", "embedding"] = "classification"
    max_length: int = Field(128, ge=8, le=4096, description="text: tokens per example (padded)")
    tokenizer: str | None = Field(None, description="text: hf folder or package; default: the model's")
    train_packages: list[str] = Field(
        default_factory=list, description="embedding: installed packages whose docstrings add training sentences"
    )
    train_sentences: int | None = Field(None, ge=1, description="embedding: at most this many from train_packages")
    image_size: int = Field(32, ge=4, le=1024)
    channels: Literal[1, 3] = 1
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5)

    @model_validator(mode="after")
    def _path_when_needed(self) -> DataSpec:
        if self.source in ("imagefolder", "npz") and not self.path:
            raise ValueError(f"data source '{self.source}' needs 'path'")
        if self.task == "embedding" and self.source != "text":
            raise ValueError("task 'embedding' needs source 'text'")
        if self.source == "text" and self.task == "classification" and not self.path:
            raise ValueError("text classification needs 'path': a file of 'label<TAB>sentence' lines")
        if self.train_packages and self.task != "embedding":
            raise ValueError("train_packages adds unlabelled sentences, so it needs task 'embedding'")
        return self


class StageBase(Strict):
    name: str | None = Field(None, description="unique stage name; defaults to its type")
    input: str | None = Field(None, description="name of the stage whose output this one takes")
    variant: str | None = Field(None, description="report name of the model this stage produces")
    default_variant: ClassVar[str | None] = None  # set on stages whose output is deployable

    @property
    def consumes(self) -> str:
        """The artifact kind this stage takes."""
        return TORCH

    @property
    def produces(self) -> str:
        """The artifact kind this stage makes."""
        return TORCH

    def references(self) -> list[str]:
        """Artifacts this stage reads besides its input (e.g. a teacher)."""
        return []


class TrainingOptions(Strict):
    """Optimisation settings shared by `train`, `finetune` and quantization-aware training."""

    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(64, ge=2, le=65_536)
    lr: float = Field(1e-3, gt=0, le=10)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = Field(0.01, ge=0, le=1)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    schedule: Literal["cosine", "constant"] = "cosine"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    amp: bool = Field(False, description="bfloat16 autocast where the CPU supports it")


class TrainingBase(StageBase, TrainingOptions):
    pass


class TrainStage(TrainingBase):
    """Train the model from its initial weights (random or checkpoint); keep the best on val."""

    type: Literal["train"]


class FeaturePair(Strict):
    student: str = Field(description="module name in the student, e.g. layers.2")
    teacher: str = Field(description="module name in the teacher")


class Distill(Strict):
    """Knowledge distillation (Hinton et al., 2015), optionally with feature matching (FitNets)."""

    teacher: str | None = Field(None, description="stage name, 'teacher' or 'model'; default: the model before pruning")
    temperature: float = Field(4.0, gt=0, le=100)
    alpha: float = Field(0.7, ge=0, le=1, description="weight of the distillation loss; 1 - alpha for cross-entropy")
    features: list[FeaturePair] = Field(default_factory=list)
    feature_weight: float = Field(1.0, ge=0)


class FinetuneStage(TrainingBase):
    """Fine-tune the current model, with distillation from a teacher when `distill` is set."""

    type: Literal["finetune"]
    distill: Distill | None = None

    def references(self) -> list[str]:
        return [self.distill.teacher] if self.distill and self.distill.teacher else []


class PruneStage(StageBase):
    """Structured channel pruning of dependency groups with torch-pruning (DepGraph, Fang et al., 2023)."""

    type: Literal["prune"]
    importance: Literal["l1", "l2", "taylor", "bn_scale", "activation"] = "l2"
    ratio: float | None = Field(None, gt=0, lt=1, description="share of channels removed per group")
    macs_reduction: float | None = Field(None, gt=1, le=1000, description="prune until MACs shrink this many times")
    params_reduction: float | None = Field(
        None, gt=1, le=1000, description="prune until parameters shrink this many times"
    )
    scope: Literal["uniform", "global"] = "uniform"
    steps: int = Field(1, ge=1, le=100, description="iterative steps to reach a ratio")
    max_steps: int = Field(40, ge=2, le=1000, description="resolution when pruning to a target reduction")
    ignore: list[str] = Field(default_factory=list, description="module names, class names or re: patterns left whole")
    heads_ratio: float | None = Field(None, ge=0, lt=1, description="share of attention heads removed (Transformers)")
    embedding: bool = Field(False, description="also prune a Transformer's embedding (residual) width")
    round_to: int | None = Field(8, ge=1, le=256, description="keep channel counts multiples of this")
    taylor_batches: int = Field(8, ge=1, le=10_000, description="batches of gradients for taylor importance")
    activation_batches: int = Field(8, ge=1, le=10_000, description="batches of 64 examples for activation importance")

    @model_validator(mode="after")
    def _one_goal(self) -> PruneStage:
        goals = [g for g in ("ratio", "macs_reduction", "params_reduction") if getattr(self, g) is not None]
        if len(goals) > 1:
            raise ValueError(f"give one of ratio, macs_reduction or params_reduction, not {' and '.join(goals)}")
        if not goals:
            self.ratio = 0.5
        return self


class ExportCheck(Strict):
    samples: int = Field(16, ge=1, le=10_000, description="test-split inputs compared")
    atol: float = Field(1e-4, gt=0)
    rtol: float = Field(1e-3, ge=0)


class ExportStage(StageBase):
    """Export to ONNX and check it against the PyTorch module."""

    type: Literal["export"]
    format: Literal["onnx"] = "onnx"
    opset: int = Field(17, ge=13, le=23)
    exporter: Literal["torchscript", "dynamo"] = "torchscript"
    dynamic_batch: bool = True
    check: ExportCheck = Field(default_factory=ExportCheck)
    default_variant: ClassVar[str | None] = "fp32"

    @property
    def produces(self) -> str:
        return ONNX


class Calibration(Strict):
    method: Literal["minmax", "entropy", "percentile", "mean_minmax"] = "minmax"
    samples: int = Field(256, ge=1, le=100_000, description="drawn from the training split")
    percentile: float = Field(99.999, gt=90, le=100, description="percentile method only")


class QatOptions(TrainingOptions):
    """Fine-tuning with fake quantization (method: qat)."""

    epochs: int = Field(3, ge=1, le=10_000)
    lr: float = Field(1e-4, gt=0, le=10)
    weight_range: Literal["minmax", "mse"] = Field(
        "minmax",
        description="minmax: scales follow the weights' extremes; mse: fixed after calibration at the "
        "least expected squared output error on calibration data",
    )
    distill: Distill | None = None


ORT_ONLY = ("activations", "weights", "reduce_range")
OPENVINO_ONLY = ("preset", "bias_correction")


class QuantizeStage(StageBase):
    """INT8 quantization: post-training (ONNX Runtime QDQ or NNCF to OpenVINO IR) or quantization-aware."""

    type: Literal["quantize"]
    method: Literal["ptq", "dynamic", "qat"] = "ptq"
    backend: Literal["onnxruntime", "openvino"] = "onnxruntime"
    calibration: Calibration = Field(default_factory=Calibration)
    per_channel: bool = True
    activations: Literal["uint8", "int8"] = "uint8"
    weights: Literal["int8", "uint8"] = "int8"
    reduce_range: bool | None = Field(None, description="7-bit weights; default: on for CPUs without VNNI")
    preset: Literal["symmetric", "mixed"] | None = Field(None, description="NNCF preset (openvino)")
    bias_correction: bool | None = Field(None, description="NNCF fast bias correction (openvino); default on")
    model_type: Literal["cnn", "transformer"] = "cnn"
    ignore: list[str] = Field(default_factory=list, description="node names, op types or re: patterns kept in float")
    max_accuracy_drop: float | None = Field(None, gt=0, description="accuracy-aware PTQ budget, in points or relative")
    drop_type: Literal["absolute", "relative"] = "absolute"
    qat: QatOptions | None = Field(None, description="training settings for method: qat")
    default_variant: ClassVar[str | None] = "int8"

    @model_validator(mode="after")
    def _options_fit_backend(self) -> QuantizeStage:
        other = OPENVINO_ONLY if self.backend == "onnxruntime" else ORT_ONLY
        given = [k for k in other if k in self.model_fields_set]
        if given:
            raise ValueError(f"{', '.join(given)} do(es) not apply to backend '{self.backend}'")
        if self.backend == "openvino" and self.calibration.method == "entropy":
            raise ValueError("calibration.method 'entropy' is ONNX Runtime's; use minmax, mean_minmax or percentile")
        if self.method == "qat" and self.backend != "onnxruntime":
            raise ValueError(
                "method 'qat' exports a QDQ ONNX file (runs in ONNX Runtime and OpenVINO); use backend onnxruntime"
            )
        if self.qat is not None and self.method != "qat":
            raise ValueError("'qat' settings need method: qat")
        if self.method != "ptq" and self.max_accuracy_drop is not None:
            raise ValueError("max_accuracy_drop applies to method: ptq")
        if self.method == "dynamic" and self.backend != "onnxruntime":
            raise ValueError("method 'dynamic' is ONNX Runtime's dynamic quantization; use backend onnxruntime")
        if self.method == "qat" and self.qat is None:
            self.qat = QatOptions()
        return self

    @property
    def consumes(self) -> str:
        return TORCH if self.method == "qat" else ONNX

    @property
    def produces(self) -> str:
        return OPENVINO if self.backend == "openvino" else ONNX

    def references(self) -> list[str]:
        distill = self.qat.distill if self.qat else None
        return [distill.teacher] if distill and distill.teacher else []


Stage = Annotated[Union[TrainStage, PruneStage, FinetuneStage, ExportStage, QuantizeStage], Field(discriminator="type")]


def _target_kind(value: Any) -> str:
    return "name" if isinstance(value, str) else "inline"


TargetRef = Annotated[
    Union[Annotated[str, Tag("name")], Annotated[TargetSpec, Tag("inline")]],
    Discriminator(_target_kind),
]


class ReportSpec(Strict):
    output_dir: str | None = Field(None, description="default: reports/<recipe name>")
    baseline: str | None = Field(None, description="variant the others are compared with; default: the first fp32")
    plot: bool = True
    pareto_batch_size: int = Field(1, ge=1, description="batch size whose latency the front uses")


class Sweep(Strict):
    """Vary stage fields by path; each combination (a point) runs as its own chain, sharing cached
    stage results with every other point that has the same prefix."""

    mode: Literal["grid", "random"] = "grid"
    samples: int | None = Field(None, ge=1, le=10_000, description="random: points drawn from the grid")
    parameters: dict[str, list[Any]] = Field(min_length=1, description="stages[NAME].field: [values]")


SWEEPABLE = ("stages",)


class Recipe(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    description: str = ""
    seed: int = Field(0, ge=0)
    model: ModelSpec
    teacher: ModelSpec | None = None
    models: dict[str, ModelSpec] = Field(
        default_factory=dict, description="more named models; a stage takes one with input: NAME"
    )
    data: DataSpec = Field(default_factory=DataSpec)
    stages: list[Stage] = Field(min_length=1)
    targets: list[TargetRef] = Field(default_factory=lambda: ["cpu-onnxruntime"], min_length=1)
    report: ReportSpec = Field(default_factory=ReportSpec)
    gates: Gates | None = Field(None, description="CI limits checked after the run; exit code 1 when one fails")
    sweep: Sweep | None = None

    _path: Path | None = PrivateAttr(None)
    _hash: str = PrivateAttr("")
    _points: list = PrivateAttr(default_factory=list)  # [(label, Recipe)] when sweeping

    @model_validator(mode="after")
    def _default_names(self) -> Recipe:
        counts: dict[str, int] = {}
        for stage in self.stages:
            counts[stage.type] = counts.get(stage.type, 0) + 1
            if stage.name is None:
                n = counts[stage.type]
                stage.name = stage.type if n == 1 else f"{stage.type}-{n}"
            if stage.variant is None and stage.default_variant:
                stage.variant = stage.default_variant if counts[stage.type] == 1 else stage.name
        return self

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def content_hash(self) -> str:
        return self._hash

    @property
    def base_dir(self) -> Path:
        return self._path.parent if self._path else Path.cwd()

    def resolve_path(self, value: str) -> Path:
        """Paths in a recipe are relative to the recipe file."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def points(self) -> list[tuple[str, Recipe]]:
        """(label, recipe) per sweep point; the recipe itself, unlabelled, without a sweep."""
        return self._points or [("", self)]

    def sources(self) -> dict[str, ModelSpec]:
        """Every model a chain can start from: `model`, `teacher` and the named `models`."""
        return {"model": self.model, **({"teacher": self.teacher} if self.teacher else {}), **self.models}

    def stage(self, name: str) -> Any:
        return next(s for s in self.stages if s.name == name)


# ----------------------------------------------------------------------------- loading


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override, validate and check a recipe file; raise RecipeError listing every problem."""
    path = Path(path)
    data, marks = read_yaml(path)
    return recipe_from_data(data, marks, str(path), path, overrides)


def recipe_from_text(text: str, filename: str = "<recipe>", overrides: tuple[str, ...] = ()) -> Recipe:
    data, marks = parse_yaml(text, filename)
    return recipe_from_data(data, marks, filename, None, overrides)


def recipe_from_data(data: Any, marks: Marks, filename: str, path: Path | None, overrides=()) -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError([Problem("", "a recipe must be a YAML mapping of sections", filename, 1, 1)])
    problems = [p for item in overrides for p in apply_override(data, item)]
    if problems:
        raise RecipeError(problems)
    recipe = validate(Recipe, data, marks, filename, what="recipe")
    recipe._path = path.resolve() if path else None
    recipe._hash = hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()[:16]
    problems = check_recipe(recipe, marks, filename)
    if not problems and recipe.sweep:
        recipe._points, problems = expand_sweep(data, recipe, marks, filename, path)
    if problems:
        raise RecipeError(problems)
    return recipe


def sweep_grid(sweep: Sweep, seed: int) -> list[dict[str, Any]]:
    """Every combination (grid), or `samples` of them drawn without replacement (random)."""
    import itertools
    import random

    keys = list(sweep.parameters)
    grid = [dict(zip(keys, values, strict=True)) for values in itertools.product(*sweep.parameters.values())]
    if sweep.mode == "random":
        grid = random.Random(seed).sample(grid, min(sweep.samples or len(grid), len(grid)))
    return grid


def point_label(point: dict[str, Any]) -> str:
    """'stages[prune].ratio' = 0.3 -> 'ratio=0.3' (the full path when last names repeat)."""
    lasts = [str(parse_field_path(k)[-1]) if parse_field_path(k) else k for k in point]
    names = lasts if len(set(lasts)) == len(lasts) else list(point)
    return ",".join(f"{n}={v}" for n, v in zip(names, point.values(), strict=True))


def expand_sweep(data: dict, recipe: Recipe, marks: Marks, filename: str, path) -> tuple[list, list[Problem]]:
    import copy
    import json

    problems: list[Problem] = []
    for key in recipe.sweep.parameters:
        parts = parse_field_path(key)
        if parts is None or parts[0] not in SWEEPABLE:
            msg = f"sweep parameter '{key}' must be a stage field path such as stages[prune].ratio"
            problems.append(locate(("sweep", "parameters", key), marks, filename, msg))
    if problems:
        return [], problems
    base = {k: v for k, v in data.items() if k != "sweep"}
    points = []
    for point in sweep_grid(recipe.sweep, recipe.seed):
        label, point_data = point_label(point), copy.deepcopy(base)
        errs = [p for k, v in point.items() for p in apply_override(point_data, f"{k}={json.dumps(v)}")]
        try:
            if errs:
                raise RecipeError(errs)
            point_recipe = recipe_from_data(point_data, marks, filename, path)
        except RecipeError as exc:
            problems += [Problem(p.path, f"sweep point {label}: {p.message}", p.file, p.line, p.column)
                         for p in exc.problems]  # fmt: skip
            continue
        points.append((label, point_recipe))
    return points, problems


# ----------------------------------------------------------------------------- overrides

_SEGMENT = re.compile(r"^([A-Za-z_][\w-]*)((?:\[[^\[\]]+\])*)$")


def parse_field_path(text: str) -> list[str | int] | None:
    """'stages[2].calibration.samples' -> ['stages', 2, 'calibration', 'samples'].

    A stage may also be named: 'stages[train].epochs'. Returns None for malformed paths.
    """
    parts: list[str | int] = []
    for segment in text.split("."):
        match = _SEGMENT.match(segment)
        if match is None:
            return None
        parts.append(match.group(1))
        for index in re.findall(r"\[([^\[\]]+)\]", match.group(2)):
            parts.append(int(index) if index.isdigit() else index)
    return parts


def apply_override(data: dict, item: str) -> list[Problem]:
    """Apply one `path=value` override in place; the value is parsed as YAML."""
    where = f"--set {item}"
    field, sep, raw = item.partition("=")
    parts = parse_field_path(field.strip()) if sep else None
    if parts is None:
        return [Problem(field, "expected PATH=VALUE, e.g. stages[train].epochs=3", where)]
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return [Problem(field, f"value {raw!r} is not valid YAML", where)]
    node: Any = data
    for part in parts[:-1]:
        node, problem = _descend(node, part, field, where)
        if problem:
            return [problem]
    last: Any = parts[-1]
    if isinstance(node, list):
        last, problem = _stage_index(node, last, field, where)
        if problem:
            return [problem]
    node[last] = value
    return []


def _descend(node: Any, part: Any, field: str, where: str) -> tuple[Any, Problem | None]:
    if isinstance(node, list):
        index, problem = _stage_index(node, part, field, where)
        return (node[index] if problem is None else None), problem
    if not isinstance(node, dict):
        return None, Problem(field, f"cannot set '{part}' inside a scalar value", where)
    return node.setdefault(part, {}), None


def _stage_index(items: list, part: Any, field: str, where: str) -> tuple[Any, Problem | None]:
    """Find a list item by position or, for stages, by `name` (or `type` when unnamed)."""
    if isinstance(part, int):
        if 0 <= part < len(items):
            return part, None
        return None, Problem(field, f"index {part} is out of range (0..{len(items) - 1})", where)
    names = [(it.get("name") or it.get("type")) if isinstance(it, dict) else None for it in items]
    if part in names:
        return names.index(part), None
    known = [n for n in names if n]
    return None, Problem(field, f"no stage named '{part}'{suggest(part, known)}", where)


# ----------------------------------------------------------------------------- cross-field checks


def check_recipe(recipe: Recipe, marks: Marks, filename: str) -> list[Problem]:
    """Checks that no single field can make: stage order, references, files, model names."""
    problems = _check_stages(recipe, marks, filename)
    for name, spec in recipe.sources().items():
        section = ("models", name) if name in recipe.models else (name,)
        problems += _check_model(recipe, spec, section, marks, filename)
        if name in recipe.models and (name in ("model", "teacher") or not re.fullmatch(r"[A-Za-z0-9._-]+", name)):
            problems.append(locate(section, marks, filename, f"model name '{name}' is reserved or not a plain name"))
    problems += _check_data(recipe, marks, filename)
    problems += _check_targets(recipe, marks, filename)
    return problems


def _check_stages(recipe: Recipe, marks: Marks, filename: str) -> list[Problem]:
    problems: list[Problem] = []
    produced = dict.fromkeys(recipe.sources(), TORCH)  # artifact name -> kind
    lineage: dict[str, list[str]] = {name: [] for name in produced}
    variants: dict[str, str] = {}
    previous = "model"
    for i, stage in enumerate(recipe.stages):
        here = ("stages", i)
        if stage.name in produced:
            problems.append(locate((*here, "name"), marks, filename, f"stage name '{stage.name}' is used twice"))
        source = stage.input or previous
        if source not in produced:
            msg = f"input '{source}' is not an earlier stage{suggest(source, list(produced))}; choose one of: {', '.join(produced)}"
            problems.append(locate((*here, "input"), marks, filename, msg))
        kind = produced.get(source, stage.consumes)
        if kind != stage.consumes:
            problems.append(locate((*here, "type"), marks, filename, _order_message(stage, kind, source)))
        chain = [*lineage.get(source, []), stage.name]
        distill = _distill_of(stage)
        if distill:
            where = (*here, "qat", "distill", "teacher") if stage.type == "quantize" else (*here, "distill", "teacher")
            problems += _check_teacher(recipe, distill, chain, produced, where, marks, filename)
        if stage.variant and stage.variant in variants:
            msg = f"variant name '{stage.variant}' is also produced by stage '{variants[stage.variant]}'; set a distinct 'variant'"
            problems.append(locate((*here, "variant"), marks, filename, msg))
        if stage.produces in DEPLOYABLE and stage.variant:
            variants[stage.variant] = stage.name
        produced[stage.name], lineage[stage.name] = stage.produces, chain
        previous = stage.name
    if not variants:
        problems.append(
            locate(("stages",), marks, filename, "no stage produces a deployable model; add an 'export' stage")
        )
    return problems


def _distill_of(stage: Any) -> Distill | None:
    if isinstance(stage, FinetuneStage):
        return stage.distill
    if isinstance(stage, QuantizeStage) and stage.qat:
        return stage.qat.distill
    return None


def _check_teacher(recipe, distill: Distill, chain, produced, path, marks, filename) -> list[Problem]:
    """Resolve the default teacher (the model before the first prune) and check a named one."""
    if distill.teacher is None:
        types = {s.name: s.type for s in recipe.stages}
        first_prune = next((i for i, name in enumerate(chain) if types.get(name) == "prune"), None)
        if first_prune is None:
            msg = "no default teacher: nothing was pruned before this stage; set distill.teacher to a stage name"
            return [locate(path[:-1], marks, filename, msg)]
        distill.teacher = chain[first_prune - 1] if first_prune > 0 else "model"
        return []
    if produced.get(distill.teacher) != TORCH:
        known = [n for n, k in produced.items() if k == TORCH]
        msg = f"teacher '{distill.teacher}' is not an earlier PyTorch stage{suggest(distill.teacher, known)}; choose one of: {', '.join(known)}"
        if distill.teacher == "teacher" and not recipe.teacher:
            msg = "teacher 'teacher' needs a top-level 'teacher:' model section"
        return [locate(path, marks, filename, msg)]
    return []


def _order_message(stage: Any, kind: str, source: str) -> str:
    need = {TORCH: "a PyTorch model", ONNX: "an exported ONNX model", OPENVINO: "an OpenVINO IR model"}
    fix = {ONNX: "place it after an 'export' stage", TORCH: "place it before the 'export' stage",
           OPENVINO: "give it an OpenVINO model"}  # fmt: skip
    return (
        f"stage '{stage.name}' ({stage.type}) needs {need[stage.consumes]} but '{source}' gives "
        f"{need[kind]}; {fix[stage.consumes]}"
    )


def _check_model(recipe: Recipe, spec: ModelSpec, section: tuple, marks: Marks, filename: str) -> list[Problem]:
    problems: list[Problem] = []
    if spec.arch is not None:
        problems += _check_arch(spec, section, marks, filename)
    if spec.python is not None:
        file, sep, func = spec.python.rpartition(":")
        if not sep or not file.endswith(".py") or not func.isidentifier():
            msg = f"expected 'path/to/file.py:function', got {spec.python!r}"
            problems.append(locate((*section, "python"), marks, filename, msg))
        elif not recipe.resolve_path(file).is_file():
            problems.append(
                locate((*section, "python"), marks, filename, f"file not found: {recipe.resolve_path(file)}")
            )
    if spec.checkpoint and not recipe.resolve_path(spec.checkpoint).is_file():
        msg = f"checkpoint not found: {recipe.resolve_path(spec.checkpoint)}"
        problems.append(locate((*section, "checkpoint"), marks, filename, msg))
    return problems


def _check_arch(spec: ModelSpec, section: tuple, marks: Marks, filename: str) -> list[Problem]:
    arch = spec.arch or ""
    if arch.startswith("hf:"):
        if importlib.util.find_spec("transformers") is None:
            return [
                locate(
                    (*section, "arch"),
                    marks,
                    filename,
                    "hf: models need transformers; pip install 'compress-edge[text]'",
                )
            ]
        return []
    if arch.startswith("timm:"):
        if importlib.util.find_spec("timm") is None:
            return [locate((*section, "arch"), marks, filename, "timm is not installed; pip install timm")]
        return []
    if arch.startswith("torchvision:"):
        if importlib.util.find_spec("torchvision") is None:
            return [
                locate((*section, "arch"), marks, filename, "torchvision is not installed; pip install torchvision")
            ]
        return []
    if arch not in registry.MODELS:
        known = list(registry.MODELS)
        msg = f"unknown model '{arch}'{suggest(arch, known)}; built-in: {', '.join(known)}, or torchvision:<name>"
        return [locate((*section, "arch"), marks, filename, msg)]
    accepted = builder_options(arch)
    return [
        locate(
            (*section, "options", key),
            marks,
            filename,
            f"'{arch}' has no option '{key}'{suggest(key, accepted)}; options: {', '.join(accepted)}",
        )
        for key in spec.options
        if key not in accepted
    ]


def builder_options(arch: str) -> list[str]:
    """Options a zoo builder accepts; input channels, classes and image size come from the data."""
    params = inspect.signature(registry.resolve(registry.MODELS, arch)).parameters
    return [p for p in params if p not in ("in_channels", "num_classes", "image_size")]


def _check_data(recipe: Recipe, marks: Marks, filename: str) -> list[Problem]:
    data = recipe.data
    if data.path is None:
        return []
    path = recipe.resolve_path(data.path)
    exists = path.is_dir() if data.source == "imagefolder" else path.is_file()
    expected = {"npz": "an .npz file", "text": "a text file"}.get(data.source, "a folder of class folders")
    if exists:
        return []
    return [locate(("data", "path"), marks, filename, f"{expected} was expected at {path}, but it does not exist")]


def _check_targets(recipe: Recipe, marks: Marks, filename: str) -> list[Problem]:
    problems, names = [], set()
    for i, ref in enumerate(recipe.targets):
        name = ref.name if isinstance(ref, TargetSpec) else ref
        if not isinstance(ref, TargetSpec) and find_target(ref, target_search_dirs(recipe)) is None:
            where = locate(("targets", i), marks, filename, "")
            problems.append(missing_target_problem(ref, target_search_dirs(recipe), where))
        if name in names:
            problems.append(locate(("targets", i), marks, filename, f"target '{name}' is listed twice"))
        names.add(name)
    return problems


def target_search_dirs(recipe: Recipe) -> list[Path]:
    return [recipe.base_dir, recipe.base_dir.parent / "targets", Path.cwd() / "targets"]


def recipe_json_schema() -> dict:
    return Recipe.model_json_schema()
