"""A recipe's `search:`: the fastest (or smallest) variant on one target within the limits given.

Each trial is the recipe's chain with settings Optuna proposes from `search.space` (the first trial
is the recipe's own settings where they lie in the space). The trial's stages run like a sweep
point's, so trials share every cached prefix; its candidate variants are then measured on the
search target beside the baseline, in one job, on the validation split: the accuracy drop is judged
there, and the objective is a candidate's p50 as a ratio to the baseline's, which cancels drift in
the machine's speed between trials. Every trial is written to search.json as it ends, so an
interrupted search resumes where it stopped; the final report measures each trial's chosen
candidate on the test split on every target, so a limit met on validation is judged on test too.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from compress.errors import RecipeError, UsageError
from compress.measure.jobs import Deployable, Inputs, batch_of, companions, measure_target
from compress.recipe.loading import trial_recipe
from compress.recipe.overrides import parse_field_path
from compress.recipe.schema import Search, SearchRange
from compress.report.schema import SearchResult, Trial
from compress.variants import merge_points

STATE = "search.json"  # in the output folder: the trials so far, to resume from
TRIAL_SECONDS = 10.0  # the longest a trial times one variant (the target's protocol otherwise applies)


def run_search(pipeline, sources: dict, splits, data_key: str) -> tuple[list, list]:
    """What Pipeline.run_points returns (the variants of every trial, and the stage failures); the
    trials and the winner go to `pipeline.search_result`."""
    import optuna

    from compress.recipe.checks import target_search_dirs
    from compress.targets import resolve_targets

    recipe, spec = pipeline.recipe, pipeline.recipe.search
    targets = resolve_targets(recipe.targets, target_search_dirs(recipe))
    target = next(t for t in targets if t.name == (spec.target or targets[0].name))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=sampler(spec, recipe.seed))
    spaces = {key: distribution(value) for key, value in spec.space.items()}
    result = SearchResult(target=target.name, batch_size=spec.batch_size, minimize=spec.minimize, sampler=spec.sampler,
                          val_examples=len(splits.y_val),
                          limits={k: v for k in ("max_accuracy_drop", "max_size_mb", "max_latency_ms")
                                  if (v := getattr(spec, k)) is not None})  # fmt: skip
    pipeline.search_result = result
    done, keys = resumed(pipeline.out / STATE, recipe.content_hash)
    start_values(study, recipe, spaces, skip=bool(done))
    per_point, failures, started = [], [], time.monotonic()
    for number in range(spec.trials):
        if number >= len(done) and spec.max_minutes and time.monotonic() - started > spec.max_minutes * 60:
            pipeline.log(f"search: {spec.max_minutes} minutes spent; no further trial starts")
            break
        proposal = ask(study, spaces, done[number] if number < len(done) else None, result.trials, spec)
        if proposal is None:
            pipeline.log("search: the sampler keeps proposing settings already tried; the search ends here")
            break
        trial, params = proposal
        record, found, failed = run_trial(pipeline, sources, splits, data_key, target, number, params, done)
        per_point.append((record.label, found))
        if number >= len(done):  # the chosen candidate's result in the cache, kept for a resumed run
            keys[number] = next((a.key for n, _, a in found if n == record.candidate), None)
        failures += failed
        result.trials.append(record)
        tell(study, trial, record, spec)
        pick_best(result, spec)
        save(pipeline.out / STATE, recipe.content_hash, result, keys)
        pipeline.log(f"search: trial {number} {summary(record)}")
    merged = chosen(merge_points(per_point, len(per_point)), set(keys.values()))
    named = {artifact.key: name for name, _, artifact in merged}
    for record in result.trials:  # as the report names them: pruned-int8[t3]
        record.candidate = named.get(keys.get(record.number), record.candidate)
    save(pipeline.out / STATE, recipe.content_hash, result, keys)
    return merged, failures


def chosen(merged: list, keys: set) -> list:
    """The variants the report measures in full: each trial's chosen candidate and the variants that
    are not a trial's own (the baseline and what every trial shares); a trial's other candidates stay
    in its row of the search table. A parent left out is replaced by its nearest kept ancestor."""
    made_by_trials = [entry for entry in merged if "[" in entry[0]]
    dropped = {name: parent for name, parent, artifact in made_by_trials if artifact.key not in keys}
    kept = []
    for name, parent, artifact in merged:
        if name in dropped:
            continue
        while parent in dropped:
            parent = dropped[parent]
        kept.append((name, parent, artifact))
    return kept


def sampler(spec: Search, seed: int):
    import optuna

    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, max(1, spec.trials // 3)),
                                      constraints_func=lambda t: t.user_attrs.get("constraints", [1.0]))  # fmt: skip


def distribution(value: SearchRange | list):
    import optuna.distributions as d

    if isinstance(value, list):
        return d.CategoricalDistribution(value)
    if value.integer:
        return d.IntDistribution(int(value.low), int(value.high), log=value.log, step=int(value.step or 1))
    return d.FloatDistribution(value.low, value.high, log=value.log, step=value.step)


def start_values(study, recipe, spaces: dict, skip: bool) -> None:
    """The recipe's own settings as the first trial, where every one lies in the space."""
    if skip:
        return
    values = {key: current_value(recipe, key) for key in spaces}
    if all(spaces[k]._contains(spaces[k].to_internal_repr(v)) for k, v in values.items() if v is not None):
        study.enqueue_trial({k: v for k, v in values.items() if v is not None})


