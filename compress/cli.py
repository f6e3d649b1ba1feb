"""The `compress` command. Each command is one function; errors become exit codes in `main()`."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from compress.errors import CompressError, ExitCode, UsageError, first_line

app = typer.Typer(
    help="Compress PyTorch models for edge hardware: prune, distill, quantize, export, measure.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

RecipeArg = Annotated[Path, typer.Argument(help="recipe YAML file", show_default=False)]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="override a field, e.g. --set stages[train].epochs=3 (repeatable)"),
]


def handled(command: Callable) -> Callable:
    """Turn every known failure into one plain message and its documented exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CompressError as exc:
            for i, line in enumerate(exc.lines()):
                _say(("error: " if i == 0 else "") + line)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _say("interrupted; run the same command again to resume from the cached stages")
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except OSError as exc:  # the system refused a file operation not covered above (disk full, no permission)
            where = f"{exc.filename}: " if exc.filename else ""
            _console().print(f"error: {where}{exc.strerror or first_line(exc)}", markup=False, soft_wrap=True)
            _console().print("hint: check free space and permissions there", markup=False)
            raise typer.Exit(ExitCode.STAGE_FAILED) from None

    return wrapper


def _console(stderr: bool = True):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Off a terminal (CI logs, pipes) rich would wrap tables at 80 columns.
    return Console(stderr=stderr, highlight=False, width=None if stream.isatty() else 160)


def _say(line: str) -> None:
    """One message line on stderr, never wrapped: a CI log keeps it whole, a terminal wraps it itself."""
    _console().print(line, markup=False, soft_wrap=True)


def _warn(message: str) -> None:
    _say(f"WARNING: {message}")


@app.command()
@handled
def run(
    recipe: RecipeArg,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="output folder [default: reports/<name>]")
    ] = None,
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="only print the final table")] = False,
    executor: Annotated[
        Optional[str], typer.Option(help="local, processes or ray [default: the recipe's executor]")
    ] = None,
    jobs: Annotated[Optional[int], typer.Option(help="stage tasks at a time (processes, ray)")] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="ray: auto or ray://host:port")] = None,
    nproc: Annotated[
        Optional[int], typer.Option("--nproc", min=1, help="train data-parallel in N processes (under torchrun)")
    ] = None,
) -> None:
    """Run a recipe end to end and write report.json, report.md and plots."""
    from compress import distributed
    from compress.pipeline import check_executor, output_dir, run_recipe
    from compress.recipe import load_recipe
    from compress.report.render import print_tables

    chosen = {"executor.type": executor, "executor.jobs": jobs, "executor.address": ray_address}
    overrides = (*(set_ or ()), *(f"{k}={v}" for k, v in chosen.items() if v is not None))
    loaded = load_recipe(recipe, overrides)  # a bad recipe fails here, once, before any process starts
    check_executor(loaded, nproc or 1)  # before any process starts
    if nproc is not None and nproc > 1:
        args = [str(recipe), *(["--output", str(output)] if output else []), *(["--quiet"] if quiet else [])]
        raise typer.Exit(distributed.launch(nproc, ["run", *args, *(f"--set={s}" for s in overrides)]))
    quiet = quiet or not distributed.leader()  # rank 0 speaks for the run
    log = (lambda msg: None) if quiet else _say
    report = run_recipe(loaded, output, log=log, show_progress=not quiet)
    if report is None:
        return
    print_tables(report, _console(stderr=False))
    _say(f"report written to {output_dir(loaded, output)}/report.md")
    _finish_failures(report)
    if loaded.gates and not loaded.gates.empty():
        from compress.report.gates import check

        _finish_gates(check(report, loaded.gates, warn=_warn), None)
    _finish_targets(report)


