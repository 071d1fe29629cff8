"""pytest plugin: a fresh ``$DICOMFLOW_HOME`` for each test session, set before Django reads settings.

pytest-django loads the settings in its ``pytest_load_initial_conftests`` hook, before
``tests/conftest.py`` is imported, so a HOME chosen in conftest came too late (tests then shared
``./var`` — the developer's store — and concurrent sessions clobbered one test database). Plugins
named with ``-p`` (see ``addopts`` in pyproject.toml) are imported before that hook runs.
Subprocesses the tests start (CLI, Celery worker) inherit the same HOME through the environment.
"""

import os
import tempfile
import uuid

os.environ["DICOMFLOW_HOME"] = tempfile.mkdtemp(prefix="dicomflow-test-")
os.environ["DICOMFLOW_TEST_SESSION_HOME"] = os.environ["DICOMFLOW_HOME"]
os.environ.setdefault("DICOMFLOW_FSYNC", "never")
# On a shared broker (Redis, RabbitMQ) every session sends to and consumes from a queue of its own,
# so two concurrent sessions on one broker never take each other's tasks.
if not os.environ.get("CELERY_BROKER_URL", "filesystem://").startswith("filesystem://"):
    os.environ.setdefault("DICOMFLOW_CELERY_QUEUE", f"dicomflow-test-{uuid.uuid4().hex[:12]}")