def current_value(recipe, key: str) -> Any:
    _, stage, *fields = parse_field_path(key)
    node = recipe.stages[stage] if isinstance(stage, int) else recipe.stage(stage)
    for name in fields:
        node = getattr(node, str(name), None)
    return node


def ask(study, spaces: dict, previous: Trial | None, tried: list[Trial], spec: Search,
        attempts: int = 20) -> tuple[Any, dict] | None:  # fmt: skip
    """The next trial and its settings: a resumed trial's own, or Optuna's proposal. Settings already
    tried are not run again: the sampler is told their result and asked again (None when it keeps
    proposing tried ones: a small space is exhausted)."""
    if previous is not None:
        study.enqueue_trial(previous.params)
    for _ in range(attempts):
        trial = study.ask(spaces)
        twin = next((t for t in tried if t.params == trial.params), None)
        if previous is not None or twin is None:
            return trial, dict(trial.params)
        tell(study, trial, twin, spec)
    return None


def run_trial(pipeline, sources, splits, data_key, target, number: int, params: dict, done: list[Trial]):
    """(record, variants found, stage failures) of one trial; a resumed trial is not measured again."""
    label, began = f"t{number}", time.monotonic()
    record = Trial(number=number, label=label, params=params)
    try:
        point = trial_recipe(pipeline.recipe, params)
    except RecipeError as exc:
        record.error = f"settings not valid: {exc.problems[0].message}"
        return record, [], []
    pipeline.log(f"search: trial {number}: " + ", ".join(f"{k}={v}" for k, v in params.items()))
    outputs = dict(sources)
    failures = pipeline.run_stages(point, outputs, splits, data_key, label)
    found = pipeline.variants(point, outputs)
    if number < len(done):
        return done[number], found, failures
    pair = candidates(found, pipeline.recipe)
    if pair is None:
        record.error = failures[0].message if failures else "the trial made no candidate variant"
    else:
        record = measure(record, pair, target, splits, pipeline)
    record.seconds = round(time.monotonic() - began, 2)
    return record, found, failures


