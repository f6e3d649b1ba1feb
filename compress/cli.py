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
            err = _console()
            for i, line in enumerate(exc.lines()):
                err.print(("error: " if i == 0 else "") + line, markup=False, soft_wrap=True)  # one line each
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _console().print("interrupted; run the same command again to resume from the cached stages", markup=False)
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


@app.command()
@handled
def run(
    recipe: RecipeArg,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="output folder [default: reports/<name>]")
    ] = None,
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="only print the final table")] = False,
) -> None:
    """Run a recipe end to end and write report.json, report.md and plots."""
    from compress.pipeline import output_dir, run_recipe
    from compress.recipe import load_recipe
    from compress.report.render import print_tables

    loaded = load_recipe(recipe, set_ or ())
    err = _console()
    log = (lambda msg: None) if quiet else (lambda msg: err.print(msg, markup=False))
    report = run_recipe(loaded, output, log=log, show_progress=not quiet)
    print_tables(report, _console(stderr=False))
    err.print(f"report written to {output_dir(loaded, output)}/report.md", markup=False)
    if loaded.gates and not loaded.gates.empty():
        from compress.report.gates import check

        _finish_gates(check(report, loaded.gates), None)
    _finish_targets(report)


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
    err = _console()
    log = (lambda msg: None) if quiet else (lambda msg: err.print(msg, markup=False))
    report = run_profile(models, targets, output, sequence_length, log)
    print_tables(report, _console(stderr=False))
    err.print(f"report written to {output}/report.md", markup=False)
    _finish_targets(report)


def _finish_targets(report) -> None:
    """Exit 6 when a target could not be measured (after the report was written)."""
    failed = [t for t in report.targets if t.error]
    for t in failed:
        _console().print(f"error: target {t.name}: {t.error}", markup=False, soft_wrap=True)
    if failed:
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
    from compress.report.schema import Report

    source = folder / "report.json"
    if not source.is_file():
        raise UsageError(f"{source} not found", hint="pass the output folder of a finished `compress run`")
    loaded = Report.load(source)
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
) -> None:
    """Check CI gates on a report (or a model file); exit 0 when all hold, 1 when one fails."""
    from pydantic import ValidationError

    from compress.errors import check_output_folder
    from compress.report.gates import Gates, check, check_model_file

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
    try:
        gates = Gates.model_validate({**(loaded.gates or {}), **options})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(f"bad gate option {'.'.join(map(str, first['loc']))}: {first['msg']}",
                         hint="see `compress gate --help`") from None  # fmt: skip
    if gates.empty():
        raise UsageError(
            "no gates to check", hint="give limits such as --max-size-mb, or a report whose recipe had gates"
        )
    _finish_gates(check(loaded, gates, _load_report(baseline) if baseline else None), junit)


def _load_report(path: Path | None):
    from compress.report.schema import Report

    if path is None or not path.is_file():
        raise UsageError(f"report {path} not found", hint="pass the report.json of a finished `compress run`")
    return Report.load(path)


def _finish_gates(results, junit: Path | None) -> None:
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
        table.add_row(*(Text(c) for c in (r.gate, r.variant, r.limit, r.value, "pass" if r.passed else "FAIL")))
    _console(stderr=False).print(table)
    if junit:
        write_atomic(junit, junit_xml(results))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with writing(summary), open(summary, "a", encoding="utf-8") as f:
            f.write(markdown(results))
    if not all(r.passed for r in results):
        raise typer.Exit(ExitCode.GATE_FAILED)


def entry() -> None:
    """Console-script entry point."""
    app()
