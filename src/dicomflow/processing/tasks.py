"""Celery tasks of processing. Thin: each calls one service; the next stage is enqueued on commit.

Idempotent: :func:`run_stage` claims its stage with a conditional update, so a re-delivered message
for a stage that is running, done, failed or cancelled does nothing.

The automatic path: after an import, :func:`evaluate_imported` decides the rules on the series it
brought (new, or grown since their decision) and :func:`start_automatic_jobs` starts the job of
every series whose template processes automatically once the series has been quiet for
``DICOMFLOW_AUTO_PROCESS_QUIET_SECONDS`` — by a countdown sent for the series still arriving, and
by the beat schedule as a safety net. Starting twice is harmless: one automatic job per series
(a database constraint).
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
    """Rules on the given series (again, e.g. from the admin), or on every series not decided yet;
    then the automatic path for them."""
    states = (_services().evaluate_series(series_ids, override_manual=override_manual) if series_ids
              else _services().evaluate_new_series())
    _start_or_wait([s.series_id for s in states], None, follow=True)
    return {str(s.series_id): s.status for s in states}


@app.task(name="dicomflow.processing.tasks.evaluate_imported", acks_late=True)
def evaluate_imported(series_ids: list[int], quiet_seconds: float | None = None) -> dict:
    """After an import: decide the rules on the series it touched that need it, then start the
    automatic jobs of those quiet long enough (a countdown follows for the others)."""
    states = _services().evaluate_new_series(series_ids)
    _start_or_wait(series_ids, quiet_seconds, follow=True)
    return {str(s.series_id): s.status for s in states}


@app.task(name="dicomflow.processing.tasks.start_automatic_jobs", acks_late=True)
def start_automatic_jobs(series_ids: list[int] | None = None, quiet_seconds: float | None = None,
                         follow: bool = False) -> list[int]:
    """Start the automatic jobs of quiet series (all candidates, or those given); with ``follow``
    this task is sent again for the series still arriving. The beat schedule runs it without."""
    return _start_or_wait(series_ids, quiet_seconds, follow=follow)


def _start_or_wait(series_ids, quiet_seconds, follow: bool) -> list[int]:
    started, wait = _services().start_automatic_jobs(series_ids, quiet_seconds=quiet_seconds)
    if wait is not None and follow:
        kwargs = {"series_ids": series_ids, "quiet_seconds": quiet_seconds, "follow": True}
        transaction.on_commit(lambda: start_automatic_jobs.apply_async(kwargs=kwargs, countdown=wait + 0.5))
    return [job.pk for job in started]


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
