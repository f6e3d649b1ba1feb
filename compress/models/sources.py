"""Model sources: where `arch:` names come from. A source is registered in compress.registry by the
prefix users write (`torchvision:resnet18`), or by a plug-in's `compress.models` entry point; bare
names (`resnet`) belong to the source that lists them (the built-in zoo).
"""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from torch import nn


class ModelSource:
    """What a model source declares about itself, and how it builds a model."""

    package: ClassVar[str | None] = None  # import name that must be installed
    install: ClassVar[str] = ""  # what to pip install when it is not

    def names(self) -> list[str]:
        """Model names this source answers to without a prefix (the zoo's)."""
        return []

    def check(self, name: str, options: dict[str, Any], base_dir: Path | None = None) -> list[tuple[tuple, str]]:
        """(field path inside the model section, message) for each problem with a model name or its
        options, found before anything runs (paths are relative to `base_dir`, the recipe's folder)."""
        if self.package and importlib.util.find_spec(self.package) is None:
            return [(("arch",), f"{self.package} is not installed; pip install {self.install or self.package}")]
        return []

    def build(self, name: str, options: dict[str, Any], shape: InputShape) -> nn.Module:
        raise NotImplementedError

    def inputs(self, name: str, base_dir: Path) -> list[Path]:
        """Files building the model reads besides the recipe (weights folders); the cache key hashes them."""
        return []

    def is_detector(self, name: str) -> bool | None:
        """Whether `name` builds a detector (for `task: detection`); None when only building tells."""
        return None


class InputShape:
    """What the data fixes about a model: input channels, classes, image size and normalisation."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, base_dir: Path,
                 mean: list[float] | None = None, std: list[float] | None = None) -> None:  # fmt: skip
        self.in_channels, self.num_classes, self.image_size, self.base_dir = (
            in_channels,
            num_classes,
            image_size,
            base_dir,
        )
        # the data's normalisation, (pixel - mean) / std, per channel (compress.data.preprocess)
        self.mean, self.std = mean or [0.5] * in_channels, std or [0.5] * in_channels


class Zoo(ModelSource):
    """The built-in models (compress.models.zoo), sized for small inputs."""

    def names(self) -> list[str]:
        from compress.models import zoo

        return list(zoo.BUILDERS)

    def check(self, name: str, options: dict[str, Any], base_dir: Path | None = None) -> list[tuple[tuple, str]]:
        from compress.yamlconfig import suggest

        if name not in self.names():
            return [(("arch",), f"unknown model '{name}'{suggest(name, self.names())}; built-in: "
                     f"{', '.join(self.names())}, or torchvision:<name>")]  # fmt: skip
        accepted = builder_options(name)
        return [(("options", k), f"'{name}' has no option '{k}'{suggest(k, accepted)}; options: {', '.join(accepted)}")
                for k in options if k not in accepted]  # fmt: skip

    def is_detector(self, name: str) -> bool | None:
        from compress.models import zoo

        return name in zoo.DETECTORS

    def build(self, name: str, options: dict[str, Any], shape: InputShape) -> nn.Module:
        from compress.models import zoo

        return zoo.BUILDERS[name](in_channels=shape.in_channels, num_classes=shape.num_classes,
                                  image_size=shape.image_size, **options)  # fmt: skip


def builder_options(name: str) -> list[str]:
    """Options a zoo builder accepts; input channels, classes and image size come from the data."""
    from compress.models import zoo

    params = inspect.signature(zoo.BUILDERS[name]).parameters
    return [p for p in params if p not in ("in_channels", "num_classes", "image_size")]


DETECTOR_FAMILIES = ("fasterrcnn_", "retinanet_", "fcos_")  # torchvision detectors compress wraps


class Torchvision(ModelSource):
    package, install = "torchvision", "torchvision"

    def is_detector(self, name: str) -> bool | None:
        return name.startswith(DETECTOR_FAMILIES)

    def check(self, name: str, options: dict[str, Any], base_dir: Path | None = None) -> list[tuple[tuple, str]]:
        if name.startswith(("maskrcnn_", "keypointrcnn_", "ssd")):
            return [(("arch",), f"torchvision:{name} is not supported; detectors: "
                     f"{', '.join(f + '*' for f in DETECTOR_FAMILIES)}")]  # fmt: skip
        return super().check(name, options, base_dir)

    def build(self, name: str, options: dict[str, Any], shape: InputShape) -> nn.Module:
        import torchvision
        from torch import nn

        from compress.detection.frcnn import is_torchvision_detector, torchvision_detector
        from compress.errors import StageError

        if is_torchvision_detector(name):
            return torchvision_detector(name, shape.num_classes, shape.image_size, options, (shape.mean, shape.std))
        try:
            model = torchvision.models.get_model(name, weights=None, num_classes=shape.num_classes, **options)
        except ValueError as exc:
            known = ", ".join(torchvision.models.list_models()[:12])
            raise StageError(f"torchvision has no model '{name}' ({exc})", hint=f"for example: {known}, ...") from None
        if shape.in_channels != 3:
            _adapt_first_conv(model, shape.in_channels, nn)
        return model


def _adapt_first_conv(model, in_channels: int, nn) -> None:
    """torchvision models expect RGB; swap the first convolution for one with `in_channels`."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            new = nn.Conv2d(in_channels, module.out_channels, module.kernel_size, module.stride,
                            module.padding, module.dilation, module.groups, module.bias is not None)  # fmt: skip
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            setattr(parent, name.rpartition(".")[2], new)
            return


