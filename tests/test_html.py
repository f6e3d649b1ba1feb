"""report.html renders in a real headless Chromium, offline, with one table row per variant."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from compress.pipeline import render_all
from tests.test_report import sample_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic"]  # fmt: skip


def test_html_is_self_contained(tmp_path):
    report = sample_report()
    render_all(report, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page
    assert not re.search(r"(src|href)=\"https?://", page), "the page must not fetch anything"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package 'chromium')")
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
