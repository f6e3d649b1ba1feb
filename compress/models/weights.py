"""Pretrained weights for `torchvision:` and `timm:` models, offline first.

`weights:` is a file (a state_dict saved with torch.save, or .safetensors; relative to the recipe)
or the name of published weights: a torchvision weights enum member (`IMAGENET1K_V1`,
`ResNet50_Weights.IMAGENET1K_V2`, `DEFAULT`) read from $TORCH_HOME/hub/checkpoints, or a timm
pretrained tag (`augreg_in21k_ft_in1k`, `DEFAULT`) read from the Hugging Face hub cache. Nothing is
downloaded unless the recipe sets `allow_download: true`. When the data's class count differs
from the pretrained head, everything but the head is loaded and the head keeps its fresh init.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import UsageError, first_line

if TYPE_CHECKING:
    from torch import nn


class MissingWeights(UsageError):
    """Published weights that are not in the local cache (the recipe may allow downloading them)."""


FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
FIX = "put the file there, set `allow_download: true` in the model section, or give a weights file"


def is_file_ref(weights: str) -> bool:
    """A weights file rather than a published name: it has a folder or a weights file suffix."""
    return "/" in weights or "\\" in weights or weights.lower().endswith(FILE_SUFFIXES)


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (the library reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def torch_checkpoints_dir() -> Path:
    """$TORCH_HOME/hub/checkpoints, where torchvision keeps the weights it downloads."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


# ---------------------------------------------------------------- published weights: torchvision


def torchvision_weights(name: str, tag: str) -> Any:
    """The torchvision weights enum member `tag` names for model `name`; a UsageError lists the known ones."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        raise UsageError(
            f"torchvision has no model '{name}' with published weights", hint="give a weights file"
        ) from None
    cls, _, member = tag.rpartition(".")
    if cls and cls != enum.__name__:
        raise UsageError(f"weights '{tag}' are not {enum.__name__}, the weights of torchvision:{name}",
                         hint=f"one of: {', '.join(_enum_names(enum))}")  # fmt: skip
    if member == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[member]
    except KeyError:
        raise UsageError(
            f"torchvision:{name} has no weights '{tag}'", hint=f"one of: {', '.join(_enum_names(enum))}"
        ) from None


def _enum_names(enum) -> list[str]:
    return ["DEFAULT", *(m.name for m in enum)]


def torchvision_weights_file(name: str, tag: str) -> Path:
    """Where torchvision keeps (or would download) the file of weights `tag`."""
    return torch_checkpoints_dir() / os.path.basename(torchvision_weights(name, tag).url)


# ---------------------------------------------------------------- published weights: timm


def timm_repo(name: str, tag: str) -> tuple[str, str]:
    """(Hugging Face repository id, full timm name) of timm model `name` with pretrained tag `tag`."""
    import timm

    full = name if tag == "DEFAULT" else f"{name}.{tag}"
    try:
        cfg = timm.models.get_pretrained_cfg(full)
    except RuntimeError:  # a known architecture, an unknown tag
        cfg = None
    if cfg is None:
        tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{name}.*")]
        hint = f"tags of {name}: {', '.join(tags)}" if tags else f"timm has no pretrained weights for '{name}'"
        raise UsageError(f"timm:{name} has no pretrained tag '{tag}'", hint=hint)
    repo = cfg.hf_hub_id or f"timm/{name}.{cfg.tag}"
    return repo, f"{name}.{cfg.tag}" if cfg.tag else name


def hf_cached_file(repo: str, files: tuple[str, ...]) -> Path | None:
    """The first of `files` present in the hub cache's snapshot of `repo` (its refs/main)."""
    folder = hf_cache_dir() / f"models--{repo.replace('/', '--')}"
    ref = folder / "refs" / "main"
    snapshots = [folder / "snapshots" / ref.read_text().strip()] if ref.is_file() else []
    snapshots += sorted((folder / "snapshots").glob("*")) if (folder / "snapshots").is_dir() else []
    for snapshot in snapshots:
        for file in files:
            if (snapshot / file).is_file():
                return snapshot / file
    return None


def timm_cache_path(repo: str) -> Path:
    """How the cached file looks in the error: the folder the hub cache keeps `repo` in."""
    return hf_cache_dir() / f"models--{repo.replace('/', '--')}" / "snapshots" / "<revision>" / "model.safetensors"


TIMM_FILES = ("model.safetensors", "pytorch_model.bin")


# ---------------------------------------------------------------- finding and loading


