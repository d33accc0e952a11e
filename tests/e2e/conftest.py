"""Browser tests: Debian's Chromium, driven by Playwright, against servers started as `make airflow` starts them.

One stack per module (mocks + API server, scheduler, DAG processor, triggerer on
127.0.0.1, SQLite) from ``osms.dev.ui_stack.airflow_stack`` — the function behind
``make airflow`` — with the scheduler's own schedule off, so the only runs are the
tests'. The browser is the system Chromium (``/usr/bin/chromium``, or
``$OSMS_CHROMIUM``): Playwright never downloads one. It runs headless with the
flags this closed network needs, in the Asia/Almaty time zone like an operator.
Screenshots go to ``test-artifacts/e2e/`` (``$OSMS_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("OSMS_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "e2e"
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--metrics-recording-only", "--no-default-browser-check",
]
TIMEZONE = "Asia/Almaty"


def chromium_path() -> str:
    path = os.environ.get("OSMS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("Debian's Chromium is not installed: run `make browser` (apt-get install chromium)")
    return path


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from mocks.config import MockConfig
    from osms.dev.airflow_local import free_port
    from osms.dev.ui_stack import airflow_stack

    data = tmp_path_factory.mktemp("ui") / "data"
    config = MockConfig(data_dir=data / "mocks")
    with airflow_stack(data, port=free_port(), use_job_schedule=False, mock_config=config,
                       say=lambda _: None) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def login(browser: Any, stack: Any, user: str) -> Any:
    """A fresh browser context logged in as ``user`` through Airflow's login page; returns its page."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, timezone_id=TIMEZONE)
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(f"{stack.url}/")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(stack.airflow.passwords()[user])
    page.locator("button[type=submit]").click()
    page.wait_for_url(f"{stack.url}/")
    return page