@app.command()
@handled
def auto(
    model: Annotated[str, typer.Option(help="the model: a zoo name or prefix:name, e.g. torchvision:resnet18")],
    data: Annotated[str, typer.Option(help="digits, imagefolder:DIR, npz:FILE, ...")] = "digits",
    target: Annotated[str, typer.Option(help="a target's name or YAML file")] = "cpu-onnxruntime",
    max_accuracy_drop: Annotated[float, typer.Option(help="points below the model, on validation")] = 0.5,
    checkpoint: Annotated[
        Optional[Path], typer.Option(help="the model's weights; without, it is trained first")
    ] = None,
    image_size: Annotated[Optional[int], typer.Option(help="model input side [default: the data source's]")] = None,
    channels: Annotated[Optional[int], typer.Option(help="1 or 3 [default: the data source's]")] = None,
    task: Annotated[
        Optional[str],
        typer.Option(help="the data's task, e.g. embedding for a sentence encoder [default: classification]"),
    ] = None,
    trials: Annotated[int, typer.Option(min=1, help="search trials at most")] = 12,
    epochs: Annotated[int, typer.Option(min=1, help="training epochs (fine-tuning searches around half of it)")] = 10,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="output folder [default: reports/auto-<model>]")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="only print the final table")] = False,
) -> None:
    """Search prune, distil and INT8 settings for a model within an accuracy budget on a target; the
    recipe it used is written to OUTPUT/recipe.yaml."""
    from compress.auto import auto_recipe, recipe_name, write_recipe

    recipe = auto_recipe(model, data, target, max_accuracy_drop, trials, epochs, checkpoint, image_size, channels, task)
    folder = output or Path("reports") / recipe_name(model)
    path = write_recipe(recipe, folder)
    _say(f"recipe written to {path}")
    run(path, output=folder, quiet=quiet)


@app.command()
@handled
def profile(
    models: Annotated[list[Path], typer.Argument(help="ONNX or OpenVINO .xml files", show_default=False)],
    target: Annotated[
        list[str], typer.Option("--target", "-t", help="target name or YAML file (repeatable)", show_default=False)
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="output folder")] = Path("reports/profile"),
    sequence_length: Annotated[int, typer.Option(help="length of free non-batch input dimensions")] = 128,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="only print the final table")] = False,
) -> None:
    """Measure existing model files on targets (here or over SSH) and write the same report files."""
    from compress.measure.profile import profile as run_profile
    from compress.report.render import print_tables
    from compress.targets import resolve_targets

    targets = resolve_targets(target, [Path.cwd(), Path.cwd() / "targets"])
    log = (lambda msg: None) if quiet else _say
    report = run_profile(models, targets, output, sequence_length, log)
    print_tables(report, _console(stderr=False))
    _say(f"report written to {output}/report.md")
    _finish_targets(report)


def _finish_failures(report) -> None:
    """Exit 4 when a stage failed outside a sweep (after the report was written with the rest)."""
    failed = [f for f in report.failures if not f.point]
    for f in failed:
        _say(f"error: {f.line()}")
        if f.hint:
            _say(f"hint: {f.hint}")
    if failed:
        raise typer.Exit(ExitCode.STAGE_FAILED)


def _finish_targets(report) -> None:
    """Exit 6 when a target, or a variant on a target, could not be measured (after the report
    was written): a run that measured nothing must not pass."""
    errors = [f"target {t.name}: {t.error}" for t in report.targets if t.error]
    errors += [f"{v.name} on {e}" for v in report.variants if not v.name.startswith("failed[") for e in v.errors]
    for line in errors:
        _say(f"error: {line}")
    if errors or not report.variants:
        raise typer.Exit(ExitCode.TARGET_FAILED)


@app.command()
@handled
def validate(recipe: RecipeArg, set_: SetOpt = None) -> None:
    """Check a recipe (and the targets it names) without running it."""
    from compress.recipe import load_recipe

    loaded = load_recipe(recipe, set_ or ())
    stages = " → ".join(f"{s.name} ({s.type})" for s in loaded.stages)
    typer.echo(f"{recipe}: valid: {stages}")


