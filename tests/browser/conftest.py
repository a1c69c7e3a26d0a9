import os
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.support.provision import chromium_for

DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture
def browser(request, tmp_path):
    """Debian's Chromium, headless; tests/support/provision.py installs it when a run selects this."""
    chromium = chromium_for(request.config)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium.binary
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager must not try to download anything.
    driver = webdriver.Chrome(service=Service(executable_path=chromium.driver), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    """Where screenshots go: a temporary folder, or docs/screenshots/ with PAYHOOK_REFRESH_SCREENSHOTS=1."""
    folder = DOCS_SCREENSHOTS if os.environ.get("PAYHOOK_REFRESH_SCREENSHOTS") == "1" else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# The one password of every staff user the browser tests create.
PASSWORD = "correct-horse-battery-9"


def admin_log_in(browser, live_server, username: str) -> None:
    """Log in to the admin through its form, as a person does; fails unless the welcome shows."""
    browser.delete_all_cookies()
    browser.get(f"{live_server.url}/admin/login/?next=/admin/")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    assert browser.find_element(By.ID, "user-tools").text.upper().startswith("WELCOME")


def screenshot_save(browser, folder: Path, name: str) -> None:
    assert browser.save_screenshot(str(folder / name)), name
