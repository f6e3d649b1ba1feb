"""`prune reconstruct`: Linear layers that lost inputs are refitted to their unpruned outputs."""

from __future__ import annotations

import torch

from compress.artifact import load_torch
from compress.data import load_data
from compress.models import build_model
from compress.recipe import DataSpec, ModelSpec
from compress.stages.prune import PruneStage
from tests.test_depth import train
from tests.test_prune import prune_and_export


def test_refit_brings_a_pruned_vit_closer_to_its_unpruned_outputs_on_unseen_rows(tmp_path):
    splits = load_data(DataSpec(source="digits", image_size=16, channels=1), tmp_path, 0)
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch="vit", options={"patch": 4, "dim": 32, "depth": 2, "heads": 4}), tmp_path,
                        1, 10, 16)  # fmt: skip
    train(model, splits)
    x = torch.from_numpy(splits.x_test)
    with torch.no_grad():
        reference = model(x)
    gaps = {}
    for refit in (False, True):
        cfg = PruneStage(type="prune", name="prune", ratio=0.5, heads_ratio=0.5, importance="activation",
                         reconstruct=refit)  # fmt: skip
        (tmp_path / str(refit)).mkdir()
        pruned, _, _ = prune_and_export(tmp_path / str(refit), model, splits, cfg)
        with torch.no_grad():
            gaps[refit] = float(((load_torch(pruned)(x) - reference) ** 2).mean())
        info = pruned.meta["pruning"].get("reconstruction")
    # the MLPs' second Linear and the attention output projections, in both blocks
    assert info["layers"] == 4 and info["error_after"] < info["error_before"]
    assert gaps[True] < 0.7 * gaps[False], gaps
