"""The operator's registry (``processors.json``) for tests.

``settings.DICOMFLOW_PROCESSORS`` is ``$DICOMFLOW_HOME/processors.json`` for the whole session (the
``dicomflow.testing.pytest_home`` plugin pins ``DICOMFLOW_PROCESSORS`` to it), and the registry is
read afresh each time it is used, so a file written here is seen by the tests' process AND by the
session's Celery worker (``celery_worker_process``), which inherits the same variable. Usage::

    def test_x(processors_registry, tmp_path):
        processors_registry(commands={"seg": {"argv": [sys.executable, str(script), "{input}", "{output}"]}},
                            export_roots=[str(tmp_path / "exports")])

The file is removed after the test (nothing allowed again).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def processors_registry():
    from django.conf import settings

    path = Path(settings.DICOMFLOW_PROCESSORS)
    before = path.read_text() if path.exists() else None

    def write(commands: dict | None = None, http_endpoints: dict | None = None,
              export_roots: list | None = None) -> Path:
        data = {"commands": commands or {}, "http_endpoints": http_endpoints or {},
                "export_roots": [str(r) for r in (export_roots or [])]}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
        return path

    yield write
    if before is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(before)
