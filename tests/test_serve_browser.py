"""End to end in real headless Chromium (Debian's `chromium`, driven by Playwright): the page over the tiny run
compares a typed sentence across every model, runs a batch, and shows errors; screenshots go to test-artifacts/."""
from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import expect, sync_playwright

from bench.zoo import native_predictors
from serve import create_app
from serve.models import pick_examples

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian's chromium is not installed (no /usr/bin/chromium, none on PATH); "
                                       "install it with: apt-get install -y chromium")


@pytest.fixture(scope="module")
def names(tiny_run):
    return [p.name for p in native_predictors(tiny_run)]


@pytest.fixture(scope="module")
def server_url(tiny_run):
    labels = tiny_run.labels()
    app = create_app(native_predictors(tiny_run), pick_examples(tiny_run.split(), labels, 6), labels, [], "tiny")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "the test server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def page(server_url):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.script_errors = []
        page.on("pageerror", lambda exc: page.script_errors.append(str(exc)))
        page.goto(server_url)
        yield page
        browser.close()


def test_typed_sentence_shows_every_model_with_probability_and_latency(page, names):
    expect(page.locator("#model-list input")).to_have_count(len(names))
    page.fill("#text", "A gripping, beautifully acted film that never lets go.")
    page.click("#compare")
    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(len(names))
    for name in names:
        row = page.locator(f'#results tr[data-model="{name}"]')
        expect(row.locator(".prob").first).to_have_text(re.compile(r"^\d+\.\d%$"))
        expect(row.locator(".latency")).to_have_text(re.compile(r"^\d+(\.\d+)? ms$"))
        expect(row.locator(".agrees")).to_have_text(re.compile(r"^(yes|no)$"))
    expect(page.locator('#results tr[data-model="teacher/torch"]')).to_have_class(re.compile("reference"))
    page.screenshot(path=str(ARTIFACTS / "serve-page.png"), full_page=True)
    assert page.script_errors == []


def test_an_example_is_one_click_away(page):
    example = page.locator("#examples button.example").first
    expect(example).to_be_visible()
    text = example.text_content()
    with page.expect_response("**/predict") as response:
        example.click()
    assert response.value.ok
    assert page.input_value("#text") == text


def test_bad_input_shows_the_servers_message(page):
    page.fill("#text", "   ")
    page.click("#compare")
    expect(page.locator("#single-error")).to_have_text(re.compile("whitespace"))


def test_batch_of_pasted_lines_gives_a_summary_per_model(page, names):
    page.click("#tab-batch")
    page.fill("#lines", "a gripping film\n\ndull and overlong\nfine\n")
    page.click("#run-batch")
    rows = page.locator("#batch-results tbody tr")
    expect(rows).to_have_count(len(names))
    expect(rows.first.locator(".agreement")).to_have_text("100.0%")
    expect(rows.first.locator(".latency")).to_have_text(re.compile(r"^\d+(\.\d+)? ms$"))
    assert page.script_errors == []


def test_batch_from_an_uploaded_csv_reports_accuracy(page, names, tiny_run):
    first, second = tiny_run.labels()
    csv_text = f'text,label\n"a gripping, moving film",{first}\ndull and overlong,{second}\n'
    page.click("#tab-batch")
    page.set_input_files("#csv-file", files=[{"name": "batch.csv", "mimeType": "text/csv",
                                               "buffer": csv_text.encode()}])
    with page.expect_response("**/batch/csv") as response:
        page.click("#run-batch")
    assert response.value.ok
    rows = page.locator("#batch-results tbody tr")
    expect(rows).to_have_count(len(names))
    expect(rows.first.locator(".accuracy")).to_have_text(re.compile(r"^\d+\.\d%$"))
    page.screenshot(path=str(ARTIFACTS / "serve-batch.png"), full_page=True)
    assert page.script_errors == []
