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

# the served site is built once: the module's tests run on one worker
pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser_site")]

SCREENSHOTS = Path(__file__).resolve().parent.parent / ".screenshots"  # open them after a run
INJECTED = "tiny<img src=x onerror=alert(1)> | [link](javascript:alert(2)) *bold* `tick"
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
    model = project / "models" / INJECTED  # a model folder whose name is markup
    shutil.copytree(tiny_model, model)
    corpus = project / f"corpus {INJECTED}.txt"  # and a corpus whose name and texts are markup
    texts = (project / "data" / "corpus.txt").read_text(encoding="utf-8").splitlines()[:40]
    corpus.write_text("\n".join([*texts, "<script>alert(3)</script>", INJECTED]) + "\n",
                      encoding="utf-8")
    done = run_profiler("build", "--model", str(model), "--corpus", str(corpus), "--no-scalene",
                        "--study", "batch_size", cwd=project)
    assert done.returncode == 0, done.stderr
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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console messages
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


@pytest.mark.parametrize("page", ["", "report/batch-size/", "report/trends/",
                                  "report/matrix/"])
def test_markup_in_a_model_name_is_shown_as_text(browser: object, served_site: str,
                                                  page: str) -> None:
    driver = browser
    driver.get(f"{served_site}/{page}")  # type: ignore[attr-defined]
    injected = driver.execute_script(  # type: ignore[attr-defined]
        "return document.querySelectorAll('img[src=\"x\"], [onerror], a[href^=\"javascript\"]'"
        ").length")
    assert injected == 0
    if page in ("", "report/matrix/"):  # the pages that name the model show it as it is
        body = driver.execute_script("return document.body.innerText")  # type: ignore[attr-defined]
        assert "<img src=x onerror=alert(1)> | [link](javascript:alert(2)) *bold*" in body
    if page == "":
        assert f"corpus {INJECTED}.txt" in body  # the corpus's name, as it is
        assert driver.execute_script(  # type: ignore[attr-defined]
            "return document.querySelectorAll('script:not([src])').length") == \
            driver.execute_script(  # type: ignore[attr-defined]
                "return Array.from(document.querySelectorAll('script:not([src])'))"
                ".filter(s => !s.textContent.includes('alert')).length")


CHART_STATE = ("return Array.from(document.querySelectorAll('.vega-chart')).map(el => ["
               "  el.dataset.theme, el.dataset.rendered === '1',"
               "  el._chartView ? el._chartView.view.background() : null,"
               "  el.querySelectorAll('svg.marks').length])")


def test_charts_redraw_dark_when_the_palette_toggles(browser: object, served_site: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.get(f"{served_site}/report/batch-size/")  # type: ignore[attr-defined]
    # headless Chromium prefers light: the automatic palette resolves to Material's default
    light = WebDriverWait(driver, 30).until(lambda d: _charts_if_all(d, "light"))
    assert all(background != "#333" and svgs == 1 for _, _, background, svgs in light)
    toggle = ("document.querySelector('[data-md-component=palette] label:not([hidden])')"
              ".click(); return document.body.getAttribute('data-md-color-scheme')")
    schemes = [driver.execute_script(toggle) for _ in range(2)]  # type: ignore[attr-defined]
    assert schemes == ["default", "slate"]  # automatic -> light -> dark
    dark = WebDriverWait(driver, 30).until(lambda d: _charts_if_all(d, "dark"))
    assert len(dark) == len(light)
    assert all(background == "#333" and svgs == 1 for _, _, background, svgs in dark)
    assert driver.execute_script(toggle) != "slate"  # dark -> automatic (light here)
    WebDriverWait(driver, 30).until(lambda d: _charts_if_all(d, "light"))


def _charts_if_all(driver: object, theme: str) -> list[list[object]] | None:
    """Every chart's state, once each has drawn in `theme`; None before that."""
    charts = driver.execute_script(CHART_STATE)  # type: ignore[attr-defined]
    done = charts and all(t == theme and rendered for t, rendered, _, _ in charts)
    return charts if done else None


CHARTS_DRAWN = """
const charts = Array.from(document.querySelectorAll('.vega-chart'));
return charts.map(el => {
  const box = (el.querySelector('svg, canvas') || el).getBoundingClientRect();
  const marks = el.querySelectorAll('.mark-line path, .mark-symbol path, .mark-rect path, '
    + '.mark-rule line, .mark-area path, .mark-text text, canvas').length;
  return {rendered: el.hasAttribute('data-rendered'), error: !!el.querySelector('.vega-error')
          || el.classList.contains('vega-error'), width: box.width, height: box.height, marks};
});
"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_draws_in_light_and_dark_without_errors(browser: object, served_site: str,
                                                           scheme: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {  # type: ignore[attr-defined]
        "features": [{"name": "prefers-color-scheme", "value": scheme}]})
    driver.get(f"{served_site}/")  # type: ignore[attr-defined]
    pages = sorted(set(driver.execute_script(  # type: ignore[attr-defined]
        "return Array.from(document.querySelectorAll('a.md-nav__link[href]'))"
        ".map(a => a.href.split('#')[0])")))
    assert len(pages) >= 12, pages
    SCREENSHOTS.mkdir(exist_ok=True)
    for url in pages:
        assert url.startswith(served_site), url
        driver.get(url)  # type: ignore[attr-defined]
        WebDriverWait(driver, 30).until(lambda d: all(
            c["rendered"] or c["error"] for c in d.execute_script(CHARTS_DRAWN)))
        for chart in driver.execute_script(CHARTS_DRAWN):  # type: ignore[attr-defined]
            assert not chart["error"] and chart["width"] > 100 and chart["height"] > 20, url
            assert chart["marks"] > 0, url
        scheme_now = driver.execute_script(  # type: ignore[attr-defined]
            "return document.body.getAttribute('data-md-color-scheme')")
        assert scheme_now == ("slate" if scheme == "dark" else "default"), url
        name = url[len(served_site):].strip("/").replace("/", "-") or "home"
        driver.save_screenshot(str(SCREENSHOTS / f"{name}-{scheme}.png"))  # type: ignore[attr-defined]
        requests = driver.execute_script(  # type: ignore[attr-defined]
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert all(r.startswith(served_site) for r in requests), requests
    errors = [e for e in driver.get_log("browser")  # type: ignore[attr-defined]
              if e["level"] == "SEVERE"]
    assert not errors, errors
