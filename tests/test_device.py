"""`device:` and `amp:` of the training stages: resolution, checks before any work, CUDA and bf16."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from compress.errors import RecipeError, UsageError
from compress.recipe import recipe_from_text
from compress.stages import device
from compress.stages.train import TrainStage
from compress.stages.training import fit
from tests.conftest import ROOT, TINY_TARGET
from tests.test_prune import make_splits, stage_ctx

RECIPE = """\
name: r
model: {{arch: resnet, options: {{width: 8, blocks: [1, 1]}}}}
data: {{source: digits, image_size: 16}}
stages:
  - {{type: train, epochs: 2, lr: 0.01{train}}}
  - {{type: export}}
  - {{type: quantize, input: train, method: qat, qat: {{epochs: 1{qat}}}, calibration: {{samples: 64}}}}
targets: [tiny-ort]
"""


def recipe(train: str = "", qat: str = ""):
    return recipe_from_text(RECIPE.format(train=train, qat=qat).replace("targets: [tiny-ort]\n", ""))


def no_cuda(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_auto_is_cuda_where_torch_sees_a_gpu_else_cpu(monkeypatch):
    no_cuda(monkeypatch)
    assert device.resolve("auto") == "cpu" and device.resolve("cuda:1") == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device.resolve("auto") == "cuda"


def test_cuda_without_a_gpu_names_the_stage_and_field(monkeypatch):
    no_cuda(monkeypatch)
    with pytest.raises(UsageError) as info:
        device.check_recipe_devices(recipe(qat=", device: 'cuda:0'"))
    assert "stage 'quantize': qat.device is 'cuda:0'" in info.value.message
    assert "no CUDA device" in info.value.message and "auto" in info.value.hint and "cpu" in info.value.hint
    device.check_recipe_devices(recipe(train=", device: cpu", qat=", device: auto"))  # both run here


def test_amp_checks(monkeypatch):
    no_cuda(monkeypatch)
    with pytest.raises(RecipeError) as info:  # known at load: device cpu
        recipe(train=", device: cpu, amp: fp16")
    assert "stages[0]" in str(info.value.problems[0]) and "fp16 needs CUDA" in str(info.value.problems[0])
    with pytest.raises(UsageError, match="stage 'train': amp is 'fp16', which needs CUDA"):  # auto chose the CPU
        device.check_recipe_devices(recipe(train=", amp: fp16"))
    monkeypatch.setattr(device, "cpu_bf16_supported", lambda: False)
    with pytest.raises(UsageError, match="no native bfloat16") as info:
        device.check_recipe_devices(recipe(train=", amp: bf16"))
    assert "amp: null" in info.value.hint
    monkeypatch.setattr(device, "cpu_bf16_supported", lambda: True)
    device.check_recipe_devices(recipe(train=", amp: bf16"))
    with pytest.raises(RecipeError) as info:
        recipe(train=", device: gpu")
    assert "stages[0].device" in str(info.value.problems[0])
    assert recipe(train=", amp: true").stages[0].amp == "bf16"  # the earlier boolean still reads


def test_cpu_bf16_support_from_cpu_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("flags\t: fpu sse avx2 avx512f\n")
    assert not device.cpu_bf16_supported(info)
    info.write_text("flags\t: fpu avx512f avx512_bf16 amx_tile\n")
    assert device.cpu_bf16_supported(info)
    info.write_text("flags\t: fpu amx_bf16\n")
    assert device.cpu_bf16_supported(info)


def test_cli_refuses_cuda_before_any_work(tmp_path):
    (tmp_path / "tiny-ort.yaml").write_text(TINY_TARGET)
    (tmp_path / "r.yaml").write_text(RECIPE.format(train=", device: cuda", qat=""))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "compress", "run", "r.yaml", "-o", "out"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "stage 'train': device is 'cuda'" in done.stderr and "hint: use device: auto" in done.stderr
    assert not list((tmp_path / "out").glob("cache/data-*")), "data was prepared before the check"


def conv_dtypes_training(tmp_path, amp: str) -> set:
    """The dtypes a tiny CNN's first convolution computes in while `fit` trains it with `amp`."""
    from compress.models import build_model
    from compress.recipe import ModelSpec

    torch.manual_seed(0)
    model = build_model(ModelSpec(arch="resnet", options={"width": 8, "blocks": [1, 1]}), tmp_path, 1, 10, 16)
    seen: set[torch.dtype] = set()
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, out: seen.add(out.dtype) if m.training else None)
    cfg = TrainStage(type="train", name="train", epochs=1, batch_size=8, device="cpu", amp=amp)
    fit(model, cfg, stage_ctx(tmp_path, make_splits(16), "train"), "train")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    return seen


@pytest.mark.skipif(not device.cpu_bf16_supported(), reason="needs a CPU with AVX-512 BF16 or AMX (bf16 autocast)")
def test_bf16_autocast_on_the_cpu(tmp_path):
    assert conv_dtypes_training(tmp_path, "bf16") == {torch.bfloat16}


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_is_bf16_where_the_cpu_has_it_else_fp32(monkeypatch, tmp_path, native):
    monkeypatch.setattr(device, "cpu_bf16_supported", lambda: native)
    device.check_recipe_devices(recipe(train=", device: cpu, amp: auto"))  # never refused
    assert conv_dtypes_training(tmp_path, "auto") == {torch.bfloat16 if native else torch.float32}


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs an NVIDIA GPU: trains a tiny recipe on cuda and compares variants with cpu")  # fmt: skip
@pytest.mark.gpu
def test_cuda_training_makes_the_same_variants_as_cpu(tmp_path):
    import compress

    (tmp_path / "tiny-ort.yaml").write_text(TINY_TARGET)
    (tmp_path / "r.yaml").write_text(RECIPE.format(train="", qat=""))
    reports = {}
    for where, amp in (("cpu", None), ("cuda", None), ("cuda", "bf16")):
        sets = {"stages[train].device": where, "stages[train].amp": amp, "stages[quantize].qat.device": where}
        reports[(where, amp)] = compress.run(
            tmp_path / "r.yaml", output=tmp_path / f"out-{where}-{amp}", overrides=sets
        )
    cpu = reports[("cpu", None)]
    for (where, amp), report in reports.items():
        assert [v.name for v in report.variants] == [v.name for v in cpu.variants]
        meta = json.loads(next((tmp_path / f"out-{where}-{amp}" / "cache").glob("train-*/artifact.json")).read_text())
        assert meta["meta"]["training_device"] == where and meta["meta"]["training_amp"] == amp
        for got, want in zip(report.variants, cpu.variants, strict=True):
            assert abs(got.accuracy.value - want.accuracy.value) < 15  # trained elsewhere, not bit for bit