@app.command()
@handled
def schema() -> None:
    """Print the JSON Schema of recipes (for editors and other tools)."""
    from compress.recipe import recipe_json_schema

    typer.echo(json.dumps(recipe_json_schema(), indent=2))


@app.command()
@handled
def report(folder: Annotated[Path, typer.Argument(help="output folder holding report.json")]) -> None:
    """Re-render report.md, report.html and the plots from a folder's report.json."""
    from compress.report.outputs import render_all
    from compress.report.render import print_tables

    source = folder / "report.json"
    if not source.is_file():
        raise UsageError(f"{source} not found", hint="pass the output folder of a finished `compress run`")
    loaded = _load_report(source)
    render_all(loaded, folder)
    print_tables(loaded, _console(stderr=False))


@app.command()
@handled
def compare(
    old: Annotated[Path, typer.Argument(help="the earlier report.json")],
    new: Annotated[Path, typer.Argument(help="the later report.json")],
) -> None:
    """Print what changed between two reports: size, p50 latency and metric per variant and target."""
    from rich.table import Table
    from rich.text import Text

    from compress.report.compare import compare_rows

    table = Table(title=f"{old} → {new}")
    for column in ("variant", "target", "size", "p50", "metric (points)"):
        table.add_column(column)
    for row in compare_rows(_load_report(old), _load_report(new)):
        table.add_row(*(Text(cell) for cell in row))
    _console(stderr=False).print(table)


@app.command()
@handled
def gate(
    report: Annotated[Optional[Path], typer.Argument(help="report.json to check")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="check a bare model file's size instead")] = None,
    max_size_mb: Annotated[Optional[float], typer.Option(help="largest allowed file, MB")] = None,
    max_latency_ms: Annotated[Optional[float], typer.Option(help="slowest allowed latency, ms")] = None,
    target: Annotated[Optional[str], typer.Option(help="target of --max-latency-ms [default: every target]")] = None,
    percentile: Annotated[str, typer.Option(help="p50, p90 or p99 for --max-latency-ms")] = "p50",
    batch_size: Annotated[int, typer.Option(help="batch size for --max-latency-ms")] = 1,
    min_accuracy: Annotated[Optional[float], typer.Option(help="lowest allowed metric value")] = None,
    max_accuracy_drop: Annotated[Optional[float], typer.Option(help="points below the baseline variant")] = None,
    baseline: Annotated[Optional[Path], typer.Option("--baseline", help="previous report.json for regressions")] = None,
    max_latency_regression: Annotated[Optional[str], typer.Option(help="e.g. 5%: p50 slower than --baseline")] = None,
    max_size_regression: Annotated[Optional[str], typer.Option(help="e.g. 0%: larger than --baseline")] = None,
    max_accuracy_regression: Annotated[Optional[float], typer.Option(help="points below --baseline")] = None,
    variant: Annotated[Optional[list[str]], typer.Option("--variant", help="only these variants (repeatable)")] = None,
    junit: Annotated[Optional[Path], typer.Option("--junit", help="write JUnit XML here")] = None,
    allow_disturbed: Annotated[
        bool, typer.Option(help="judge latencies timed under other load (with a warning)")
    ] = False,
    allow_different_hardware: Annotated[
        bool, typer.Option(help="compare with a --baseline from another CPU or runtime version (with a warning)")
    ] = False,
) -> None:
    """Check CI gates on a report (or a model file); exit 0 when all hold, 1 when one fails, 2 when a
    gate has nothing to check."""
    from compress.errors import check_output_folder
    from compress.report.gates import check, check_model_file

    if junit is not None:
        check_output_folder(junit.parent, f"--junit {junit}")
    if model is not None:
        if not model.is_file():
            raise UsageError(f"model file {model} not found", hint="pass the path of an .onnx, .xml or engine file")
        if max_size_mb is None:
            raise UsageError(
                "--model needs --max-size-mb", hint="e.g. compress gate --model model.onnx --max-size-mb 4"
            )
        _finish_gates([check_model_file(model, max_size_mb)], junit)
        return
    loaded = _load_report(report)
    options = {k: v for k, v in dict(
        variants=variant or None, max_size_mb=max_size_mb, min_accuracy=min_accuracy,
        max_accuracy_drop=max_accuracy_drop, max_latency_regression=max_latency_regression,
        max_size_regression=max_size_regression, max_accuracy_regression=max_accuracy_regression,
        max_latency_ms=[{"max_ms": max_latency_ms, "target": target, "percentile": percentile,
                         "batch_size": batch_size}] if max_latency_ms is not None else None,
    ).items() if v is not None}  # fmt: skip
    gates = _gates(loaded, options, baseline)
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        _warn(message)

    previous = _load_report(baseline) if baseline else None
    results = check(loaded, gates, previous, allow_disturbed=allow_disturbed,
                    allow_different_hardware=allow_different_hardware, warn=warn)  # fmt: skip
    _finish_gates(results, junit, warnings)


