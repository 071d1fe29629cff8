"""Celery tasks of projects. Thin: each calls one service."""

from __future__ import annotations

from dicomflow.celery_app import app
from dicomflow.projects import services


@app.task(name="dicomflow.projects.tasks.run_staging", acks_late=True)
def run_staging(job_id: int) -> dict:
    """Run one staging job; a re-delivered task for a job already taken does nothing."""
    return services.run_staging_job(job_id).as_dict()
