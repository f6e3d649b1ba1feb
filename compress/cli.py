"""The `compress` command. Each command is one function; errors become exit codes in `main()`."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from compress.errors import CompressError, ExitCode, UsageError

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
                err.print(("error: " if i == 0 else "") + line, markup=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _console().print("interrupted; run the same command again to resume from the cached stages", markup=False)
            raise typer.Exit(ExitCode.INTERRUPTED) from None

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
    """Re-render report.md and the plots from a folder's report.json."""
    from compress.pipeline import render_all
    from compress.report.render import print_tables
    from compress.report.schema import Report

    source = folder / "report.json"
    if not source.is_file():
        raise UsageError(f"{source} not found", hint="pass the output folder of a finished `compress run`")
    loaded = Report.load(source)
    render_all(loaded, folder)
    print_tables(loaded, _console(stderr=False))


def entry() -> None:
    """Console-script entry point."""
    app()
