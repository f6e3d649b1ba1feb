"""report.html renders in a real headless Chromium, offline, with one table row per variant, and its
plots answer hovers and legend clicks."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from compress.pipeline import render_all
from compress.report.pareto import mark_fronts
from compress.report.schema import Report
from tests.test_report import sample_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic"]  # fmt: skip
NO_CHROMIUM = "chromium is not installed (Debian package 'chromium')"
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None


def two_target_report() -> Report:
    """sample_report on a second, slower target, in two families, with each p50's interval."""
    report = sample_report()
    report.targets.append(report.targets[0].model_copy(update={"name": "t2"}))
    report.targets[0].state = {"state_before": {"hostname": "box", "cpu": {"model": "cpu", "cpu_mhz": [2600, 2600],
                                                "load_average": [0.5, 0.4, 0.3]}}, "power": {"mean_mw": {"VDD": 900}}}  # fmt: skip
    for i, v in enumerate(report.variants):
        v.details["arch"] = "cnn" if i < 2 else "vit"
        for lat in v.latency:
            lat.p50_ci_low_ms, lat.p50_ci_high_ms = lat.p50_ms * 0.95, lat.p50_ms * 1.05
        v.latency += [lat.model_copy(update={"target": "t2", "p50_ms": lat.p50_ms * 3}) for lat in v.latency]
        v.accuracy_per_target.append(v.accuracy.model_copy(update={"target": "t2"}))
    mark_fronts(report)
    return report


def visible_text(page: str) -> str:
    """The page less its scripts (plotly.js and each plot's data)."""
    return re.sub(r"<script>.*?</script>", "", page, flags=re.S)


def test_html_is_self_contained(tmp_path):
    report = sample_report()
    report.variants[2].name = "worse </script><b>"  # in the plot's data too, where it must not end the script
    mark_fronts(report)
    render_all(report, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "</script><b>" not in page and page.count("</script>") == page.count("<script>")
    assert "Plotly.newPlot(" in page and "<script src" not in page, "plotly.js is inlined, not linked"
    assert not re.search(r"(src|href)=\"https?://", visible_text(page)), "the page must not fetch anything"
    assert len(page) < 8_000_000  # plotly.js is most of it


def test_a_profiled_model_keeps_its_png_plot(tmp_path):
    """Without accuracy there is no Pareto plot: the latency PNG stays, and plotly.js is left out."""
    report = sample_report()
    for v in report.variants:
        v.accuracy, v.accuracy_per_target = None, []
    render_all(report, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page and "Plotly" not in page and len(page) < 500_000


def test_environment_reads_as_words_not_python_dicts(tmp_path):
    report = two_target_report()
    report.environment |= {"machine": "x86_64", "gpu": {"name": "none"}}
    render_all(report, tmp_path)
    text = visible_text((tmp_path / "report.html").read_text())
    assert "warmup 1, min_iterations 10, min_seconds 1, rounds 2" in text
    assert "load 0.5, 0.4, 0.3 before" in text and "VDD 900 mW" in text and "name none" in text
    assert not re.search(r"[{\[]\s*(&#x27;|'|&quot;|\")", text), "Python's dict or list text in the page"


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_html_renders_in_chromium_with_one_row_per_variant(tmp_path):
    report = sample_report()
    render_all(report, tmp_path)
    url = (tmp_path / "report.html").as_uri()
    profile = tmp_path / "profile"
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    bodies = re.findall(r'<table class="variants">.*?<tbody>(.*?)</tbody>', dom.stdout, re.S)
    assert len(bodies) == len(report.targets)
    assert all(body.count("<tr") == len(report.variants) for body in bodies)
    shot = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={tmp_path / 'page.png'}",
                           "--window-size=1200,1600", url], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert shot.returncode == 0 and (tmp_path / "page.png").stat().st_size > 10_000


VISIBLE = "id => document.getElementById(id).data.map(trace => trace.visible !== 'legendonly')"


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
@pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install -r requirements-dev.txt)")
def test_plots_toggle_targets_and_families_and_hover_offline(tmp_path):
    render_all(two_target_report(), tmp_path)
    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                    "--disable-dev-shm-usage"])  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.goto((tmp_path / "report.html").as_uri())
            page.wait_for_selector("#plot-all .scatterlayer .point")
            # The across-targets plot: t2's legend title hides the whole target, an entry one family.
            assert page.evaluate(VISIBLE, "plot-all") == [True] * 6  # cnn, vit, front on t; the same on t2
            page.locator("#plot-all .legend2titletoggle").click()
            page.wait_for_function(f"({VISIBLE})('plot-all').filter(Boolean).length === 3")
            assert page.evaluate(VISIBLE, "plot-all") == [True] * 3 + [False] * 3
            page.locator("#plot-0 .legend .legendtoggle").first.click()  # family cnn on t
            page.wait_for_function(f"!({VISIBLE})('plot-0')[0]")
            assert page.evaluate(VISIBLE, "plot-0") == [False, True, True, True]  # cnn hidden; vit, front, knee
            # Hover int8 (the fastest point on t): its name, lineage and p50 with its interval.
            page.locator("#plot-0 .legend .legendtoggle").first.click()
            page.wait_for_function(f"({VISIBLE})('plot-0')[0]")
            point = page.locator("#plot-0 .scatterlayer .trace").first.locator(".point").nth(1)
            point.scroll_into_view_if_needed()
            box = point.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            hover = page.wait_for_selector("#plot-0 .hoverlayer .hovertext").text_content()
        finally:
            browser.close()
    assert "int8 on t" in hover and "parent fp32" in hover and "1.000 MB" in hover and "precision fp32" in hover
    assert "p50 0.5 ms, 95 % interval [0.475, 0.525] ms (batch 1)" in hover, hover
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
