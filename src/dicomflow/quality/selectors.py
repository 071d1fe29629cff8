"""Reads of the quality loop: ratings as CSV, comparisons of a job, processing statistics.

Everything is scoped like the job lists: a user sees jobs of the projects they are a member of
(statistics need Manage there: data managers and project admins), superusers see everything.
Nothing identifying is in any of it: jobs by number, projects by key, templates by name.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import timedelta

from django.db.models import Avg, Count, F, Q, QuerySet
from django.db.models.functions import TruncWeek
from django.utils import timezone

from dicomflow.errors import PermissionDeniedError
from dicomflow.processing.models import Job, JobStage, JobStatus, SeriesState, StageStatus
from dicomflow.projects.models import Capability
from dicomflow.quality.models import JobRating, RoiRating, StructureComparison

CSV_COLUMNS = ("job", "project", "template", "job_finished", "assessor", "overall_score", "overall_comment",
               "roi", "rating", "minutes", "roi_comment", "dice", "hd95_mm", "apl_mm", "rated_at")


def _jobs(user, project: str | None, template: str | None) -> QuerySet[Job]:
    from dicomflow.processing.selectors import visible_jobs

    jobs = visible_jobs(user)
    if project:
        jobs = jobs.filter(project_key=project)
    if template:
        jobs = jobs.filter(template__name=template)
    return jobs


def job_ratings(job: Job) -> list[dict]:
    return [{"assessor": r.assessor_name, "overall_score": r.overall_score, "comment": r.comment,
             "rated_at": r.rated_at.isoformat(),
             "rois": [{"name": x.roi_name, "rating": x.rating_value, "minutes": x.minutes, "comment": x.comment}
                      for x in r.rois.all()]}
            for r in JobRating.objects.filter(job=job).prefetch_related("rois")]


def job_comparisons(job: Job) -> list[dict]:
    return [{"id": c.pk, "computed_at": c.computed_at.isoformat(), "tolerance_mm": c.tolerance_mm, "rois": c.rois,
             "only_in_result": c.only_in_result, "only_in_reference": c.only_in_reference, "error": c.error}
            for c in StructureComparison.objects.filter(job=job)]


def ratings_csv(user, *, project: str | None = None, template: str | None = None) -> str:
    """Every rating of the jobs ``user`` sees (optionally one project or template), one row per ROI,
    with the latest comparison's Dice, HD95 and APL of that ROI when there is one."""
    jobs = _jobs(user, project, template)
    rows = (RoiRating.objects.filter(rating__job__in=jobs)
            .select_related("rating", "rating__job", "rating__job__template")
            .order_by("rating__job_id", "rating__assessor_name", "roi_name"))
    metrics: dict[tuple[int, str], dict] = {}
    for comparison in StructureComparison.objects.filter(job__in=jobs, error="").order_by("computed_at"):
        for roi in comparison.rois:
            metrics[(comparison.job_id, roi["name"].casefold())] = roi
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        job = row.rating.job
        measured = metrics.get((job.pk, row.roi_name.casefold()), {})
        writer.writerow([job.pk, job.project_key, job.template.name if job.template else "",
                         job.finished_at.isoformat() if getattr(job, "finished_at", None) else "",
                         row.rating.assessor_name, row.rating.overall_score, row.rating.comment, row.roi_name,
                         row.rating_value, "" if row.minutes is None else row.minutes, row.comment,
                         _number(measured.get("dice")), _number(measured.get("hd95_mm")), _number(measured.get("apl_mm")),
                         row.rating.rated_at.isoformat()])
    return out.getvalue()


def _number(value) -> str:
    return "" if value is None else f"{value:.4f}"


def may_see_statistics(user) -> bool:
    from dicomflow.projects.selectors import can, projects_for

    return any(can(user, p, Capability.MANAGE) for p in projects_for(user))


def statistics(user, *, project: str | None = None, template: str | None = None, weeks: int = 12) -> dict:
    """Series received, matched, processed and failed (by stage), average time per stage, per
    template and per week, over the last ``weeks`` weeks, for the projects the user manages."""
    from dicomflow.projects.selectors import can, projects_for

    managed = [p.key for p in projects_for(user) if can(user, p, Capability.MANAGE)]
    if not managed and not getattr(user, "is_superuser", False):
        raise PermissionDeniedError("statistics are for administrators and data managers")
    since = timezone.now() - timedelta(weeks=weeks)
    jobs = _jobs(user, project, template).filter(created_at__gte=since)
    if not getattr(user, "is_superuser", False):
        jobs = jobs.filter(project_key__in=managed)
    series = _series(user, project, since)
    states = SeriesState.objects.filter(series__in=series)
    matched = states.filter(template__isnull=False).count()
    stages = JobStage.objects.filter(job__in=jobs)
    durations = (stages.filter(status=StageStatus.DONE, started_at__isnull=False, finished_at__isnull=False)
                 .values("name").annotate(seconds=Avg(F("finished_at") - F("started_at")), count=Count("pk")))
    failed_by_stage = dict(stages.filter(status=StageStatus.FAILED).values_list("name").annotate(n=Count("pk")))
    per_template = []
    for row in (jobs.values("template__name").annotate(
            jobs=Count("pk"), finished=Count("pk", filter=Q(status=JobStatus.FINISHED)),
            failed=Count("pk", filter=Q(status=JobStatus.FAILED))).order_by("template__name")):
        per_template.append({"template": row["template__name"] or "", "jobs": row["jobs"], "finished": row["finished"],
                             "failed": row["failed"]})
    weekly: dict[str, dict] = defaultdict(lambda: {"received": 0, "jobs": 0, "finished": 0, "failed": 0})
    for row in series.annotate(week=TruncWeek("created_at")).values("week").annotate(n=Count("pk")):
        weekly[row["week"].date().isoformat()]["received"] += row["n"]
    for row in jobs.annotate(week=TruncWeek("created_at")).values("week").annotate(
            n=Count("pk"), finished=Count("pk", filter=Q(status=JobStatus.FINISHED)),
            failed=Count("pk", filter=Q(status=JobStatus.FAILED))):
        week = weekly[row["week"].date().isoformat()]
        week.update(jobs=week["jobs"] + row["n"], finished=week["finished"] + row["finished"],
                    failed=week["failed"] + row["failed"])
    return {
        "since": since.date().isoformat(), "weeks": weeks, "project": project or None, "template": template or None,
        "series_received": series.count(), "series_matched": matched,
        "jobs": jobs.count(), "jobs_finished": jobs.filter(status=JobStatus.FINISHED).count(),
        "jobs_failed": jobs.filter(status=JobStatus.FAILED).count(),
        "failed_by_stage": failed_by_stage,
        "average_stage_seconds": {r["name"]: _seconds(r["seconds"]) for r in durations},
        "per_template": per_template,
        "per_week": [{"week": week, **counts} for week, counts in sorted(weekly.items())],
    }


def _seconds(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return round(value.total_seconds(), 3)
    return round(float(value) / 1e6, 3)  # some backends return microseconds


def _series(user, project: str | None, since):
    from dicomflow.catalog.models import Series
    from dicomflow.projects.selectors import can, projects_for

    series = Series.objects.filter(created_at__gte=since)
    if project:
        return series.filter(project__key=project)
    if getattr(user, "is_superuser", False):
        return series
    managed = [p.pk for p in projects_for(user) if can(user, p, Capability.MANAGE)]
    return series.filter(project_id__in=managed)
