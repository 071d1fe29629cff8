"""Celery tasks of processing. Thin: each calls one service; the next stage is enqueued on commit.

Idempotent: :func:`run_stage` claims its stage with a conditional update, so a re-delivered message
for a stage that is running, done, failed or cancelled does nothing.
"""

from __future__ import annotations

from django.db import transaction

from dicomflow.celery_app import app


def _services():
    """The service layer, loaded on first use: whoever only *sends* a task (the CLI after an import)
    should not pay for importing the whole pipeline (processors, pydicom, numpy)."""
    from dicomflow.processing import services

    return services


@app.task(name="dicomflow.processing.tasks.evaluate_series", acks_late=True)
def evaluate_series(series_ids: list[int] | None = None, override_manual: bool = False) -> dict:
    """Rules on the given series, or on every series without a processing state yet."""
    states = (_services().evaluate_series(series_ids, override_manual=override_manual) if series_ids
              else _services().evaluate_new_series())
    project = _services().auto_project_key()
    if project:  # DICOMFLOW_AUTO_PROCESS_PROJECT: matched series go straight into processing
        for job in _services().auto_start_jobs(states, project):
            start_job(job.pk)
    return {str(s.series_id): s.status for s in states}


@app.task(name="dicomflow.processing.tasks.run_stage", acks_late=True)
def run_stage(job_id: int, stage: str) -> str | None:
    following = _services().run_stage(job_id, stage)
    if following:
        dispatch(job_id, following)
    return following


@app.task(name="dicomflow.processing.tasks.fail_stale_stages")
def fail_stale_stages(older_than_seconds: float = 6 * 3600) -> list[int]:
    """For the beat schedule: fail stages whose worker died, so they can be retried."""
    return _services().fail_stale_stages(older_than_seconds)


def dispatch(job_id: int, stage: str | None) -> None:
    """Enqueue a stage once the current transaction commits (no-op for None)."""
    if stage:
        transaction.on_commit(lambda: run_stage.delay(job_id, stage))


def start_job(job_id: int) -> None:
    dispatch(job_id, _services().next_stage(job_id))


@app.task(name="dicomflow.processing.tasks.apply_retention", acks_late=True)
def apply_retention() -> dict:
    """Beat: delete working copies older than the retention policy (processing.retention)."""
    from dicomflow.processing.retention import apply_retention as run

    report = run()
    return {"deleted": len(report.deleted), "freed_bytes": report.freed_bytes, "errors": len(report.errors)}
