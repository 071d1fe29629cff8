"""A REAL Celery worker for tests: ``celery -A dicomflow.celery_app worker`` as a subprocess.

It uses the session's broker (the Celery filesystem broker in ``$DICOMFLOW_HOME/broker`` by default;
``CELERY_BROKER_URL=redis://...`` or ``amqp://...`` with a queue of the session's own, see
``dicomflow.testing.pytest_home``, purged when the worker starts) and the SAME test
database as the tests (pytest-django's ``$DICOMFLOW_HOME/test.sqlite3``, or its ``test_<name>``
database on PostgreSQL when the suite runs with ``DATABASE_URL=postgres://...``), passed as
``DATABASE_URL``. Tests that use it must see committed rows from another process, so they take
``@pytest.mark.django_db(transaction=True)``.

Loaded for every test through ``pytest_plugins`` in ``tests/conftest.py``. Usage::

    @pytest.mark.django_db(transaction=True)
    def test_something(celery_worker_process):
        some_task.delay(...)
        wait_for(lambda: Row.objects.get(...).status == "done", timeout=60)

The worker starts once per test session (a few seconds) and is stopped at the end (cold shutdown,
then its process group is killed); its log is ``$DICOMFLOW_HOME/logs/celery-test-worker.log`` and is attached to
timeout errors of :func:`wait_for` through ``CeleryWorker.tail()``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

READY_MARK = "ready."


@dataclass
class CeleryWorker:
    process: subprocess.Popen
    log_path: Path
    database: str

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no worker log)"

    def assert_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"the Celery worker exited ({self.process.returncode}):\n{self.tail()}")


def wait_for(predicate: Callable[[], object], timeout: float = 60.0, interval: float = 0.2,
             worker: CeleryWorker | None = None, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail with the worker log after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if worker is not None:
            worker.assert_alive()
        if time.monotonic() > deadline:
            log = f"\nworker log:\n{worker.tail()}" if worker is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{log}")
        time.sleep(interval)


def purge_queue(delete: bool = False) -> int:
    """Drop the messages left in this session's task queue (delete it too if asked); 0 when absent.

    Only the session's own queue (``settings.CELERY_TASK_DEFAULT_QUEUE``), never the whole Redis
    database or vhost: another session may be using it at the same time.
    """
    from django.conf import settings

    from dicomflow.celery_app import app

    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        return 0  # the session's own folder in $DICOMFLOW_HOME, new and empty
    name = settings.CELERY_TASK_DEFAULT_QUEUE
    with app.connection_for_write() as conn:
        channel = conn.channel()
        try:
            count = channel.queue_purge(name) or 0
            if delete:
                channel.queue_delete(name)
            return count
        except Exception:  # noqa: BLE001  RabbitMQ: no such queue yet (404 closes the channel)
            return 0
        finally:
            try:
                channel.close()
            except Exception:  # noqa: BLE001
                pass


def start_worker(database_url: str, concurrency: int = 2, pool: str = "prefork",
                 log_name: str = "celery-test-worker.log", timeout: float = 90.0,
                 queues: str | None = None, name: str | None = None, node: str | None = None,
                 env_extra: dict[str, str] | None = None) -> CeleryWorker:
    """Start a worker on ``database_url`` (the tests' database) and wait until it reports ready."""
    from django.conf import settings

    if Path(os.environ.get("DICOMFLOW_HOME", "")).resolve() != Path(settings.HOME):
        raise RuntimeError(  # the worker would use another store/broker than the tests
            f"settings.HOME ({settings.HOME}) is not $DICOMFLOW_HOME; run pytest with the "
            "dicomflow.testing.pytest_home plugin (pyproject addopts)"
        )
    log_path = Path(settings.LOG_DIR) / log_name
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url
    env["DICOMFLOW_HOME"] = str(settings.HOME)
    env.pop("DICOMFLOW_CELERY_EAGER", None)
    env.setdefault("DICOMFLOW_FSYNC", "never")
    env.update(env_extra or {})
    command = [
        sys.executable, "-m", "celery", "-A", "dicomflow.celery_app", "worker",
        f"--pool={pool}", f"--concurrency={concurrency}",
        "--without-mingle", "--without-gossip", "--without-heartbeat",
        "--loglevel=INFO", "-n", name or node or f"test-{os.getpid()}@%h",
    ] + ([f"--queues={queues}"] if queues else [])
    log_file = open(log_path, "w")
    process = subprocess.Popen(
        command, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log_file.close()
    worker = CeleryWorker(process, log_path, database_url)
    try:
        wait_for(lambda: READY_MARK in log_path.read_text(errors="replace"), timeout=timeout, interval=0.2,
                 worker=worker, what="the Celery worker to be ready")
    except BaseException:
        stop_worker(worker)
        raise
    return worker


def stop_worker(worker: CeleryWorker, timeout: float = 3.0) -> None:
    """Cold shutdown (SIGQUIT: the session is over, no task matters), then kill its process group."""
    process = worker.process
    if process.poll() is None:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # leftover pool children of this worker only
    except (ProcessLookupError, PermissionError):
        pass
    if process.poll() is None:
        process.wait(10)


def worker_database_url(django_db_blocker) -> str:
    """The URL of the test database for processes the tests start (workers); skips on in-memory SQLite."""
    with django_db_blocker.unblock():
        from django.db import connection

        database = connection.settings_dict["NAME"]
        vendor = connection.vendor
        conf = connection.settings_dict
    if vendor == "postgresql":
        auth = conf["USER"] + (f":{quote(conf['PASSWORD'], safe='')}" if conf["PASSWORD"] else "")
        return f"postgres://{auth}@{conf['HOST'] or '127.0.0.1'}:{conf['PORT'] or 5432}/{database}"
    if not database or database == ":memory:" or "mode=memory" in str(database):
        pytest.skip("the real Celery worker needs a file-based test database")
    return f"sqlite:///{database}"


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker):
    """One real Celery worker (prefork, 2 processes) for the session, on the test database."""
    url = worker_database_url(django_db_blocker)
    purge_queue()
    worker = start_worker(url)
    yield worker
    stop_worker(worker)
    purge_queue(delete=True)
