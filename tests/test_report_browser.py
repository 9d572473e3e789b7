"""report.html opens in real headless Chromium (Debian's, via Playwright) with its table and its plot."""
from pathlib import Path

import pytest

from bench.report import build_report

from .test_report import synthetic
from .test_serve_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed "
                                "(apt-get install -y chromium)")


def test_report_html_renders_table_and_plot(tmp_path):
    from playwright.sync_api import sync_playwright
    synthetic(tmp_path)
    out = build_report("syn", tmp_path / "artifacts", tmp_path / "reports", budget_ms=2)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto((out["dir"] / "report.html").resolve().as_uri())
        rows = page.locator("table.results tbody tr")
        assert rows.count() == 10  # 5 variants x batch 1 and 32
        assert "bilstm-distilled" in page.locator("table.results").first.inner_text()
        width = page.locator("img#pareto").evaluate("img => img.complete ? img.naturalWidth : 0")
        assert width > 500  # the embedded PNG decoded
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
