"""Processing selectors (reads): job summaries, the processing log, series states, visible jobs."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from dicomflow.processing.models import Job, LogEntry, Result, SeriesState
from dicomflow.projects.selectors import visible_series

VIEW_JOBS_PERMISSION = "processing.view_job"


def visible_jobs(user) -> QuerySet[Job]:
    """Processing jobs ``user`` may see: all for superusers; with ``processing.view_job``, those on
    series the user sees or that the user created; none otherwise."""
    if not (user is not None and getattr(user, "is_authenticated", False) and user.is_active):
        return Job.objects.none()
    if user.is_superuser:
        return Job.objects.all()
    if not user.has_perm(VIEW_JOBS_PERMISSION):
        return Job.objects.none()
    return Job.objects.filter(Q(series__in=visible_series(user)) | Q(created_by=user))


def series_processing_state(series) -> dict | None:
    """The series' processing status (rules, chosen template, explanation), None before evaluation."""
    state = SeriesState.objects.filter(series=series).select_related("template").first()
    if state is None:
        return None
    return {"status": state.status, "template": state.template.name if state.template else None,
            "explanation": state.explanation or None,
            "evaluated_at": state.evaluated_at.isoformat() if state.evaluated_at else None}


def job_summary(job_id: int) -> dict:
    """What the CLI prints and the UI/API show: ``{job, status, stages, results, error}``."""
    job = Job.objects.get(pk=job_id)
    return {
        "job": job.pk,
        "status": job.status,
        "stages": [
            {"name": s.name, "status": s.status, "done": s.done, "total": s.total, "error": s.error}
            for s in job.stages.all()
        ],
        "results": result_paths(job_id),
        "error": job.error,
    }


def result_paths(job_id: int) -> list[str]:
    """Where the results are: exported folder copies when there are any, else the re-identified files."""
    paths = []
    for result in Result.objects.filter(job_id=job_id):
        exported = [e["path"] for e in result.exported_to if e.get("ok") and e.get("path", "").startswith("/")]
        paths += exported or ([result.path] if result.path else [])
    return paths


def log_entries(*, job_id: int | None = None, series_id: int | None = None, level: str | None = None,
                stage: str | None = None, job_status: str | None = None, series_status: str | None = None,
                search: str | None = None) -> QuerySet[LogEntry]:
    """The processing log filtered by job, series, level, stage, job or series status, and text."""
    qs = LogEntry.objects.all()
    if job_id is not None:
        qs = qs.filter(job_id=job_id)
    if series_id is not None:
        qs = qs.filter(series_id=series_id)
    if level:
        qs = qs.filter(level=level)
    if stage:
        qs = qs.filter(stage=stage)
    if job_status:
        qs = qs.filter(job__status=job_status)
    if series_status:
        qs = qs.filter(series__processing_state__status=series_status)
    if search:
        qs = qs.filter(message__icontains=search)
    return qs.order_by("time", "id")


def series_states(status: str | None = None) -> QuerySet[SeriesState]:
    qs = SeriesState.objects.select_related("series", "template")
    return qs.filter(status=status) if status else qs
