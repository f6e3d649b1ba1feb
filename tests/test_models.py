"""Every registered zoo model builds, trains a step, exports to ONNX and runs in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.models import zoo
from compress.models.sources import builder_options
from compress.runtimes.onnxruntime import OnnxSession

TINY = {"resnet": {"width": 4, "blocks": (1, 1)}, "mobilenetv2": {"width": 4, "blocks": (1, 1)},
        "vit": {"dim": 16, "depth": 1, "heads": 2}}  # fmt: skip


@pytest.mark.parametrize(
    "arch", sorted(set(zoo.BUILDERS) - set(zoo.DETECTORS))
)  # detectors: test_detection.py, test_detr.py
def test_zoo_model_exports_and_runs(arch, tmp_path):
    builder = zoo.BUILDERS[arch]
    model = builder(in_channels=1, num_classes=10, image_size=16, **TINY.get(arch, {})).eval()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        expected = model(x).numpy()
    assert expected.shape == (3, 10)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "b"}, "logits": {0: "b"}}, opset_version=17)  # fmt: skip
    got = OnnxSession(path, threads=1).run({"input": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("arch", sorted(zoo.BUILDERS))
def test_zoo_options_are_discoverable(arch):
    assert builder_options(arch), "recipe validation lists a builder's options"


def test_default_resnet_size_is_in_the_quickstart_range():
    model = zoo.BUILDERS["resnet"](in_channels=1, num_classes=10, image_size=32)
    assert 0.5e6 <= sum(p.numel() for p in model.parameters()) <= 2e6


def test_hf_names_a_package_without_running_its_code(tmp_path, monkeypatch):
    """`arch: hf:NAME` must not import an arbitrary installed module (hf:this printed the Zen of Python)."""
    from compress.errors import StageError
    from compress.models.hf import resolve_hf_path

    (tmp_path / "sideeffect.py").write_text("import pathlib\npathlib.Path(__file__).with_name('ran').touch()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(StageError, match="no installed model package 'sideeffect'"):
        resolve_hf_path("sideeffect", tmp_path / "elsewhere")
    assert not (tmp_path / "ran").exists()
    package = tmp_path / "shipped_model"
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (package / "model" / "config.json").write_text("{}")
    assert resolve_hf_path("shipped-model", tmp_path / "elsewhere") == package / "model"


def checkpoint_error(model, path):
    from compress.errors import CompressError, ExitCode
    from compress.models import load_checkpoint

    with pytest.raises(CompressError) as info:
        load_checkpoint(model, path)
    assert info.value.exit_code == ExitCode.BAD_INPUT and info.value.hint
    assert len(info.value.lines()) == 2 and str(path) in info.value.message
    return info.value.message


def test_checkpoint_errors_are_one_line(tmp_path):
    model = zoo.BUILDERS["resnet"](in_channels=1, num_classes=10, image_size=16, width=4, blocks=(1, 1))
    wider = zoo.BUILDERS["resnet"](in_channels=1, num_classes=10, image_size=16, width=8, blocks=(1, 1))
    torch.save(wider.state_dict(), tmp_path / "wider.pt")
    message = checkpoint_error(model, tmp_path / "wider.pt")
    first = next(k for k, v in wider.state_dict().items() if v.shape != model.state_dict()[k].shape)
    shapes = f"({', '.join(map(str, wider.state_dict()[first].shape))}) in the checkpoint but "
    assert f"{first} has shape {shapes}({', '.join(map(str, model.state_dict()[first].shape))}) in the model" in message
    state = model.state_dict()
    state["extra.weight"] = state.pop("fc.weight")
    torch.save(state, tmp_path / "renamed.pt")
    message = checkpoint_error(model, tmp_path / "renamed.pt")
    assert "1 key missing from the checkpoint (fc.weight)" in message and "1 unexpected (extra.weight)" in message
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert "cannot load checkpoint" in checkpoint_error(model, tmp_path / "junk.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    assert "holds a Tensor, not a state_dict" in checkpoint_error(model, tmp_path / "tensor.pt")


def test_hf_this_is_a_validation_problem_that_runs_no_code(tmp_path):
    """`arch: hf:this` printed the Zen of Python: naming a module imported it."""
    import contextlib
    import io

    from compress.errors import RecipeError
    from compress.recipe import recipe_from_text

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(RecipeError) as caught:
        recipe_from_text("name: r\nmodel: {arch: 'hf:this'}\nstages: [{type: export}]\n", str(tmp_path / "r.yaml"))
    (problem,) = caught.value.problems
    assert problem.path == "model.arch" and "no installed model package 'this'" in problem.message
    assert "Beautiful is better" not in printed.getvalue()