class Timm(ModelSource):
    package, install = "timm", "timm"

    def build(self, name: str, options: dict[str, Any], shape: InputShape) -> nn.Module:
        import timm

        size = {"img_size": shape.image_size} if "vit" in name or "deit" in name else {}
        return timm.create_model(name, pretrained=False, num_classes=shape.num_classes, in_chans=shape.in_channels,
                                 **size, **options)  # fmt: skip


class HuggingFace(ModelSource):
    """Hugging Face encoders from a local folder or an installed model package (compress.models.hf)."""

    package, install = "transformers", "'compress-edge[text]'"

    def check(self, name: str, options: dict[str, Any], base_dir: Path | None = None) -> list[tuple[tuple, str]]:
        from compress.errors import StageError

        try:
            resolve_hf_path(name, base_dir or Path.cwd())
        except StageError as exc:
            return [(("arch",), exc.message)]
        return super().check(name, options, base_dir)

    def inputs(self, name: str, base_dir: Path) -> list[Path]:
        from compress.errors import StageError

        try:
            return [resolve_hf_path(name, base_dir)]
        except StageError:
            return []  # building reports the missing folder

    def build(self, name: str, options: dict[str, Any], shape: InputShape) -> nn.Module:
        from compress.models.hf import load_hf

        return load_hf(name, shape.base_dir, shape.num_classes, **options)


def resolve_hf_path(ref: str, base_dir: Path) -> Path:
    """A model folder: a path (relative to the recipe) or an installed package that ships one in its
    `model/` folder. The package is located without importing it: naming a module never runs its code."""
    path = (base_dir / ref).expanduser()
    if (path / "config.json").is_file():
        return path.resolve()
    module_name = ref.replace("-", "_")
    spec = importlib.util.find_spec(module_name) if module_name.isidentifier() else None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if (Path(location) / "model" / "config.json").is_file():
                return Path(location) / "model"
    from compress.errors import StageError

    if REPO_ID.fullmatch(ref):
        return hf_cached_repo(ref, path)
    raise StageError(f"no Hugging Face model folder at {path} and no installed model package '{ref}'",
                     hint="point hf: at a folder with config.json and tokenizer files, e.g. one saved by "
                     "save_pretrained(), or at an installed package that ships one in <package>/model/")  # fmt: skip


REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # org/name, as the Hugging Face hub spells it


def hf_cached_repo(repo: str, folder_tried: Path) -> Path:
    """The cached snapshot of hub repository `repo` (refs/main, else any snapshot with config.json),
    read offline as HF_HUB_OFFLINE / local_files_only would; a StageError names the folder looked in."""
    from compress.errors import StageError
    from compress.models.weights import hf_cache_dir, hf_cached_file

    found = hf_cached_file(repo, ("config.json",))
    if found is not None:
        return found.parent
    folder = hf_cache_dir() / f"models--{repo.replace('/', '--')}"
    raise StageError(f"Hugging Face model {repo} is not in the local cache: no {folder}/snapshots/<revision>/"
                     f"config.json (and no model folder at {folder_tried})",
                     hint=f"download it once (huggingface-cli download {repo}), set HF_HUB_CACHE or HF_HOME to "
                     "the cache that holds it, or point hf: at a folder")  # fmt: skip
