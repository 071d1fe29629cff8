"""Celery tasks of the catalog. Thin: each calls one service (``dicomflow.catalog.analysis``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import OperationalError, transaction

from dicomflow.celery_app import app

log = logging.getLogger(__name__)


@app.task(
    name="dicomflow.catalog.tasks.analyse_studies",
    acks_late=True,
    autoretry_for=(OperationalError,),  # e.g. SQLite "database is locked" under many writers
    retry_backoff=5,
    max_retries=3,
)
def analyse_studies(study_ids: list[int]) -> dict:
    """Rebuild the RT edges and check results of these studies (idempotent: results are replaced)."""
    from dicomflow.catalog import analysis  # loaded by the worker only; senders stay light

    return analysis.analyse_studies(study_ids).as_dict()


def enqueue_analysis(study_ids: Iterable[int]) -> None:
    """Queue the analysis of these studies once the current transaction commits.

    A broker that cannot be reached must not fail the import that called this: the studies can
    be analysed later (``dicomflow catalog analyse``), so the error is logged only.
    """
    ids = sorted(set(study_ids))
    if not ids:
        return

    def send() -> None:
        try:
            analyse_studies.delay(ids)
        except Exception:  # noqa: BLE001 - the broker's own errors vary by transport
            log.warning("could not queue the analysis of %d studies; run 'dicomflow catalog analyse'", len(ids), exc_info=True)

    transaction.on_commit(send)
