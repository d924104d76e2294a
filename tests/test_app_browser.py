"""`segkit app` in a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium) against the real server on a free loopback port: review a sample with the keyboard,
see `segprep clean` apply the decision; upload an image on the model page and get its mask.

`make test` installs chromium where it runs as root (CI); elsewhere these tests are skipped
when no chromium is installed. SEGKIT_SCREENSHOTS=DIR keeps the pages' screenshots there (the
README's come from it)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from segprep.clean import clean
from segprep.shards import close_shards

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="needs chromium and chromedriver (apt-get install chromium "
                                       "chromium-driver; `make test` does it as root)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(cleaned, tmp_path_factory):
    import uvicorn

    from segapp.server import create_app
    from test_app import make_run

    root = tmp_path_factory.mktemp("browser")
    cleaned(root, n=30, noise=0.5, seed=41, size=(96, 96))
    make_run(root / "runs")
    port = _free_port()
    config = uvicorn.Config(create_app(root / "work", root / "runs", device="cpu"),
                            host="127.0.0.1", port=port, log_level="warning")
    app_server = uvicorn.Server(config)
    thread = threading.Thread(target=app_server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not app_server.started:
        assert time.time() < deadline, "the server did not start"
        time.sleep(0.05)
    yield root, f"http://127.0.0.1:{port}"
    app_server.should_exit = True
    thread.join(10)
    close_shards()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.implicitly_wait(10)
    yield driver
    driver.quit()


def _screenshot(driver, name: str) -> None:
    folder = os.environ.get("SEGKIT_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


def _wait(condition, timeout: float = 20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting in the browser")


def test_review_filter_open_exclude_and_clean_applies_it(server, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    root, url = server
    browser.get(url + "/")
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".card"))
    # sorting: by foreground fraction, the largest first
    Select(browser.find_element(By.ID, "sort")).select_by_value("fg_fraction")
    manifest = pd.read_csv(root / "work/manifests/clean.csv", dtype=str, keep_default_na=False)
    largest = manifest.loc[manifest["fg_fraction"].astype(float).idxmax(), "sample_id"]
    assert browser.find_elements(By.CSS_SELECTOR, ".card")[0].get_attribute("data-sample") == largest
    Select(browser.find_element(By.ID, "sort")).select_by_value("index")
    findings = pd.read_csv(root / "work/reports/clean/findings.csv", dtype=str)
    code = findings["code"].value_counts().index[0]
    Select(browser.find_element(By.ID, "f-code")).select_by_visible_text(code)
    cards = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".card"))
    wanted = set(findings.loc[findings["code"] == code, "sample_id"])
    assert {c.get_attribute("data-sample") for c in cards} == wanted
    _wait(lambda: all(img.get_attribute("naturalWidth") not in (None, "0")
                      for img in browser.find_elements(By.CSS_SELECTOR, ".card img")))
    _screenshot(browser, "app-review.png")
    first = cards[0].get_attribute("data-sample")
    cards[0].click()
    assert _wait(lambda: browser.find_element(By.ID, "detail-id").text) == first
    browser.find_element(By.TAG_NAME, "body").send_keys("x")
    decisions = root / "work/reviews/decisions.csv"
    _wait(lambda: decisions.exists() and first in decisions.read_text())
    assert _wait(lambda: browser.find_element(By.ID, "detail-decision").text) == "exclude"
    table = pd.read_csv(decisions, dtype=str, keep_default_na=False)
    assert table.set_index("sample_id").loc[first, "decision"] == "exclude"
    result = clean(root / "work/manifests/ingest.csv", workers=1, progress=False)
    out = pd.read_csv(result.manifest_path, dtype=str, keep_default_na=False).set_index("sample_id")
    assert out.loc[first, "status"] == "excluded" and "reviewed_exclude" in out.loc[first, "issues"]
    close_shards()


def test_model_upload_shows_an_overlay_and_a_mask_to_download(server, browser, tmp_path: Path) -> None:
    import urllib.request

    from selenium.webdriver.common.by import By

    root, url = server
    rng = np.random.default_rng(1)
    picture = tmp_path / "colonoscopy.png"
    cv2.imwrite(str(picture), cv2.resize(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8), (120, 96)))
    browser.get(url + "/model")
    browser.find_element(By.ID, "files").send_keys(str(picture))
    figure = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "figure.result"))[0]
    overlay = figure.find_element(By.TAG_NAME, "img").get_attribute("src")
    assert overlay.startswith("data:image/png;base64,")
    link = figure.find_element(By.CSS_SELECTOR, "a.download").get_attribute("href")
    _screenshot(browser, "app-model.png")
    with urllib.request.urlopen(link) as response:
        mask = cv2.imdecode(np.frombuffer(response.read(), np.uint8), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (96, 120) and set(np.unique(mask)) <= {0, 255}
    assert "colonoscopy.png" in figure.text
