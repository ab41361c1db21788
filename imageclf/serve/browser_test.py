"""The web page in a real browser: Debian's Chromium, headless, driven by selenium.

Skipped (with the reason) only when chromium or chromedriver is not installed;
``make test`` installs them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from imageclf.serve import ServeSettings, create_app
from imageclf.serve.testing import encode, live_server

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1100,1000")


@pytest.fixture(scope="module")
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page_url(served_model):
    with live_server(create_app(served_model, ServeSettings(max_upload_mb=2))) as url:
        yield url


def upload(driver, path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "file-input").send_keys(str(path))


def wait_for(driver, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def test_upload_shows_class_probability_and_bars(browser, page_url, served_model, sample_images, tmp_path):
    from selenium.webdriver.common.by import By

    image = tmp_path / "chest.png"
    image.write_bytes(encode(sample_images[0][1]))
    expected = served_model.predict([str(image)])
    browser.get(page_url + "/")
    wait_for(browser, lambda d: "version" in d.find_element(By.ID, "model-line").text)
    upload(browser, image)
    shown = wait_for(browser, lambda d: d.find_element(By.ID, "result-class").text)
    assert shown == expected.labels[0]
    p = expected.probs[0][expected.indices[0]]
    assert browser.find_element(By.ID, "result-prob").text == f"{100 * p:.1f} %"
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar-row")
    labels = sorted(b.find_element(By.CLASS_NAME, "bar-label").text for b in bars)
    assert labels == sorted(served_model.classes)
    # The heatmap panel settles: an overlay image, or a message saying why there is none.
    wait_for(browser, lambda d: d.find_element(By.ID, "heatmap").is_displayed()
             or "No heatmap" in d.find_element(By.ID, "heatmap-note").text)
    assert browser.find_element(By.ID, "preview").is_displayed()
    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_rejected_file_gets_a_clear_message(browser, page_url, tmp_path):
    from selenium.webdriver.common.by import By

    fake = tmp_path / "scan.png"
    fake.write_text("this is a text file pretending to be an X-ray")
    browser.get(page_url + "/")
    wait_for(browser, lambda d: "version" in d.find_element(By.ID, "model-line").text)
    upload(browser, fake)
    message = wait_for(browser, lambda d: (m := d.find_element(By.ID, "message")).is_displayed()
                       and "Rejected" in m.text and m.text)
    assert "scan.png" in message and "not a PNG, JPEG" in message and "looks like text" in message
    assert not browser.find_element(By.ID, "result").is_displayed()
    browser.save_screenshot(str(tmp_path / "rejected.png"))



def test_api_docs_render_offline(browser, page_url):
    from selenium.webdriver.common.by import By

    browser.get(page_url + "/docs")
    title = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"))
    assert "imageclf" in title[0].text
    predict_op = "#operations-inference-predict_predict_post"
    assert wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, predict_op))


@pytest.fixture(scope="module")
def token_url(served_model):
    with live_server(create_app(served_model, ServeSettings(token="page-token-123"))) as url:
        yield url


def test_the_page_asks_for_the_token_once_and_sends_it(browser, token_url, sample_images, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(token_url + "/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(token_url + "/")
    wait_for(browser, lambda d: d.find_element(By.ID, "token-form").is_displayed())
    assert "access token" in browser.find_element(By.ID, "model-line").text
    field = browser.find_element(By.ID, "token-input")
    field.send_keys("page-token-123")
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait_for(browser, lambda d: "version" in d.find_element(By.ID, "model-line").text)
    image = tmp_path / "chest.png"
    image.write_bytes(encode(sample_images[0][1]))
    upload(browser, image)
    assert wait_for(browser, lambda d: d.find_element(By.ID, "result-class").text)
    wait_for(browser, lambda d: d.find_element(By.ID, "heatmap").is_displayed())  # /explain had it too
    browser.get(token_url + "/")  # asked once: the tab keeps it
    wait_for(browser, lambda d: "version" in d.find_element(By.ID, "model-line").text)
    assert not browser.find_element(By.ID, "token-form").is_displayed()
    browser.execute_script("sessionStorage.clear()")


def test_an_image_unlike_the_training_images_is_refused_on_the_page(browser, page_url, tmp_path):
    import numpy as np
    from selenium.webdriver.common.by import By

    blank = tmp_path / "blank.png"
    blank.write_bytes(encode(np.full((32, 32), 140, np.uint8)))
    browser.get(page_url + "/")
    wait_for(browser, lambda d: "version" in d.find_element(By.ID, "model-line").text)
    upload(browser, blank)
    shown = wait_for(browser, lambda d: d.find_element(By.ID, "result-class").text)
    assert shown == "Outside what this model was trained on"
    assert "refused" in browser.find_element(By.ID, "result").get_attribute("class")
    note = browser.find_element(By.ID, "ood-note")
    assert note.is_displayed() and "unlike the images the model learned from" in note.text
    assert browser.find_element(By.ID, "result-prob").text == "\u2014"
    shot = tmp_path / "refused.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