def weights_path(source: str, name: str, weights: str, base_dir: Path, allow_download: bool) -> Path:
    """The local file `weights` means for model `name` of `source` (torchvision or timm), downloading
    it only when allowed. A missing file is one UsageError naming the path looked for."""
    if is_file_ref(weights):
        path = (base_dir / Path(weights).expanduser()).resolve()
        if not path.is_file():
            raise UsageError(
                f"weights file not found: {path}", hint="give a state_dict saved with torch.save, or .safetensors"
            )
        return path
    if source == "torchvision":
        path = torchvision_weights_file(name, weights)
        if not path.is_file():
            if not allow_download:
                raise MissingWeights(
                    f"torchvision:{name} weights {weights} are not in the local cache: {path}", hint=FIX
                )
            import torch

            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(torchvision_weights(name, weights).url, str(path), progress=False)
        return path
    if source == "timm":
        repo, _ = timm_repo(name, weights)
        found = hf_cached_file(repo, TIMM_FILES)
        if found is None:
            if not allow_download:
                raise MissingWeights(f"timm:{name} weights '{weights}' are not in the Hugging Face cache: "
                                 f"{timm_cache_path(repo)}", hint=FIX)  # fmt: skip
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(repo, TIMM_FILES[0], cache_dir=hf_cache_dir()))
        return found
    raise UsageError(f"published weights '{weights}' apply to torchvision: and timm: models only",
                     hint="give a weights file, or use `checkpoint:`")  # fmt: skip


def read_state_dict(path: Path) -> Mapping:
    """A state_dict from a torch.save file (weights_only, never running pickled code) or .safetensors."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # several libraries, several exception types
        raise UsageError(f"cannot read weights {path}: {first_line(exc)}", hint="give a state_dict file") from None
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise UsageError(
            f"weights {path} hold a {type(state).__name__}, not a state_dict", hint="give a state_dict file"
        )
    return state


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """The class-dependent modules' names: a wrapper's own list (detectors' `head_modules`), timm's
    record of its classifier, else the model's last Linear layer."""
    from torch import nn

    if getattr(model, "head_modules", None):
        return tuple(model.head_modules)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if isinstance(cfg, Mapping) and isinstance(cfg.get("classifier"), str):
        return (cfg["classifier"],)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return (linears[-1],) if linears else ()


def _prefixed(state: dict, own: Mapping) -> dict:
    """Weights of a bare model loaded into a wrapper that holds it as `model` (torchvision detectors)."""
    if own and not any(k in own for k in state) and all(k.startswith("model.") for k in own):
        return {f"model.{k}": v for k, v in state.items()}
    return state


def _timm_filtered(state: dict, model: nn.Module) -> dict:
    """A timm model's own checkpoint conversion (e.g. ViT position embeddings resampled to the data's
    image size), as timm applies it when it loads pretrained weights."""
    import sys

    convert = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if getattr(model, "pretrained_cfg", None) is None or convert is None:
        return state
    try:
        return dict(convert(state, model))
    except Exception:  # a checkpoint it cannot convert is reported by the shape check that follows
        return state


def load_weights(model: nn.Module, path: Path, log: Callable[[str], None] = print) -> None:
    """Load `path` into `model`. Keys of the classification head whose shapes differ (another class
    count) are skipped, leaving the head freshly initialised; a 3-channel first convolution is summed
    for a 1-channel model. Any other difference is one UsageError."""
    from compress.models import state_dict_mismatch

    own = model.state_dict()
    state = _timm_filtered(_prefixed(dict(read_state_dict(path)), own), model)
    heads = head_prefixes(model)
    skipped = []
    for key, value in list(state.items()):
        mine = own.get(key)
        if mine is None or not hasattr(value, "shape") or tuple(mine.shape) == tuple(value.shape):
            continue
        if value.ndim == 4 and mine.shape[1] == 1 and value.shape[1] == 3 and mine.shape[0] == value.shape[0]:
            state[key] = value.sum(1, keepdim=True)  # RGB filters for grey input (as timm adapts them)
        elif any(key == h or key.startswith(h + ".") for h in heads):
            skipped.append((key, value.shape[0], mine.shape[0]))
            state[key] = mine
    problem = state_dict_mismatch(own, state)
    if problem:
        raise UsageError(f"weights {path} do not fit the model: {problem}",
                         hint="give weights of the same architecture and options")  # fmt: skip
    model.load_state_dict(state)
    if skipped:
        key, before, after = skipped[0]
        head = next(h for h in heads if key == h or key.startswith(h + "."))
        log(
            f"weights {path.name}: loaded all but the head '{head}', re-initialised for {after} classes "
            f"(the weights have {before})"
        )