def candidates(found: list, recipe) -> tuple | None:
    """(baseline, [candidates]) among a trial's variants, or None when it made no candidate: the
    variant `search.candidate` names, or every variant but the baseline, so that the measurements
    decide whether INT8 (or pruning alone) is the faster choice on this target."""
    spec = recipe.search
    names = {entry[0]: entry for entry in found}
    baseline = names.get(recipe.report.baseline) if recipe.report.baseline else None
    baseline = baseline or next((e for e in found if e[2].meta.get("precision", "fp32") == "fp32"), None)
    if baseline is None:
        return None
    if spec.candidate:
        offered = [names[spec.candidate]] if spec.candidate in names else []
    else:
        offered = [e for e in found if e[2].key != baseline[2].key]
    return (baseline, offered) if offered else None


def measure(record: Trial, pair: tuple, target, splits, pipeline) -> Trial:
    """The candidates and the baseline on the target, interleaved, on the validation split: the
    trial as its best candidate that meets the limits (else the one that misses them least), with
    the others beside it."""
    spec, task = pipeline.recipe.search, pipeline.task
    (base_name, _, base), offered = pair
    models = {base_name: deployable(base), **{name: deployable(artifact) for name, _, artifact in offered}}
    p = target.protocol  # a trial ranks settings: at most TRIAL_SECONDS per variant (the report measures in full)
    capped = p.model_copy(update={"max_seconds": max(p.min_seconds, min(p.max_seconds, TRIAL_SECONDS))})
    one = target.model_copy(update={"batch_sizes": [spec.batch_size], "protocol": capped})
    inputs = Inputs({spec.batch_size: task.feeds(batch_of(splits.x_val, spec.batch_size))}, splits.x_val, task.feeds,
                    splits.y_val)  # fmt: skip
    results = measure_target(one, models, inputs, task, pipeline.log)
    options = [option(record, results, base_name, name, artifact, spec) for name, _, artifact in offered
               if name in results.latency and name in results.accuracy]  # fmt: skip
    if results.error or base_name not in results.latency or not options:
        record.candidate = offered[0][0]
        record.error = (
            results.error or results.errors.get(base_name) or next(iter(results.errors.values()), "not measured")
        )
        return record
    best = min(
        options, key=lambda o: (not o.feasible, objective(o, spec) if o.feasible else sum(constraint_values(o, spec)))
    )
    return best.model_copy(update={"others": {o.candidate: {"val_accuracy": o.val_accuracy, "p50_ms": o.p50_ms,
                                              "size_mb": o.size_mb, "feasible": o.feasible}
                                              for o in options if o is not best}})  # fmt: skip


def option(record: Trial, results, base_name: str, name: str, artifact, spec: Search) -> Trial:
    """One candidate of a trial as measured."""
    files = [artifact.path, *companions(artifact.path, artifact.kind)]
    measured = record.model_copy(update={
        "candidate": name, "val_accuracy": results.accuracy[name].value,
        "baseline_val_accuracy": results.accuracy[base_name].value, "p50_ms": results.latency[name][0].p50_ms,
        "baseline_p50_ms": results.latency[base_name][0].p50_ms,
        "size_mb": round(sum(f.stat().st_size for f in files) / 1e6, 4)})  # fmt: skip
    measured.violations = violations(measured, spec)
    measured.feasible = not measured.violations
    return measured


def deployable(artifact) -> Deployable:
    return Deployable(artifact.path, artifact.kind, artifact.meta.get("precision", "fp32"), artifact.meta.get("parts"))


def limits(record: Trial, spec: Search) -> list[tuple[float, float, str]]:
    """(measured value, limit, the miss in words) for each limit the search sets."""
    drop = record.baseline_val_accuracy - record.val_accuracy
    every = [(drop, spec.max_accuracy_drop, f"accuracy drop {drop:.2f} > {spec.max_accuracy_drop} points (validation)"),
             (record.size_mb, spec.max_size_mb, f"size {record.size_mb:.3g} > {spec.max_size_mb} MB"),
             (record.p50_ms, spec.max_latency_ms, f"p50 {record.p50_ms:.4g} > {spec.max_latency_ms} ms")]  # fmt: skip
    return [entry for entry in every if entry[1] is not None]


