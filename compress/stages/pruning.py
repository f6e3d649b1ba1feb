"""Structured channel pruning with torch-pruning's dependency graph (DepGraph), for `prune`.

Coupled layers (a convolution, its BatchNorm, the next layer's inputs, residual additions) are
pruned together, so the result is a smaller dense network that exports and runs anywhere. The
goal is a channel ratio, or a MACs / parameter reduction reached in small iterative steps.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from compress.artifact import Artifact, Kind, load_torch, save_torch
from compress.errors import StageError
from compress.models.attention import Found, attention_layers, check_described
from compress.models.mha import split_multihead
from compress.report.details import Pruning
from compress.selection import matches
from compress.stages import StageContext
from compress.stages.depth import drop_blocks
from compress.stages.prune import PruneStage


def prune(cfg: PruneStage, artifact: Artifact, ctx: StageContext) -> Artifact:
    import torch_pruning as tp

    model = load_torch(artifact).eval()
    example = ctx.task.inputs(ctx.splits.x_train[:1])
    base_macs, base_params = tp.utils.count_ops_and_params(model, example)
    # A detector names the part that may shrink (its backbone) and the layers feeding fixed-width heads.
    scope = model.pruning_scope(*example) if getattr(model, "is_detector", False) else None
    target, target_example = (scope.module, scope.example) if scope else (model, example)
    ignored = ignored_layers(model, cfg, ctx.splits.num_classes, scope is None) + (scope.ignored if scope else [])
    if cfg.heads_ratio:  # nn.MultiheadAttention can lose heads only once its projections are separate
        split_multihead(target)
    attention = find_attention(target, cfg)
    if cfg.blocks_ratio and scope is not None:
        raise StageError(f"stage '{cfg.name}': blocks_ratio measures each block's need by the task's loss, "
                         "which a detector computes only while training", hint="leave blocks_ratio unset")  # fmt: skip
    depth = drop_blocks(target, attention, cfg.blocks_ratio, ctx, training_batches(cfg.blocks_batches, ctx),
                        cfg.name) if cfg.blocks_ratio else None  # fmt: skip
    if depth:  # the removed blocks' attention layers are gone
        attention = find_attention(target, cfg)
    ignored += [p for f in attention if not f.prunable for p in f.adapter.projections(f.module)]
    if attention and not cfg.embedding and scope is None:  # a scope names the layers it keeps itself
        ignored += residual_layers(target, attention)
    prunable = [f for f in attention if f.prunable]
    ratios, table = group_ratios(tp, target, target_example, cfg, ignored, prunable, ctx, detector=scope is not None,
                                 source=artifact.key)  # fmt: skip
    pruner = make_pruner(tp, target, target_example, cfg, ignored, prunable,
                         scope.output_transform if scope else None, ratios=ratios)  # fmt: skip
    refits: list[dict] = []
    steps = prune_steps(cfg, pruner, model, example, base_macs, base_params, ctx, refits)
    reconstruction = combined(refits)
    if reconstruction:
        ctx.log(f"{cfg.name}: {reconstruction['layers']} Linear layers refitted; relative output error "
                f"{reconstruction['error_before']} -> {reconstruction['error_after']}")  # fmt: skip
    heads = update_heads(pruner, prunable)
    summary = attention_summary(attention, heads, cfg)
    for line in summary:
        ctx.log(f"{cfg.name}: attention {line['module']} ({line['layout']}) x{line['layers']}: {line['outcome']}")
    macs, params = tp.utils.count_ops_and_params(model, example)
    ctx.log(f"{cfg.name}: {steps} step(s); params {base_params:,} -> {params:,} ({base_params / params:.2f}x), "
            f"MACs {base_macs:,.0f} -> {macs:,.0f} ({base_macs / macs:.2f}x)")  # fmt: skip
    model.zero_grad(set_to_none=True)
    file = save_torch(model, ctx.workdir)
    pruning = Pruning(importance=cfg.importance, scope=cfg.scope, round_to=cfg.rounding, steps=steps,
                      **({"heads": heads} if heads else {}), **({"attention": summary} if summary else {}),
                      **({"ratios": ratios, "sensitivity": table, "sensitivity_cost": cfg.sensitivity_cost}
                         if ratios is not None else {}), **({"blocks": depth} if depth else {}),
                      **({"reconstruction": reconstruction} if reconstruction else {}),
                      params_before=int(base_params),
                      params_after=int(params), macs_before=int(base_macs), macs_after=int(macs))  # fmt: skip
    meta = {**artifact.meta, "params": int(params), "macs": int(macs), "pruning": pruning.dump()}
    meta.pop("history", None)
    return Artifact(Kind.TORCH, file, lineage=[*artifact.lineage, cfg.name], meta=meta)


def classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """The output layer(s): their output width is the class count and must not shrink."""
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    heads = [m for m in last if getattr(m, "out_features", getattr(m, "out_channels", None)) == num_classes]
    return heads[-1:] or last[-1:]


def ignored_layers(model: nn.Module, cfg: PruneStage, num_classes: int, classifier: bool = True) -> list[nn.Module]:
    chosen = [m for name, m in model.named_modules() if name and matches(name, type(m).__name__, cfg.ignore)]
    unused = [
        p for p in cfg.ignore if not any(matches(n, type(m).__name__, [p]) for n, m in model.named_modules() if n)
    ]
    if unused:
        sample = ", ".join(n for n, _ in list(model.named_modules())[1:6])
        raise StageError(f"ignore pattern(s) {unused} match no module in the model",
                         hint=f"module names look like: {sample}; class names and re: patterns work too")  # fmt: skip
    return [*chosen, *(classifier_layers(model, num_classes) if classifier else [])]


def make_importance(tp, cfg: PruneStage, heads: dict[nn.Module, int]):
    if cfg.importance == "activation":
        from compress.stages.activation import InputMoments, activation_importance

        return activation_importance(tp, InputMoments(), heads)
    if cfg.importance == "taylor":
        return tp.importance.GroupTaylorImportance()
    if cfg.importance == "bn_scale":
        return tp.importance.BNScaleImportance()
    return tp.importance.GroupMagnitudeImportance(p=1 if cfg.importance == "l1" else 2)


def rounded_pruner_class(tp):
    """MetaPruner whose `round_to` keeps the *nearest* multiple of channels, never fewer than one,
    and whose iterative head pruning reaches the share of the original heads.

    torch-pruning 1.6 rounds the kept channels down; when that reaches zero the whole group is
    silently left unpruned (32 channels at ratio 0.85 with round_to 8 stayed 32), so a higher
    ratio could give a bigger, slower model. It also applies each step's cumulative head ratio to
    the heads still there, so 12 heads at 0.33 over three steps lost 8 rather than 4.
    """

    class RoundedPruner(tp.pruner.MetaPruner):
        def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
            if current_channels <= round_to:
                return 0
            keep = max(round_to, round((current_channels - n_pruned) / round_to) * round_to)
            return max(current_channels - keep, 0)

        def get_target_head_pruning_ratio(self, module) -> float:
            """The ratio of the current heads whose removal (rounded up, as torch-pruning does) brings
            the total removed to the cumulative target counted from the original heads."""
            cumulative = super().get_target_head_pruning_ratio(module)
            if self.global_pruning:  # global head pruning already counts from the original total
                return cumulative
            initial, current = self.init_num_heads[module], self.num_heads[module]
            target = math.ceil(cumulative * initial - 1e-9)
            remove = target - (initial - current)
            return max(remove - 0.5, 0) / current if current else 0.0

    return RoundedPruner


def find_attention(model: nn.Module, cfg: PruneStage) -> list[Found]:
    """The model's attention layers, after checking the recipe's descriptions against the model."""
    problems = check_described(model, cfg.attention)
    if problems:
        raise StageError(f"stage '{cfg.name}': {'; '.join(problems)}",
                         hint="attention: entries name a class of the model, its Linear attribute(s) (qkv, or "
                         "q, k and v) and its integer head-count attribute (heads, optionally head_dim)")  # fmt: skip
    return attention_layers(model, cfg.attention)


def attention_summary(attention: list[Found], heads: list[list[int]], cfg: PruneStage) -> list[dict]:
    """Per attention class and layout: how many layers, and whether they lost heads or why not."""
    changes = iter(heads)
    groups: dict[tuple[str, str], dict] = {}
    for found in attention:
        key = (type(found.module).__name__, found.adapter.layout)
        entry = groups.setdefault(key, {"module": key[0], "layout": key[1], "layers": 0, "heads": []})
        entry["layers"] += 1
        if found.prunable:
            entry["heads"].append(next(changes))
        else:
            entry["outcome"] = f"kept whole: {found.adapter.whole}"
    for entry in groups.values():
        if "outcome" not in entry:
            before, after = sum(b for b, _ in entry["heads"]), sum(a for _, a in entry["heads"])
            entry["outcome"] = (f"pruned by head, {before} -> {after} heads" if after < before else
                                "kept whole: heads_ratio is not set" if not cfg.heads_ratio else "no head removed")  # fmt: skip
        entry.pop("heads")
    return list(groups.values())


def residual_layers(model: nn.Module, attention: list[Found]) -> list[nn.Module]:
    """Layers writing a Transformer's residual stream (width d_model), kept whole unless
    `embedding: true`; the query/key/value projections, also d_model wide, stay prunable by head."""
    d_model = attention[0].adapter.width(attention[0].module)
    qkv = {id(p) for f in attention for p in f.adapter.projections(f.module)}
    widths = {nn.Linear: "out_features", nn.Conv2d: "out_channels", nn.Embedding: "embedding_dim"}
    return [m for m in model.modules() if id(m) not in qkv
            and any(isinstance(m, t) and getattr(m, w) == d_model for t, w in widths.items())]  # fmt: skip


def group_ratios(tp, model, example, cfg: PruneStage, ignored, attention, ctx: StageContext,
                 detector: bool = False, source: str = "") -> tuple[dict | None, dict | None]:  # fmt: skip
    """`scope: sensitivity`: a ratio per group from each group's measured loss sensitivity, and the
    measurements ({group: [[ratio, loss increase, MACs or ms saved], ...]}); (None, None) otherwise."""
    from compress.stages.sensitivity import Prober, choose, describe

    if cfg.scope != "sensitivity":
        return None, None
    if detector:
        raise StageError(f"stage '{cfg.name}': scope: sensitivity measures a classifier's or encoder's loss; "
                         "a detector's backbone prunes with scope uniform or global", hint="set scope: uniform")  # fmt: skip
    prober = Prober(tp, model, example, cfg, ignored, attention, ctx, training_batches(cfg.sensitivity_batches, ctx),
                    memo=memo_file(cfg, ctx, source))  # fmt: skip
    ratios, table = choose(prober, cfg.ratio)
    prober.save()
    for line in describe(table, ratios):
        ctx.log(f"{cfg.name}: {line}")
    return ratios, {g: [[p.ratio, round(p.loss, 5), round(p.saved, 5)] for p in probes] for g, probes in table.items()}


def memo_file(cfg: PruneStage, ctx: StageContext, source: str):
    """Where measurements of pruned copies of one model are kept, so that stages pruning it at other
    ratios (a search's trials) reuse them; None without a cache or a source key."""
    if not (ctx.shared_cache and source):
        return None
    import hashlib
    import json

    settings = cfg.model_dump(mode="json", include={"importance", "sensitivity_batches", "sensitivity_cost", "round_to",
                                                    "ignore", "embedding", "attention", "taylor_batches",
                                                    "activation_batches", "reconstruct"})  # fmt: skip
    digest = hashlib.sha256(json.dumps([source, ctx.seed, settings], sort_keys=True).encode()).hexdigest()[:16]
    return ctx.shared_cache / f"sensitivity-{digest}.json"


def make_pruner(tp, model, example, cfg: PruneStage, ignored: list[nn.Module], attention: list,
                output_transform=None, ratios: dict[str, float] | None = None):  # fmt: skip
    """The pruner for `cfg`; with `ratios` ({module name: ratio}), only those groups (each named by
    its first module) are pruned, each to its own ratio."""
    by_ratio = cfg.ratio is not None
    heads = {p: f.adapter.heads(f.module) for f in attention for p in f.adapter.projections(f.module)}
    importance = make_importance(tp, cfg, heads)
    pruner = rounded_pruner_class(tp)(
        model, example, importance,
        pruning_ratio=0.0 if ratios is not None else cfg.ratio if by_ratio else 0.95,
        pruning_ratio_dict=by_name(model, ratios, attention, cfg.ratio) if ratios is not None else None,
        iterative_steps=cfg.steps if by_ratio else cfg.max_steps,
        global_pruning=cfg.scope == "global", ignored_layers=ignored,
        round_to=cfg.rounding if cfg.rounding and cfg.rounding > 1 else None,
        num_heads=heads, prune_num_heads=bool(cfg.heads_ratio), prune_head_dims=False,
        head_pruning_ratio=cfg.heads_ratio or 0.0, unwrapped_parameters=free_parameters(model) or None,
        output_transform=output_transform,
    )  # fmt: skip
    if cfg.importance == "activation":
        from compress.stages.activation import head_readers

        importance.moments.full = head_readers(pruner, tp, heads)
    return pruner


def by_name(model: nn.Module, ratios: dict[str, float], attention: list[Found], ratio: float) -> dict:
    """torch-pruning's per-module ratios; attention groups keep the stage's ratio, which lets them
    lose heads (heads_ratio) while their width stays."""
    modules = dict(model.named_modules())
    heads = {p: ratio for f in attention for p in f.adapter.projections(f.module)}
    return {**heads, **{modules[n]: r for n, r in ratios.items() if r > 0}}


LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding, nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)


