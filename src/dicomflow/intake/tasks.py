"""Celery tasks of intake. Thin: each calls one service (``uploads``, ``watch``) and nothing else."""

from __future__ import annotations

from django.db import transaction

from dicomflow.celery_app import app
from dicomflow.intake import uploads, watch


@app.task(name="dicomflow.intake.tasks.process_zip_upload", acks_late=True)
def process_zip_upload(upload_id: int) -> dict:
    """Import one ZIP upload; a re-delivered task for an upload already taken does nothing."""
    return uploads.process_upload(upload_id)


@app.task(name="dicomflow.intake.tasks.scan_watched_folders")
def scan_watched_folders() -> dict:
    """Periodic (beat): copy every new, quiet sub-folder of the watched folders, then queue its import."""
    copied = watch.scan_all()
    for intake_id in copied:
        transaction.on_commit(lambda i=intake_id: import_watched_folder.delay(i))
    return {"copied": copied}


@app.task(name="dicomflow.intake.tasks.import_watched_folder", acks_late=True)
def import_watched_folder(intake_id: int) -> dict | None:
    report = watch.import_intake(intake_id)
    return None if report is None else report.as_dict() | {"conflicts": len(report.conflicts), "ignored": len(report.ignored)}


@app.task(name="dicomflow.intake.tasks.import_upload_session", acks_late=True)
def import_upload_session(session_id: str) -> dict:
    """Import a finalized resumable upload (REST/SDK or browser); a re-delivered task does nothing."""
    from dicomflow.intake import resumable

    return resumable.import_session(session_id)


@app.task(name="dicomflow.intake.tasks.purge_stale_upload_sessions")
def purge_stale_upload_sessions() -> dict:
    """Periodic (beat): cancel resumable uploads idle for days and free their disk space."""
    from dicomflow.intake import resumable

    return {"cancelled": resumable.purge_stale()}


@app.task(name="dicomflow.intake.tasks.recover_abandoned_jobs")
def recover_abandoned_jobs() -> dict:
    """Periodic (beat) and at every worker's start: send again the jobs whose worker died."""
    from dicomflow import progress

    return progress.recover_abandoned()
