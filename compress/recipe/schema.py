"""The recipe's schema: models, data, stages, targets, report, gates and sweep.

The stage union and the data source, task and runtime names come from compress.registry, so a
plug-in's stage is a recipe `type:` like any other and appears in `compress schema`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, PrivateAttr, Tag, model_validator

from compress import registry
from compress.config import Strict
from compress.names import NAME_PATTERN
from compress.report.gates import Gates
from compress.targets import TargetSpec


class ModelSpec(Strict):
    """A model from the built-in zoo, torchvision, or the user's own Python file."""

    arch: str | None = Field(
        None,
        description="a model source's name: zoo name (resnet, mobilenetv2, vit) or "
        "prefix:name (torchvision:, timm:, hf:, or a plug-in's prefix)",
    )
    python: str | None = Field(None, description="path/to/file.py:function returning an nn.Module; runs that code")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the builder")
    checkpoint: str | None = Field(None, description="state_dict file loaded with weights_only=True")
    weights: str | None = Field(
        None,
        description="torchvision:/timm: pretrained weights: a file (state_dict or .safetensors) or a published "
        "name (torchvision IMAGENET1K_V1 / DEFAULT, timm tag) read from the local cache",
    )
    allow_download: bool = Field(False, description="let published weights: download when not in the local cache")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.arch is None) == (self.python is None):
            raise ValueError("give exactly one of 'arch' or 'python'")
        return self


class Normalize(Strict):
    """Per-channel statistics: inputs are (pixel / 255 - mean) / std."""

    mean: list[float] = Field(min_length=1, max_length=3, description="one value, or one per channel")
    std: list[Annotated[float, Field(gt=0)]] = Field(
        min_length=1, max_length=3, description="one value, or one per channel"
    )


NORMALIZE_PRESETS = ("default", "imagenet", "clip", "none")
CORPORA = (
    "stdlib-docs",
    "wordnet-definitions",
    "wordnet-examples",
    "wordnet-test-examples",
)  # compress.data.corpus.corpus


class HeldOut(Strict):
    """A further test set from another source, scored beside the test split and never trained on."""

    name: str = Field(pattern=NAME_PATTERN, description="how the report names it")
    text: str = Field(description=f"a built-in corpus ({', '.join(CORPORA)}) or a text file in data.path's format")
    samples: int = Field(1000, ge=20, le=100_000, description="at most this many (a fixed subset, in hash order)")


class DataSpec(Strict):
    """Where examples come from and how they are split; the task fixes inputs, outputs and metric."""

    source: Literal[tuple(registry.names("datasets"))] = "digits"  # type: ignore[valid-type]
    path: str | None = Field(None, description="folder (imagefolder, coco), .npz file (npz) or text file (text)")
    task: Literal[tuple(registry.names("tasks"))] = "classification"  # type: ignore[valid-type]
    max_length: int = Field(128, ge=8, le=4096, description="text: tokens per example (padded)")
    tokenizer: str | None = Field(None, description="text: hf folder or package; default: the model's")
    train_packages: list[str] = Field(
        default_factory=list, description="embedding: installed packages whose docstrings add training sentences"
    )
    train_text: list[str] = Field(
        default_factory=list,
        description=f"embedding: more training-only sentences: built-in corpora ({', '.join(CORPORA)}) or text files",
    )
    train_sentences: int | None = Field(
        None, ge=1, description="embedding: at most this many from train_packages and train_text together"
    )
    held_out: list[HeldOut] = Field(
        default_factory=list, description="text: further test sets from other sources, each scored on every target"
    )
    image_size: int = Field(32, ge=4, le=1024, description="model input side; with resize, the centre crop's")
    resize: int | None = Field(
        None, ge=4, le=4096, description="images: shorter side resized to this, then centre-cropped to image_size"
    )
    normalize: Literal[NORMALIZE_PRESETS] | Normalize = Field(  # type: ignore[valid-type]
        "default", description="images: default (mean 0.5, std 0.5), imagenet, clip, none, or {mean: [...], std: [...]}"
    )
    channels: Literal[1, 3] = 1
    samples: int | None = Field(
        None, ge=1, le=1_000_000, description="procedural sources (shapes): examples generated; default 1000"
    )
    workers: int = Field(
        0,
        ge=0,
        le=64,
        description="training: processes reading the next batches' rows "
        "from a split on disk while the model trains (0: read in the training process); "
        "results do not depend on it",
    )
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5)

    @model_validator(mode="after")
    def _fits_source(self) -> DataSpec:
        """What the data source declares: whether it needs a path, which tasks it serves."""
        from compress.data import data_source

        source = data_source(self.source)
        if source.path_required and not self.path:
            raise ValueError(f"data source '{self.source}' needs 'path'")
        if self.task not in source.tasks:
            serving = [n for n in registry.names("datasets") if self.task in data_source(n).tasks]
            raise ValueError(f"task '{self.task}' needs source {' or '.join(serving)}")
        if self.samples is not None and not source.procedural:
            raise ValueError(f"samples applies to procedural sources only (such as shapes), not '{self.source}'")
        problems = source.check(self)
        if problems:
            raise ValueError("; ".join(problems))
        problems = _preprocessing_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        if (self.train_packages or self.train_text) and self.task != "embedding":
            field = "train_packages" if self.train_packages else "train_text"
            raise ValueError(f"{field} adds unlabelled sentences, so it needs task 'embedding'")
        if self.held_out and not source.text:
            raise ValueError(f"held_out takes text sets; data source '{self.source}' is not text")
        names = [h.name for h in self.held_out]
        if len(set(names)) < len(names):
            raise ValueError(f"held_out: each set needs its own name (given {', '.join(names)})")
        return self


