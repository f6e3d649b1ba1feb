"""`scope: sensitivity`: per-group pruning ratios from each group's measured loss sensitivity, weighed
by MACs or by each layer's time measured in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compress.artifact import Artifact, load_torch
from compress.data import load_data
from compress.errors import RecipeError
from compress.models import build_model
from compress.recipe import DataSpec, ModelSpec, recipe_from_text
from compress.stages.layer_times import layer_times, module_of
from compress.stages.prune import PruneStage
from compress.stages.sensitivity import Probe, allocate
from compress.stages.train import TrainStage
from tests.test_finetune import artifact
from tests.test_prune import stage_ctx


def test_allocation_prunes_insensitive_groups_harder_and_removes_as_much_as_uniform():
    table = {  # equal MACs per group; "flat" barely notices pruning, "steep" does
        "flat": [Probe(0.25, 0.001, 25), Probe(0.5, 0.002, 50), Probe(0.75, 0.004, 75)],
        "steep": [Probe(0.25, 0.1, 25), Probe(0.5, 1.0, 50), Probe(0.75, 5.0, 75)],
        "mid": [Probe(0.25, 0.01, 25), Probe(0.5, 0.05, 50), Probe(0.75, 0.5, 75)],
    }
    ratios = allocate(table, 0.5)
    assert ratios["flat"] == 0.75 and ratios["steep"] < 0.5, ratios
    removed = sum(p.saved for g, probes in table.items() for p in probes if p.ratio == ratios[g])
    assert removed >= 150, "the groups together remove at least what 0.5 removes from each"


def test_allocation_leaves_a_group_whole_when_others_can_carry_the_budget():
    table = {
        "big": [Probe(0.25, 0.0, 100), Probe(0.5, 0.01, 200), Probe(0.75, 0.02, 300)],
        "small": [Probe(0.25, 2.0, 10), Probe(0.5, 4.0, 20), Probe(0.75, 8.0, 30)],
    }
    assert allocate(table, 0.5) == {"big": 0.75, "small": 0.0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, object, Artifact]:
    tmp = tmp_path_factory.mktemp("sens")
    splits = load_data(DataSpec(source="digits", image_size=16, channels=1), tmp, 0)
    torch.manual_seed(0)  # the same initial weights every run
    model = build_model(ModelSpec(arch="resnet", options={"width": 16, "blocks": [1, 1]}), tmp, 1, 10, 16)
    ctx = stage_ctx(tmp, splits, "train")
    out = TrainStage(type="train", name="train", epochs=6, batch_size=64, lr=0.003).run(
        artifact(tmp, model, "init"), ctx
    )
    out.folder, out.key = ctx.workdir, "trained"  # as the pipeline keys a stage's result
    return tmp, splits, out


def test_measured_ratios_differ_per_group_and_remove_as_many_macs_as_uniform(trained):
    tmp, splits, model = trained
    pruned = {}
    for scope in ("uniform", "sensitivity"):
        ctx = stage_ctx(tmp, splits, f"prune-{scope}")
        pruned[scope] = PruneStage(type="prune", name="p", ratio=0.5, round_to=4, scope=scope).run(model, ctx).meta
    info = pruned["sensitivity"]["pruning"]
    ratios, table = info["ratios"], info["sensitivity"]
    assert len(set(ratios.values())) > 1, "the groups got different ratios"
    assert set(ratios) == set(table) and all(len(rows) == 3 for rows in table.values())
    macs, uniform_macs = info["macs_after"], pruned["uniform"]["pruning"]["macs_after"]
    # Three ratios per group on a 16-channel model give coarse steps; the removal may overshoot by one.
    assert 0.7 * uniform_macs <= macs <= uniform_macs, "no fewer MACs removed than uniform, and not far more"


def test_sensitivity_needs_a_ratio(write):
    path = write("r.yaml", "name: r\nmodel: {arch: resnet}\nstages:\n  - type: train\n"
                 "  - {type: prune, scope: sensitivity, macs_reduction: 2}\n")  # fmt: skip
    with pytest.raises(RecipeError) as info:
        recipe_from_text(path.read_text(), str(path))
    text = "\n".join(info.value.lines())
    assert "give ratio" in text and "r.yaml:5" in text, text


def test_exported_node_names_map_back_to_modules():
    known = {"layers.1.shortcut.0", "stem.0", "blocks.0.mlp.fc1", "blocks.0.attn.k", "fc"}
    assert module_of("/layers/layers.1/shortcut/shortcut.0/Conv", known) == "layers.1.shortcut.0"
    assert module_of("/stem/stem.0/Conv", known) == "stem.0"
    assert module_of("/blocks/blocks.0/mlp/fc1/MatMul", known) == "blocks.0.mlp.fc1"
    assert module_of("/blocks/blocks.0/attn/k/MatMul/MatMulAddFusion", known) == "blocks.0.attn.k"
    assert module_of("/blocks/blocks.0/attn/MatMul/MatMulScaleFusion/", known) is None
    assert module_of("/fc/Gemm", known) == "fc"


def test_latency_cost_weighs_groups_by_each_layers_measured_time(trained):
    tmp, splits, model = trained
    ctx = stage_ctx(tmp, splits, "prune-latency")
    times = layer_times(load_torch(model), ctx)
    convs = {n for n, m in load_torch(model).named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    assert set(times) == convs and all(ms > 0 for ms in times.values()), "every weighted layer was timed"
    info = PruneStage(type="prune", name="p", ratio=0.5, round_to=4, scope="sensitivity",
                      sensitivity_cost="latency").run(model, ctx).meta["pruning"]  # fmt: skip
    assert info["sensitivity_cost"] == "latency"
    saved = [s for rows in info["sensitivity"].values() for _, _, s in rows]
    assert 0 < max(saved) < sum(times.values()) * 1.5, "savings are in ms, bounded by the measured layers' time"


def test_groups_that_cost_nothing_are_pruned_no_further_than_the_budget_needs():
    table = {g: [Probe(0.25, 0.0, 25), Probe(0.5, 0.0, 50), Probe(0.75, 0.0, 75)] for g in ("a", "b", "c")}
    ratios = allocate(table, 0.5)
    removed = sum(p.saved for g, probes in table.items() for p in probes if p.ratio == ratios[g])
    assert 150 <= removed < 175, ratios


def test_a_transformer_still_loses_heads_under_sensitivity_ratios(tmp_path):
    from tests.test_prune import make_splits

    splits = make_splits(16)
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch="vit"), tmp_path, 1, 10, 16).eval()
    out = PruneStage(type="prune", name="p", ratio=0.5, heads_ratio=0.25, scope="sensitivity").run(
        artifact(tmp_path, model, "vit"), stage_ctx(tmp_path, splits, "p"))  # fmt: skip
    heads = out.meta["pruning"]["heads"]
    assert heads and all(after < before for before, after in heads), heads


def test_a_second_stage_pruning_the_same_model_reuses_the_measured_copies(trained):
    tmp, splits, model = trained
    logs = []
    results = []
    for name in ("first", "second"):
        ctx = stage_ctx(tmp, splits, f"memo-{name}")
        ctx.log = logs.append
        results.append(PruneStage(type="prune", name=name, ratio=0.55, round_to=4, scope="sensitivity")
                       .run(model, ctx).meta["pruning"])  # fmt: skip
    assert results[0]["ratios"] == results[1]["ratios"]
    # Within one stage, the search for uniform's saving may meet an allocation twice; the second
    # stage finds every probe of the first.
    reused = {line.split(":")[0]: int(line.split()[1]) for line in logs if "measured before were reused" in line}
    assert reused["second"] >= reused.get("first", 0) + 3 * len(results[0]["ratios"]), reused


def test_probes_measured_without_the_refit_are_not_reused_by_a_stage_that_refits(tmp_path):
    from compress.stages.pruning import memo_file

    ctx = stage_ctx(tmp_path, None, "memo")
    plain, refit = (
        PruneStage(type="prune", name="p", ratio=0.5, scope="sensitivity", reconstruct=r) for r in (False, True)
    )
    assert memo_file(plain, ctx, "source") != memo_file(refit, ctx, "source")
