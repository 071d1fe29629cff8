"""pytest plugin: a fresh ``$DICOMFLOW_HOME`` for each test session, set before Django reads settings.

pytest-django loads the settings in its ``pytest_load_initial_conftests`` hook, before
``tests/conftest.py`` is imported, so a HOME chosen in conftest came too late (tests then shared
``./var`` — the developer's store — and concurrent sessions clobbered one test database). Plugins
named with ``-p`` (see ``addopts`` in pyproject.toml) are imported before that hook runs.
Subprocesses the tests start (CLI, Celery worker) inherit the same HOME through the environment.

The operator's registry (``DICOMFLOW_PROCESSORS``) is pinned to ``$DICOMFLOW_HOME/processors.json``
(never a developer's own file): tests write it with the ``processors_registry`` fixture
(tests/fixtures_registry.py), and the session's Celery worker, started once, reads the same path.
"""

import os
import tempfile
import uuid

os.environ["DICOMFLOW_HOME"] = tempfile.mkdtemp(prefix="dicomflow-test-")
os.environ["DICOMFLOW_TEST_SESSION_HOME"] = os.environ["DICOMFLOW_HOME"]
os.environ.setdefault("DICOMFLOW_FSYNC", "never")
os.environ["DICOMFLOW_PROCESSORS"] = os.path.join(os.environ["DICOMFLOW_HOME"], "processors.json")
# A secret-looking canary every test process and the session's worker carry: tests check that it never
# reaches a command's environment or leaves the machine (the operator's real tokens have this prefix).
os.environ.setdefault("DICOMFLOW_TOKEN_TEST_CANARY", "canary-" + os.urandom(8).hex())
# On a shared broker (Redis, RabbitMQ) every session sends to and consumes from a queue of its own,
# so two concurrent sessions on one broker never take each other's tasks.
if not os.environ.get("CELERY_BROKER_URL", "filesystem://").startswith("filesystem://"):
    os.environ.setdefault("DICOMFLOW_CELERY_QUEUE", f"dicomflow-test-{uuid.uuid4().hex[:12]}")
