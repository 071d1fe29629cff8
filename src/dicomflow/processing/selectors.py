"""Processing selectors (reads): which jobs a user sees, job summaries, the processing log, series states."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from dicomflow.processing.models import Job, LogEntry, Result, Ruleset, SeriesState


def visible_jobs(user) -> QuerySet[Job]:
    """Jobs of the projects ``user`` is a member of (any role); all for superusers and the CLI operator.

    A job belongs to the project whose keys de-identify its series (``project_key``); jobs of a key
    with no Project row are seen by superusers and the operator only.
    """
    from dicomflow.accounts.actors import is_active_user, is_operator
    from dicomflow.projects.models import Project

    if not is_active_user(user):
        return Job.objects.none()
    if user.is_superuser or is_operator(user):
        return Job.objects.all()
    keys = Project.objects.filter(memberships__user=user).values("key")
    return Job.objects.filter(project_key__in=keys)


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


def rulesets_naming(template_name: str) -> list[str]:
    """Names of the rulesets that choose ``template_name`` (it cannot be deleted while they do)."""
    return [r.name for r in Ruleset.objects.all() if (r.definition or {}).get("template") == template_name]


def series_states(status: str | None = None) -> QuerySet[SeriesState]:
    qs = SeriesState.objects.select_related("series", "template")
    return qs.filter(status=status) if status else qs
