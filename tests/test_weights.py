"""Pretrained weights and Hugging Face repository ids, from files and local caches only: every test
builds its own weights file or cache folder and none touches the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from compress.errors import ExitCode, StageError, UsageError
from compress.models import build_model
from compress.recipe.schema import ModelSpec
from tests.conftest import cli

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture
def caches(tmp_path, monkeypatch) -> Path:
    """Empty $TORCH_HOME and Hugging Face caches under tmp_path."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    return tmp_path


def hub_snapshot(cache: Path, repo: str) -> Path:
    """A snapshot folder in the hub cache layout: models--org--name/snapshots/<hash>, refs/main."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0123456789abcdef")
    return snapshot


def same(model: torch.nn.Module, state: dict, skip: str = "@") -> bool:
    own = model.state_dict()
    return all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith(skip))


def build(tmp_path: Path, classes: int = 10, channels: int = 3, **spec) -> torch.nn.Module:
    return build_model(ModelSpec(**spec), tmp_path, channels, classes, 32, log=lambda _: None)


def test_torchvision_weights_file_loads_exactly(tmp_path):
    import torchvision

    torch.manual_seed(1)
    state = torchvision.models.resnet18(num_classes=10).state_dict()
    torch.save(state, tmp_path / "r18.pt")
    model = build(tmp_path, arch="torchvision:resnet18", weights="r18.pt")
    assert same(model, state)


def test_other_class_count_reinitialises_only_the_head(tmp_path):
    import torchvision

    torch.manual_seed(1)
    state = torchvision.models.resnet18(num_classes=1000).state_dict()
    torch.save(state, tmp_path / "r18.pth")
    logged = []
    model = build_model(ModelSpec(arch="torchvision:resnet18", weights="r18.pth"), tmp_path, 3, 5, 32, logged.append)
    assert same(model, state, skip="fc.") and model.fc.weight.shape == (5, 512)
    assert "head 'fc'" in logged[0] and "5 classes" in logged[0] and "1000" in logged[0]


def test_torchvision_named_weights_come_from_torch_home(caches):
    import torchvision

    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    checkpoints = caches / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(2)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, checkpoints / os.path.basename(weights.url))
    for name in ("IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1", "DEFAULT"):
        model = build(caches, classes=1000, arch="torchvision:resnet18", weights=name)
        assert same(model, state), name


def test_timm_safetensors_file_and_cached_tag(caches):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    state = timm.create_model("resnet10t", num_classes=1000).state_dict()
    save_file(state, str(caches / "r10t.safetensors"))
    model = build(caches, classes=7, arch="timm:resnet10t", weights="r10t.safetensors")
    assert same(model, state, skip="fc.") and model.fc.out_features == 7
    save_file(state, str(hub_snapshot(caches / "hf", "timm/resnet10t.c3_in1k") / "model.safetensors"))
    assert same(build(caches, classes=1000, arch="timm:resnet10t", weights="c3_in1k"), state)


def test_timm_vit_weights_are_resampled_to_the_data_image_size(tmp_path):
    import timm

    torch.manual_seed(7)
    state = timm.create_model("vit_tiny_patch16_224", num_classes=1000).state_dict()
    torch.save(state, tmp_path / "vit.pt")
    model = build(tmp_path, classes=4, arch="timm:vit_tiny_patch16_224", weights="vit.pt")  # 32 px: 2 x 2 patches
    assert model.pos_embed.shape[1] == 1 + 4 and model.head.out_features == 4
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items() if k.startswith("blocks."))


def test_grey_input_sums_the_rgb_filters(tmp_path):
    import torchvision

    state = torchvision.models.resnet18(num_classes=10).state_dict()
    torch.save(state, tmp_path / "r18.pt")
    model = build(tmp_path, channels=1, arch="torchvision:resnet18", weights="r18.pt")
    assert torch.allclose(model.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))


def test_missing_weights_name_the_path_looked_for(caches):
    with pytest.raises(UsageError, match=r"torch/hub/checkpoints/resnet18-f37072fd\.pth") as info:
        build(caches, arch="torchvision:resnet18", weights="IMAGENET1K_V1")
    assert "allow_download" in info.value.hint
    with pytest.raises(UsageError, match=r"models--timm--resnet10t\.c3_in1k"):
        build(caches, arch="timm:resnet10t", weights="c3_in1k")
    with pytest.raises(UsageError, match="no pretrained tag 'bogus'") as info:
        build(caches, arch="timm:resnet10t", weights="bogus")
    assert "c3_in1k" in info.value.hint
    with pytest.raises(UsageError, match="no weights 'IMAGENET9K'"):
        build(caches, arch="torchvision:resnet18", weights="IMAGENET9K")


def test_weights_of_another_architecture_are_refused(tmp_path):
    import torchvision

    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "r34.pt")
    with pytest.raises(UsageError, match="do not fit the model"):
        build(tmp_path, arch="torchvision:resnet18", weights="r34.pt")


def test_hf_repository_id_from_the_cache(caches):
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)  # fmt: skip
    torch.manual_seed(4)
    saved = BertModel(config)
    saved.save_pretrained(hub_snapshot(caches / "hf", "org/tiny-bert"))
    model = build(caches, arch="hf:org/tiny-bert")
    assert same(model.encoder, saved.state_dict())
    with pytest.raises(StageError, match=r"hf/models--org--absent/snapshots"):
        build(caches, arch="hf:org/absent")


RECIPE = """\
name: pretrained
model: {{arch: "torchvision:resnet18", weights: {weights}}}
data: {{source: digits, image_size: 16, channels: 3}}
stages: [{{type: export}}]
targets: [cpu-onnxruntime]
"""


def test_cli_missing_weights_is_one_located_line(caches):
    (caches / "r.yaml").write_text(RECIPE.format(weights="IMAGENET1K_V1"))
    result = cli("validate", str(caches / "r.yaml"), env={"TORCH_HOME": str(caches / "torch")})
    assert result.returncode == ExitCode.BAD_INPUT, result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    line = next(ln for ln in output.splitlines() if "model.weights" in ln)
    assert "r.yaml:2" in line and str(caches / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in line
    (caches / "r.yaml").write_text(RECIPE.format(weights="IMAGENET1K_V1, allow_download: true"))
    allowed = cli("validate", str(caches / "r.yaml"), env={"TORCH_HOME": str(caches / "torch")})
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr  # checked, not downloaded
    assert not (caches / "torch" / "hub" / "checkpoints").exists()


def test_cli_missing_weights_file(caches):
    (caches / "r.yaml").write_text(RECIPE.format(weights="nothing/here.pt"))
    result = cli("validate", str(caches / "r.yaml"))
    assert result.returncode == ExitCode.BAD_INPUT and "Traceback" not in result.stderr
    assert f"weights file not found: {caches / 'nothing' / 'here.pt'}" in result.stdout + result.stderr


# ---------------------------------------------------------------- the model's own preprocessing


def test_default_normalisation_is_unchanged_and_presets_are_per_channel():
    import numpy as np

    from compress.data import to_nchw
    from compress.recipe.schema import DataSpec

    pixels = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    np.testing.assert_array_equal(to_nchw(pixels, DataSpec(image_size=8, channels=3)), (pixels - 0.5) / 0.5)
    got = to_nchw(pixels, DataSpec(image_size=8, channels=3, normalize="imagenet"))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(got, (pixels - mean[:, None, None]) / std[:, None, None], atol=1e-6)
    custom = DataSpec(image_size=8, channels=1, normalize={"mean": [0.2], "std": [0.4]})
    np.testing.assert_allclose(to_nchw(pixels[:, :1], custom), (pixels[:, :1] - 0.2) / 0.4, atol=1e-6)


def test_resize_then_centre_crop_keeps_the_middle(tmp_path):
    import numpy as np
    from PIL import Image

    from compress.data.imagefolder import load
    from compress.recipe.schema import DataSpec

    spec = DataSpec(image_size=8, resize=16, channels=3, normalize="none")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(10):  # 40 x 20, a white column band in the middle 10 of 40 columns
            image = np.zeros((20, 40, 3), np.uint8)
            image[:, 15:25] = 255
            Image.fromarray(image).save(tmp_path / name / f"{i}.png")
    splits = load(spec, tmp_path, 0)
    x = splits.x_train[0]
    assert x.shape == (3, 8, 8)  # 40 x 20 -> 32 x 16 (shorter side 16) -> centre 8 x 8 within the band
    assert x.min() > 0.95
    with pytest.raises(ValueError, match="at least image_size"):
        DataSpec(image_size=32, resize=16)


def test_detector_sees_imagenet_statistics_whatever_the_data_normalisation():
    from torch import nn
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    from compress.detection.frcnn import IMAGENET_MEAN, IMAGENET_STD, TorchvisionDetector

    pixels = torch.rand(3, 8, 8)
    want = (pixels - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    for mean, std in (([0.5] * 3, [0.5] * 3), ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), ([0.0], [1.0])):
        model = nn.Module()
        model.transform = GeneralizedRCNNTransform(8, 8, [0.0] * 3, [1.0] * 3)
        t = TorchvisionDetector(model, 8, data_norm=(mean, std)).model.transform
        x = (pixels - torch.tensor(mean * (3 // len(mean)))[:, None, None]) / torch.tensor(std * (3 // len(std)))[
            :, None, None
        ]
        torch.testing.assert_close(t.normalize(x), want, rtol=1e-5, atol=1e-5)


def test_run_with_pretrained_weights_records_the_preprocessing(tmp_path):
    """End to end: the weights reach the exported model, and report.json says how to feed it."""
    import json

    import torchvision

    from tests.conftest import TINY_TARGET

    torch.manual_seed(5)
    torch.save(torchvision.models.resnet18(num_classes=1000).state_dict(), tmp_path / "r18.pt")
    (tmp_path / "tiny-ort.yaml").write_text(TINY_TARGET)
    (tmp_path / "r.yaml").write_text(
        "name: pre\nmodel: {arch: 'torchvision:resnet18', weights: r18.pt}\n"
        "data: {source: digits, image_size: 16, resize: 20, channels: 3, normalize: imagenet}\n"
        "stages: [{type: export}]\ntargets: [tiny-ort]\n"
    )
    result = cli("run", str(tmp_path / "r.yaml"), "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "re-initialised for 10 classes" in result.stdout + result.stderr
    pre = json.loads((tmp_path / "out" / "report.json").read_text())["preprocessing"]
    assert pre["resize"] == 20 and pre["crop"] == 16 and pre["channels"] == "RGB" and pre["layout"] == "NCHW"
    assert pre["mean"] == [0.485, 0.456, 0.406] and pre["std"] == [0.229, 0.224, 0.225]


def test_the_weights_file_read_is_part_of_the_cache_key(caches):
    import torchvision

    from compress.pipeline import Pipeline
    from compress.recipe import load_recipe

    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    cached = caches / "torch" / "hub" / "checkpoints" / os.path.basename(weights.url)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    (caches / "r.yaml").write_text(RECIPE.format(weights="IMAGENET1K_V1"))
    recipe = load_recipe(caches / "r.yaml")
    assert cached in Pipeline(recipe, caches / "out").model_files(recipe.model)
    (caches / "w.pt").write_bytes(b"x")
    assert caches / "w.pt" in Pipeline(recipe, caches / "out").model_files(ModelSpec(arch="resnet", weights="w.pt"))


def test_torchvision_detector_takes_the_bare_models_weights(tmp_path):
    import torchvision

    torch.manual_seed(6)
    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    bare = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=91).state_dict()
    torch.save(bare, tmp_path / "det.pt")
    model = build(tmp_path, classes=3, arch=f"torchvision:{name}", weights="det.pt")
    own = model.state_dict()
    assert own["model.roi_heads.box_predictor.cls_score.weight"].shape[0] == 4  # 3 classes and background
    assert all(torch.equal(own[f"model.{k}"], v) for k, v in bare.items() if "box_predictor" not in k)