def violations(record: Trial, spec: Search) -> list[str]:
    return [words for value, limit, words in limits(record, spec) if value > limit]


def objective(record: Trial, spec: Search) -> float:
    return record.size_mb if spec.minimize == "size" else record.p50_ms / record.baseline_p50_ms


def tell(study, trial, record: Trial, spec: Search) -> None:
    """Optuna learns the objective and, for the constrained sampler, how far each limit was missed."""
    import optuna

    if record.error or record.p50_ms is None:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    trial.set_user_attr("constraints", constraint_values(record, spec))
    study.tell(trial, objective(record, spec))


def constraint_values(record: Trial, spec: Search) -> list[float]:
    """One value per limit, positive by how much it was missed (Optuna's convention)."""
    return [value - limit for value, limit, _ in limits(record, spec)] or [0.0]


# Trials whose p50 ratios lie this close are tied: a shared CPU moves measured latency that much
# between trials (the baseline's own p50 moved between 1.10 and 1.19 ms within one budget.yaml search).
P50_TIE = 0.05


def pick_best(result: SearchResult, spec: Search) -> None:
    """The feasible trial with the lowest objective; among those within timing noise of it (p50
    only), the one with the most accuracy to spare, so a difference the clock cannot tell does not
    buy a choice that only just met the limit on validation."""
    feasible = [t for t in result.trials if t.feasible]
    if not feasible:
        result.best, result.why = None, "no trial met every limit" if result.trials else "no trial ran"
        return
    fastest = min(feasible, key=lambda t: objective(t, spec))
    low = objective(fastest, spec)
    tied = [t for t in feasible if objective(t, spec) <= low * (1 + P50_TIE)] if spec.minimize == "p50" else [fastest]
    best = max(tied, key=lambda t: (t.val_accuracy, -objective(t, spec)))
    result.best = best.number
    measure_word = "size" if spec.minimize == "size" else "p50 relative to the baseline"
    limits = ", ".join(f"{k} {v}" for k, v in result.limits.items()) or "no limits"
    result.why = (f"trial {fastest.number} has the lowest {measure_word} ({low:.4g}) of the "
                  f"{len(feasible)} of {len(result.trials)} trials that met {limits}")  # fmt: skip
    if best is not fastest:
        result.why += (f"; trial {best.number} ({objective(best, spec):.4g}) is within {P50_TIE:.0%} of it, timing "
                       f"noise, and kept more accuracy on validation ({best.val_accuracy:.2f} against "
                       f"{fastest.val_accuracy:.2f}), so it wins")  # fmt: skip


def summary(record: Trial) -> str:
    if record.error:
        return f"failed: {record.error}"
    verdict = "meets the limits" if record.feasible else "misses: " + "; ".join(record.violations)
    return (f"{record.candidate}: val {record.val_accuracy:.2f}% (baseline {record.baseline_val_accuracy:.2f}%), "
            f"p50 {record.p50_ms:.4g} ms (baseline {record.baseline_p50_ms:.4g}), {record.size_mb:.3g} MB; {verdict}")  # fmt: skip


def resumed(path: Path, recipe_hash: str) -> tuple[list[Trial], dict[int, str]]:
    """The measured trials of an interrupted search of this same recipe, in order, and the cache key
    of each one's chosen candidate."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [], {}
    if state.get("recipe_hash") != recipe_hash:
        return [], {}
    try:
        trials = [Trial.model_validate(t) for t in state.get("trials", [])]
        return trials, {int(k): v for k, v in state.get("candidate_keys", {}).items()}
    except ValueError as exc:
        raise UsageError(
            f"{path} is not a search state compress wrote: {exc}", hint="delete it to start over"
        ) from None


def save(path: Path, recipe_hash: str, result: SearchResult, keys: dict[int, str | None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"recipe_hash": recipe_hash, "candidate_keys": keys, **result.model_dump()}
    tmp.write_text(json.dumps(state, indent=1), encoding="utf-8")
    os.replace(tmp, path)
