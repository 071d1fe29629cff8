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

pytest_plugins = ["fixtures_celery", "fixtures_browser", "fixtures_registry"]  # real Celery worker; real Chromium page;
# the operator's registry (processors.json) tests write


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


@pytest.fixture(scope="session", autouse=True)
def _flush_survives_a_deadlock():
    """On PostgreSQL the TRUNCATE that ends a transactional test can meet a lock held by the
    session's Celery worker or a live server thread finishing up, and be chosen as a deadlock's
    victim. The victim was rolled back whole, so the flush is simply tried again."""
    import time

    from django.db.backends.base.operations import BaseDatabaseOperations
    from django.db.utils import OperationalError

    original = BaseDatabaseOperations.execute_sql_flush

    def execute_sql_flush(self, sql_list):
        for attempt in range(6):
            try:
                return original(self, sql_list)
            except OperationalError as exc:
                if "deadlock" not in str(exc).lower() or attempt == 5:
                    raise
                time.sleep(0.5 * (attempt + 1))

    BaseDatabaseOperations.execute_sql_flush = execute_sql_flush
    yield
    BaseDatabaseOperations.execute_sql_flush = original


@pytest.fixture(scope="session", autouse=True)
def _postgres_test_database_released(django_db_setup, django_db_blocker):
    """On PostgreSQL, end every other session on the test database before pytest-django drops it.

    Threads of the test process (receiver catalogue writers, live servers) and the Celery worker
    may still hold a connection at the very end; DROP DATABASE would then fail and leave
    ``test_<name>`` behind. Torn down before ``django_db_setup`` (it depends on it). SQLite needs nothing.
    """
    yield
    with django_db_blocker.unblock():
        from django.db import connection

        if connection.vendor != "postgresql":
            return
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