def _gates(loaded, options: dict, baseline: Path | None):
    """The report's stored gates overridden by the command line's; an error when none is left to check."""
    from pydantic import ValidationError

    from compress.report.gates import Gates

    try:
        gates = Gates.model_validate({**(loaded.gates or {}), **options})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(f"bad gate option {'.'.join(map(str, first['loc']))}: {first['msg']}",
                         hint="see `compress gate --help`") from None  # fmt: skip
    regression = gates.regression_limits()
    if baseline is None and regression:
        given = [g for g in regression if g in options]
        if given:
            raise UsageError(f"--{given[0].replace('_', '-')} needs --baseline OLD.json", hint="the previous report")
        _warn(f"{', '.join(regression)} skipped: no --baseline")
        gates = gates.model_copy(update=dict.fromkeys(regression))
    if gates.empty():
        raise UsageError(
            "no gates to check", hint="give limits such as --max-size-mb, or a report whose recipe had gates"
        )
    return gates


def _load_report(path: Path | None):
    from compress.report.schema import Report

    if path is None or not path.is_file():
        raise UsageError(f"report {path} not found", hint="pass the report.json of a finished `compress run`")
    return Report.load(path)


def _finish_gates(results, junit: Path | None, warnings: list[str] | tuple[str, ...] = ()) -> None:
    """Print the verdicts, write JUnit / the GitHub step summary, and exit 1 if any gate failed."""
    import os

    from rich.table import Table
    from rich.text import Text

    from compress.errors import writing
    from compress.report.gates import junit_xml, markdown
    from compress.report.schema import write_atomic

    table = Table(title="gates")
    for column in ("gate", "variant", "limit", "value", "verdict"):
        table.add_column(column)
    for r in results:
        table.add_row(*(Text(c) for c in (r.gate, r.variant, r.limit, r.value, r.verdict)))
    _console(stderr=False).print(table)
    if junit:
        try:
            write_atomic(junit, junit_xml(results))
        except CompressError as exc:  # an OutputError: the system's reason is after the path
            raise UsageError(f"cannot write --junit {junit}: {exc.message.rpartition(': ')[2]}") from None
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            with writing(summary), open(summary, "a", encoding="utf-8") as f:
                f.write(markdown(results, warnings))
        except CompressError as exc:
            _say(f"warning: cannot append to $GITHUB_STEP_SUMMARY ({summary}): {exc.message}")
    if not all(r.passed for r in results):
        raise typer.Exit(ExitCode.GATE_FAILED)


def entry() -> None:
    """Console-script entry point (and `python -m compress`, as torchrun starts each rank)."""
    from compress.distributed import record_exit

    code: int | str | None = 1
    try:
        app()
    except SystemExit as exc:
        code = exc.code
        raise
    finally:
        record_exit(code)