def free_parameters(model: nn.Module) -> list[tuple[nn.Parameter, int]]:
    """Parameters outside standard layers (a ViT's class token and position embedding); their
    last axis follows the residual width."""
    return [(p, p.dim() - 1) for m in model.modules() if not isinstance(m, LAYERS)
            for p in m.parameters(recurse=False)]  # fmt: skip


def update_heads(pruner, attention: list[Found]) -> list[list[int]]:
    """Write the new head counts into each attention layer; returns [before, after] per layer."""
    changes = []
    for found in attention:
        module, adapter = found.module, found.adapter
        first = adapter.projections(module)[0]
        before, after = pruner.init_num_heads.get(first, adapter.heads(module)), pruner.num_heads[first]
        adapter.set_heads(module, after)
        changes.append([before, after])
    return changes


def prune_steps(cfg: PruneStage, pruner, model, example, base_macs, base_params, ctx: StageContext,
                refits: list[dict] | None = None) -> int:  # fmt: skip
    """Step the pruner to the ratio, or until the MACs / parameter target is met; with
    `reconstruct`, each step's refit is appended to `refits`."""
    import torch_pruning as tp

    total = cfg.steps if cfg.ratio is not None else cfg.max_steps
    # The same batches before every step; read once, and only where they are measured.
    measured = cfg.importance == "activation" or cfg.reconstruct
    batches = [ctx.splits.x_train[idx] for idx in training_batches(cfg.activation_batches, ctx)] if measured else []
    for step in range(1, total + 1):
        if cfg.importance == "taylor":
            accumulate_gradients(model, cfg, ctx)
        elif cfg.importance == "activation":
            pruner.importance.moments.collect(model, ctx.task, batches)
        if cfg.reconstruct:
            refit = refitted_step(tp, pruner, model, ctx, batches)
            if refits is not None:
                refits.append(refit)
        else:
            pruner.step()
        if cfg.ratio is None:
            macs, params = tp.utils.count_ops_and_params(model, example)
            if (cfg.macs_reduction and base_macs / macs >= cfg.macs_reduction) or (
                cfg.params_reduction and base_params / params >= cfg.params_reduction
            ):
                return step
    if cfg.ratio is None:
        raise StageError(f"stage '{cfg.name}' could not reach the reduction target in {total} steps",
                         hint="lower macs_reduction / params_reduction, or ignore fewer layers")  # fmt: skip
    return total


