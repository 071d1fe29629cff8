"""Rules on new series: when any import finishes (``import_paths`` or the C-STORE receiver both
close an ImportRun), evaluate every series that has no processing state yet, in a Celery task
enqueued after the commit. ``DICOMFLOW_EVALUATE_ON_IMPORT=0`` turns it off.

A signal on the import record rather than a call inside the import service: every source
(folders, uploads, watched folders, the receiver) ends an ImportRun, so none is missed.
"""

from __future__ import annotations

import logging
import os

from django.db import transaction
from django.db.models.signals import post_save

log = logging.getLogger(__name__)


def _enabled() -> bool:
    return os.environ.get("DICOMFLOW_EVALUATE_ON_IMPORT", "1").strip().lower() not in {"0", "false", "no", "off"}


def _enqueue() -> None:
    from dicomflow.processing import tasks

    try:
        tasks.evaluate_series.apply_async(retry=False)  # never hold an import up on a broker outage
    except Exception as exc:  # a broker hiccup must never break an import
        log.warning("could not enqueue rule evaluation after an import (%s)", exc.__class__.__name__)


def import_finished(sender, instance, created, update_fields=None, **kwargs) -> None:
    if created or instance.finished_at is None or not _enabled():
        return
    if update_fields is not None and "finished_at" not in update_fields:
        return
    if not instance.instances_new:
        return  # nothing new to evaluate
    transaction.on_commit(_enqueue)


def connect() -> None:
    from dicomflow.intake.models import ImportRun

    post_save.connect(import_finished, sender=ImportRun, dispatch_uid="processing-evaluate-after-import")
