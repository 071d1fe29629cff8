"""Test set-up shared by every test.

Each test session gets its own ``$DICOMFLOW_HOME`` (database, store, broker) in a temp folder, so
tests never touch a developer's data. Tools that tests drive as real peers (DCMTK, dciodvfy,
Chromium) are required in CI (``DICOMFLOW_REQUIRE_TOOLS=1``) and skipped with a reason elsewhere.
"""

import os
import shutil
import tempfile

# Normally already set by the -p dicomflow.testing.pytest_home plugin (before Django reads settings).
os.environ["DICOMFLOW_HOME"] = os.environ.get("DICOMFLOW_TEST_SESSION_HOME") or tempfile.mkdtemp(prefix="dicomflow-test-")
os.environ.setdefault("DICOMFLOW_FSYNC", "never")

import pytest  # noqa: E402

pytest_plugins = ["fixtures_celery", "fixtures_browser"]  # real Celery worker; real Chromium page


def require_tool(name: str) -> str:
    """Path of an external tool; skip the test if absent (fail instead in CI)."""
    path = shutil.which(name) or (name if os.path.isabs(name) and os.path.exists(name) else None)
    if path:
        return path
    if os.environ.get("DICOMFLOW_REQUIRE_TOOLS") == "1":
        pytest.fail(f"required tool '{name}' is not installed (run 'make sysdeps')")
    pytest.skip(f"tool '{name}' is not installed (run 'make sysdeps')")


@pytest.fixture
def dicomflow_home():
    from django.conf import settings

    return settings.HOME