def refitted_step(tp, pruner, model: nn.Module, ctx: StageContext, batches: list[np.ndarray]) -> dict:
    """One pruning step whose Linear layers that lose inputs are refitted to their former outputs."""
    from compress.stages.reconstruct import Reconstruction, readers

    refit = Reconstruction(readers(tp, pruner))
    refit.collect(model, ctx.task, batches)
    for group in pruner.step(interactive=True):
        refit.record(group, tp)
        group.prune()
    return refit.apply()


def combined(refits: list[dict]) -> dict | None:
    """The steps' refits as one: layers refitted in the last step, errors of the first and last."""
    if not refits or not refits[-1]["layers"]:
        return None
    return {"layers": refits[-1]["layers"], "error_before": refits[0]["error_before"],
            "error_after": refits[-1]["error_after"]}  # fmt: skip


def training_batches(count: int, ctx: StageContext, size: int = 64) -> list[np.ndarray]:
    """Indices of `count` random batches of the training split, the same for the same seed."""
    rng = np.random.default_rng(ctx.seed)
    x = ctx.splits.x_train
    return [rng.choice(len(x), min(size, len(x)), replace=False) for _ in range(count)]


def accumulate_gradients(model: nn.Module, cfg: PruneStage, ctx: StageContext) -> None:
    """Taylor importance needs gradients of the task loss; a few training batches suffice."""
    model.zero_grad(set_to_none=True)
    model.eval()  # keep BatchNorm statistics fixed while measuring sensitivity
    if getattr(model, "is_detector", False):  # a detector computes its losses in training mode only
        model.train()
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    x, y, task = ctx.splits.x_train, ctx.splits.y_train, ctx.task
    for idx in training_batches(cfg.taylor_batches, ctx):
        labels = torch.from_numpy(y[idx])
        loss = task.loss(task.train_outputs(model, task.inputs(x[idx]), labels), labels)
        loss.backward()
    model.eval()
