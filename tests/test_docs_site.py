"""The documentation site: `mkdocs build --strict`, then a real browser looks at it.

The build fails on a broken link, a missing object or a bad cross-reference
(strict mode). The built site is served on 127.0.0.1 and opened in headless
Chromium (Debian's ``chromium``, driven by Playwright): the home page, a guide
and the Trainer's API page load without console errors and with every image;
the API page lists ``fit``/``evaluate``/``predict`` with their parameters;
searching "checkpoint" finds the Trainer page. ``TFCUSTOM_UPDATE_SCREENSHOTS=1``
writes the three screenshots to ``docs/screenshots/`` (committed).
"""

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PAGES = {"home": "", "guide": "guides/performance/", "trainer_api": "api/trainer/"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out


def test_every_public_module_has_an_api_page():
    import tfcustom

    pages = "".join(open(os.path.join(ROOT, "docs", "api", f)).read() for f in os.listdir(os.path.join(ROOT, "docs", "api")))
    modules = [n for n in tfcustom.__all__ if isinstance(getattr(tfcustom, n), types.ModuleType)]
    missing = [n for n in modules if f"::: {getattr(tfcustom, n).__name__}\n" not in pages]
    assert not missing, f"public modules without an API page (add docs/api/<name>.md with '::: tfcustom.<name>'): {missing}"


def test_the_build_has_a_page_per_notebook_with_its_pictures(site):
    for name in ("quickstart", "custom_components", "from_scratch", "tpu_training"):
        html = (site / "notebooks" / name / "index.html").read_text()
        assert "jp-Cell" in html or "jupyter" in html.lower(), name


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.goto(url, wait_until="networkidle")
    return page, errors


@pytest.mark.parametrize("name", sorted(PAGES))
def test_page_loads_with_its_images_and_no_console_errors(browser, server, name):
    page, errors = _open(browser, server + PAGES[name])
    broken = page.evaluate("() => Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
    images = page.evaluate("() => document.images.length")
    if os.environ.get("TFCUSTOM_UPDATE_SCREENSHOTS"):
        page.screenshot(path=os.path.join(ROOT, "docs", "screenshots", f"{name}.png"))
    page.close()
    assert not errors, errors
    assert not broken, f"images that did not load: {broken}"
    if name == "home":
        assert images >= 1, "the home page shows a picture"


def test_trainer_page_lists_fit_evaluate_predict_with_parameters(browser, server):
    page, errors = _open(browser, server + PAGES["trainer_api"])
    headings = page.evaluate("() => Array.from(document.querySelectorAll('h3[id]')).map(h => h.id)")
    fit = page.inner_text("[id='tfcustom.Trainer.fit'] ~ .doc-signature, [id='tfcustom.Trainer.fit'] + div")
    page.close()
    for method in ("fit", "evaluate", "predict"):
        assert f"tfcustom.Trainer.{method}" in headings, headings
    for parameter in ("train", "epochs", "validation_data", "batch_size"):
        assert parameter in fit, fit


def test_search_finds_the_trainer_page_for_checkpoint(browser, server):
    page, errors = _open(browser, server)
    page.keyboard.press("s")  # Material's search shortcut (as the "/" key of Keras' docs)
    page.keyboard.type("checkpoint", delay=20)
    page.wait_for_function("() => document.querySelectorAll('.md-search-result__item a').length > 0", timeout=30_000)
    links = page.evaluate("() => Array.from(document.querySelectorAll('.md-search-result__item a')).map(a => a.href)")
    page.close()
    assert any("api/trainer/" in link for link in links), links