def _preprocessing_problems(spec: DataSpec) -> list[str]:
    problems = []
    if spec.resize is not None and spec.resize < spec.image_size:
        problems.append(f"resize ({spec.resize}) must be at least image_size ({spec.image_size}), the crop")
    if spec.resize is not None and spec.task == "detection":
        problems.append("resize crops images, which would cut boxes; detection stretches images to image_size")
    if isinstance(spec.normalize, Normalize):
        for name in ("mean", "std"):
            if len(getattr(spec.normalize, name)) not in (1, spec.channels):
                count = "one value" if spec.channels == 1 else "one or three values"
                problems.append(f"normalize.{name} needs {count} for {spec.channels} channel(s)")
    return problems


def stage_union() -> Any:
    """Every registered stage's configuration, told apart by `type:`."""
    classes = tuple(registry.components("stages").values())
    return Annotated[Union[classes], Field(discriminator="type")]  # type: ignore[valid-type]


Stage = stage_union()


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


class SearchRange(Strict):
    """A numeric range to search: integers when low and high are both integers (unless step says
    otherwise), else floats; `log` samples on a log scale."""

    low: float
    high: float
    step: float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> SearchRange:
        if self.high <= self.low:
            raise ValueError("high must be above low")
        return self

    @property
    def integer(self) -> bool:
        whole = float(self.low).is_integer() and float(self.high).is_integer()
        return whole and (self.step is None or float(self.step).is_integer())


class Search(Strict):
    """Search stage settings for the fastest (or smallest) variant on one target within accuracy,
    size and latency limits: each trial runs the chain with sampled settings (sharing cached stage
    results), and its candidate is measured on the target, beside the baseline, on the validation
    split. Optuna proposes the settings (`pip install 'compress-edge[search]'`)."""

    space: dict[str, SearchRange | list[Any]] = Field(
        min_length=1, description="stages[NAME].field: {low, high[, step, log]} or [choices]"
    )
    target: str | None = Field(None, description="the target whose measurements decide [default: the first]")
    batch_size: int = Field(1, ge=1, le=65_536, description="the batch size whose p50 is minimized")
    candidate: str | None = Field(None, description="the variant each trial offers [default: the chain's last]")
    minimize: Literal["p50", "size"] = Field("p50", description="p50 on the target, or file size")
    max_accuracy_drop: float | None = Field(None, ge=0, le=100, description="points below the baseline, on validation")
    max_size_mb: float | None = Field(None, gt=0)
    max_latency_ms: float | None = Field(None, gt=0, description="p50 at batch_size on the target")
    trials: int = Field(10, ge=1, le=10_000, description="trials at most, the recipe's own settings first")
    max_minutes: float | None = Field(None, gt=0, description="no new trial starts after this long")
    sampler: Literal["tpe", "random"] = Field("tpe", description="Optuna's TPE (constrained) or random sampling")


class ExecutorSpec(Strict):
    """Where stage results are made: here one after another (`local`), in a pool of local
    processes, or on a Ray cluster. Measurement always runs here, one target at a time."""

    type: Literal["local", "processes", "ray"] = "local"
    jobs: int | None = Field(None, ge=1, le=4096, description="stage tasks at a time [default: this machine's cores]")
    address: str | None = Field(None, description="ray: `auto`, `ray://host:port` [default: a local Ray for the run]")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value):
        return {"type": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _address_is_rays(self) -> ExecutorSpec:
        if self.address is not None and self.type != "ray":
            raise ValueError("address applies to executor ray")
        return self


class Recipe(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    seed: int = Field(0, ge=0, le=2**32 - 1, description="0 to 2**32-1, what every random generator used accepts")
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
    search: Search | None = Field(None, description="search stage settings against a target (below)")
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec, description="where stages run (--executor, --jobs)")

    _path: Path | None = PrivateAttr(None)
    _hash: str = PrivateAttr("")
    _points: list = PrivateAttr(default_factory=list)  # [(label, Recipe)] when sweeping
    _source: tuple | None = PrivateAttr(None)  # (data, marks, filename, path) to build a search trial's recipe

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
