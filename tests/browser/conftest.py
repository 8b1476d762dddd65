"""The browser tier: Debian's headless chromium driven by Selenium through the packaged
chromedriver (scripts/install-browser.sh installs both; scripts/test runs it as root).
Nothing is downloaded: Selenium is given both paths and told to stay offline.

``browser``: one headless Chromium per module (1400 x 1400, the whole dashboard).
``artifacts``: where screenshots go, ``tmp/artifacts/browser/`` in the checkout unless
``SHARDKV_ARTIFACTS_DIR`` says otherwise. A machine without chromium skips with the
reason; that reason is not in tests/allowed_skips.txt, so CI fails rather than skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from secured_cluster import secured_cluster_fixture  # noqa: F401  (registers it)

WINDOW = (1400, 1400)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium")
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip("chromium and chromium-driver are not installed "
                    "(scripts/install-browser.sh, as root)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager fetch anything
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                     "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    default = Path(__file__).resolve().parents[2] / "tmp" / "artifacts" / "browser"
    folder = Path(os.environ.get("SHARDKV_ARTIFACTS_DIR") or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
