"""Rules on new series: when an import session finishes with new instances (any source: the
command line, uploads, watched folders, the C-STORE receiver), evaluate every series that has no
processing state yet, in a Celery task enqueued after the commit.
``DICOMFLOW_EVALUATE_ON_IMPORT=0`` turns it off.

A listener on ``dicomflow.catalog.signals.import_finished`` rather than a call inside the import
service: every source runs an ImportSession, which sends it once, so none is missed nor doubled.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)


def _enqueue() -> None:
    from dicomflow.processing import tasks

    try:
        tasks.evaluate_series.apply_async(retry=False)  # never hold an import up on a broker outage
    except Exception as exc:  # a broker hiccup must never break an import
        log.warning("could not enqueue rule evaluation after an import (%s)", exc.__class__.__name__)


def evaluate_after_import(sender, imported, **kwargs) -> None:
    if not settings.DICOMFLOW_EVALUATE_ON_IMPORT or not imported.instances_new:
        return  # off, or nothing new to evaluate
    transaction.on_commit(_enqueue)


def connect() -> None:
    from dicomflow.catalog.signals import import_finished

    import_finished.connect(evaluate_after_import, dispatch_uid="processing-evaluate-after-import")
