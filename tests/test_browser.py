"""Serve a built site on localhost and check, in headless Chromium, that every chart drew."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import configure_tiny, copy_project
from helpers import run_profiler

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1000")


@pytest.fixture(scope="module")
def served_site(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path,
                vega_bundle: Path) -> Iterator[str]:
    """Build the tiny model's site once and serve it on a free localhost port."""
    project = configure_tiny(copy_project(tmp_path_factory.mktemp("site")), vega_bundle)
    assert run_profiler("build", "--model", str(tiny_model), "--no-scalene", "--study",
                        "batch_size", cwd=project).returncode == 0
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(project / "site"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def browser() -> Iterator[object]:
    """Headless Debian Chromium driven by chromedriver, with a fresh profile."""
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver must be installed in CI (.ci/run does it)")
        pytest.skip("chromium/chromedriver not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.parametrize(("page", "charts"), [("report/batch-size/", 3),
                                              ("report/trends/", None)])
def test_every_chart_draws_with_a_width(browser: object, served_site: str, page: str,
                                        charts: int | None) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.get(f"{served_site}/{page}")  # type: ignore[attr-defined]
    count = driver.execute_script(  # type: ignore[attr-defined]
        "return document.querySelectorAll('.vega-chart').length")
    assert count == charts if charts else count >= 5  # trends: a chart per headline metric
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return document.querySelectorAll('.vega-chart[data-rendered], .vega-error').length")
        == count)
    assert driver.execute_script(  # type: ignore[attr-defined]
        "return document.querySelectorAll('.vega-error').length") == 0
    widths = driver.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.querySelectorAll('.vega-chart')).map(el => {"
        "  const g = el.querySelector('.marks'); return g ? g.getBoundingClientRect().width : 0;"
        "})")
    assert len(widths) == count
    assert all(width > 100 for width in widths), widths


def test_charts_load_nothing_from_other_hosts(browser: object, served_site: str) -> None:
    driver = browser
    driver.get(f"{served_site}/report/batch-size/")  # type: ignore[attr-defined]
    sources = driver.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.querySelectorAll('script[src], link[href]'))"
        ".map(e => e.src || e.href)")
    assert sources
    assert all(src.startswith(served_site) for src in sources), sources
