"""The dashboard in a real browser against a real secured cluster (1 coordinator, 2 shards
x 3, so that writes go on through a failover): the login (a wrong token refused, the right
one kept in sessionStorage, never in the URL), the shard table with live node stats, the key
browser and a live prefix watch (a value crafted as markup stays text), and a failover
arriving in the event feed and the table without a reload, the writes resuming on the new
primary. Screenshots go to the artifacts folder (tests/browser/conftest.py).

The tests run in order on one page, as a person would use it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from secured_cluster import SecuredCluster
from shardkv.client import SyncClient

pytestmark = pytest.mark.integration

REPLICAS = 3
WAIT_S = 60.0
XSS_VALUE = '<img src=x id="xss" onerror="document.title=\'pwned\'">'


def _wait(driver: Any, condition: Any, what: str) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page redraws its tables as events arrive: a row read mid-redraw is read again.
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1,
                         ignored_exceptions=[StaleElementReferenceException]).until(
        condition, what)


def _by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def _text(driver: Any, element_id: str) -> str:
    return str(_by_id(driver, element_id).text)


def _submit(driver: Any, input_id: str, text: str, button_id: str) -> None:
    field = _by_id(driver, input_id)
    field.clear()
    field.send_keys(text)
    _by_id(driver, button_id).click()


def _screenshot(driver: Any, path: Path) -> None:
    driver.execute_script("window.scrollTo(0, 0)")
    assert driver.save_screenshot(str(path)), path


def _primary_row(driver: Any, shard: str) -> tuple[str, str]:
    """(node, health) of the row marked primary for ``shard``, or ("", "")."""
    from selenium.webdriver.common.by import By

    for row in driver.find_elements(By.CSS_SELECTOR, f'#shards tr[data-shard="{shard}"]'):
        if row.find_elements(By.CSS_SELECTOR, ".role-primary"):
            cells = row.find_elements(By.TAG_NAME, "td")
            return str(cells[4].text), str(cells[6].text)
    return "", ""


@pytest.fixture(scope="module")
def page(browser: Any, secured_cluster: SecuredCluster) -> Iterator[Any]:
    browser.get(f"{secured_cluster.coordinator_urls[0]}/ui")
    yield browser


@pytest.fixture(scope="module")
def writer(secured_cluster: SecuredCluster) -> Iterator[None]:
    """A light steady write load, so the charts have something to draw."""
    stop = threading.Event()

    def run() -> None:
        with SyncClient(secured_cluster.coordinator_urls) as kv:
            i = 0
            while not stop.wait(0.02):
                try:
                    kv.put(f"load:{i % 50}", b"x" * 64)
                except Exception:  # a failover under way: the next put retries anyway
                    pass
                i += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(10)


def test_login_then_the_shard_table(page: Any, secured_cluster: SecuredCluster,
                                    artifacts: Path, writer: None) -> None:
    _wait(page, lambda d: _by_id(d, "login").is_displayed(), "the login form")
    _screenshot(page, artifacts / "01-login.png")
    _submit(page, "token", "not-the-token", "login-button")
    _wait(page, lambda d: "Wrong token" in _text(d, "login-error"), "a refused token")
    _submit(page, "token", secured_cluster.admin_token, "login-button")
    _wait(page, lambda d: _text(d, "conn") == "live", "the live event feed")
    assert not _by_id(page, "login").is_displayed()
    assert secured_cluster.admin_token not in page.current_url
    assert page.execute_script("return sessionStorage.getItem('shardkv.token')") == \
        secured_cluster.admin_token
    cluster_map = secured_cluster.current_map()
    for shard_id, shard in cluster_map.shards.items():
        _wait(page, lambda d, s=shard_id, p=shard.primary: _primary_row(d, s) == (p, "ok"),
              f"{shard_id}'s primary {shard.primary} shown healthy")
    _wait(page, lambda d: d.execute_script(
        "return Object.values(state.history).some(h => h.ops.filter(x => x > 0).length >= 5)"),
        "a few seconds of ops/s from the nodes")
    _wait(page, lambda d: any(float(c or 0) > 0 for c in d.execute_script(
        "return [...document.querySelectorAll('#shards tbody tr')].map(r => r.cells[10]"
        ".textContent)")), "ops/s in the shard table")
    _screenshot(page, artifacts / "02-shards.png")


def test_key_browser_and_a_live_watch(page: Any, secured_cluster: SecuredCluster,
                                      artifacts: Path) -> None:
    _submit(page, "watch-prefix", "user:", "watch-button")
    _wait(page, lambda d: "Watching" in _text(d, "watch-status"), "the watch to open")
    with SyncClient(secured_cluster.coordinator_urls) as kv:
        for i, name in enumerate(("alice", "bob", "carol", "dave")):
            kv.put(f"user:{i}", name.encode())
        kv.put("user:evil", XSS_VALUE.encode())
    _wait(page, lambda d: "user:evil" in _text(d, "watch-events"), "the watched writes")
    assert "user:3 = dave" in _text(page, "watch-events")
    _submit(page, "scan-prefix", "user:", "scan-button")
    _wait(page, lambda d: "5 key(s)" in _text(d, "keys-status"), "the scan")
    assert "carol" in _text(page, "keys")
    assert XSS_VALUE in _text(page, "keys")  # shown as text ...
    assert page.execute_script("return document.getElementById('xss')") is None  # not markup
    assert page.title != "pwned"
    _submit(page, "get-key", "user:1", "get-button")
    _wait(page, lambda d: "bob" in _text(d, "keys") and "carol" not in _text(d, "keys"),
          "the get")
    _screenshot(page, artifacts / "03-keys.png")


def test_a_failover_shows_without_a_reload(page: Any, secured_cluster: SecuredCluster,
                                           artifacts: Path) -> None:
    before = secured_cluster.current_map().shards["s1"]
    assert before.primary is not None
    marker = page.execute_script("window.notReloaded = true; return true")
    secured_cluster.cluster.kill(before.primary)
    try:
        _wait(page, lambda d: "shard.failover" in _text(d, "events")
              and f"s1: primary {before.primary} →" in _text(d, "events"),
              "the failover in the event feed")
        after = secured_cluster.current_map().shards["s1"].primary
        assert after not in (None, before.primary)
        _wait(page, lambda d: _primary_row(d, "s1") == (after, "ok"),
              f"the new primary {after} in the shard table, serving")
        _wait(page, lambda d: "unreachable" in _text(d, "shards"), "the dead node's health")
        _wait(page, lambda d: float(d.execute_script(
            "return document.querySelector(`#shards tr[data-node='${arguments[0]}']`)"
            ".cells[10].textContent", after) or 0) > 0,
            "the writes going on at the new primary, on its row")
        assert page.execute_script("return window.notReloaded") is marker
        _screenshot(page, artifacts / "04-failover.png")
    finally:
        secured_cluster.cluster.restart(before.primary)


def test_a_shard_add_shows_in_the_migration_panel(page: Any, secured_cluster: SecuredCluster,
                                                  artifacts: Path) -> None:
    import json
    import urllib.request

    from shardkv.cluster.shard_members import start_shard_members

    url = secured_cluster.coordinator_urls[0]
    request = urllib.request.Request(
        f"{url}/admin/shards", data=json.dumps({"shard": "s3"}).encode(), method="POST",
        headers={"Content-Type": "application/json", **secured_cluster.auth})
    with urllib.request.urlopen(request, timeout=10) as answer:
        migration = json.loads(answer.read())["migration"]
    start_shard_members(secured_cluster.cluster, "s3")
    _wait(page, lambda d: "migration.started" in _text(d, "events"), "the migration's start")
    _wait(page, lambda d: f"{migration}: add s3 — done" in _text(d, "migrations"),
          "the finished migration in the panel")
    _wait(page, lambda d: _primary_row(d, "s3")[1] == "ok", "the new shard's primary, serving")
    assert "ring.changed" in _text(page, "events")
    _screenshot(page, artifacts / "05-migration.png")
