"""A real browser for tests: Debian's Chromium driven by Playwright (never a downloaded browser).

``browser_page`` gives a fresh page; tests that use it need ``live_server`` and mark themselves
``browser``. Skipped where Chromium is missing (failed in CI, see ``require_tool``).
"""

from __future__ import annotations

import pytest

from conftest import require_tool

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


@pytest.fixture
def browser_page(monkeypatch):
    require_tool(CHROMIUM)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the ORM calls the test makes
    # between browser steps are ordinary synchronous calls, so Django's async guard is lifted here.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()
