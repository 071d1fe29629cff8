"""Rules on new series: when an import session finishes with new instances (any source: the
command line, uploads, watched folders, the C-STORE receiver), the series it touched are evaluated
in a Celery task enqueued after the commit (:func:`dicomflow.processing.tasks.evaluate_imported`),
which also starts the automatic path for them. ``DICOMFLOW_EVALUATE_ON_IMPORT=0`` turns it off.

A listener on ``dicomflow.catalog.signals.import_finished`` rather than a call inside the import
service: every source runs an ImportSession, which sends it once, so none is missed nor doubled.
The quiet time (``DICOMFLOW_AUTO_PROCESS_QUIET_SECONDS``) is read here, in the importing process,
and travels with the task.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)


def _enqueue(series_ids: list[int], quiet_seconds: float) -> None:
    from dicomflow.processing import tasks

    try:  # never hold an import up on a broker outage
        tasks.evaluate_imported.apply_async(kwargs={"series_ids": series_ids, "quiet_seconds": quiet_seconds},
                                            retry=False)
    except Exception as exc:  # a broker hiccup must never break an import
        log.warning("could not enqueue rule evaluation after an import (%s)", exc.__class__.__name__)


def evaluate_after_import(sender, imported, **kwargs) -> None:
    if not settings.DICOMFLOW_EVALUATE_ON_IMPORT or not imported.instances_new or not imported.series_ids:
        return  # off, or nothing new to evaluate
    series_ids, quiet = sorted(imported.series_ids), settings.DICOMFLOW_AUTO_PROCESS_QUIET_SECONDS
    transaction.on_commit(lambda: _enqueue(series_ids, quiet))


def connect() -> None:
    from dicomflow.catalog.signals import import_finished

    import_finished.connect(evaluate_after_import, dispatch_uid="processing-evaluate-after-import")
