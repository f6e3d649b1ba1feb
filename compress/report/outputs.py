"""Every output rendered from report.json: report.md, report.html and one Pareto plot per target."""

from __future__ import annotations

from pathlib import Path

from compress.report.render import to_markdown
from compress.report.schema import Report, write_atomic


def render_all(report: Report, folder: Path, plot: bool = True) -> None:
    """Every output rendered from report.json: report.md, report.html and one Pareto plot per target."""
    from compress.report.html import to_html
    from compress.report.plots import render_plots, write_plots

    plots = render_plots(report)
    write_atomic(folder / "report.md", to_markdown(report))
    write_atomic(folder / "report.html", to_html(report, plots))
    if plot:
        write_plots(report, folder, plots)
