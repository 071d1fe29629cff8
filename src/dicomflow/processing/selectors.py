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


# --- the processing desk (web pages): what a user may see, filtered, searched and sorted ---------------------
#: What the desk calls a series' state: its latest visible job's state, else the rules' verdict.
DESK_STATUSES = {
    "matched": "Matched", "not_matched": "Not matched", "multiple": "Multiple matches", "no_template": "No template",
    "check_failed": "Check failed", "not_evaluated": "Not evaluated", "sent": "Sent", "processing": "Processing",
    "processed": "Processed", "failed": "Failed",
}
_RULE_TO_DESK = {
    "RULE_MATCHED": "matched", "RULE_NOT_MATCHED": "not_matched", "MULTIPLE_RULES_MATCHED": "multiple",
    "NO_TEMPLATE_FOUND": "no_template", "CHECK_FAILED": "check_failed", "ERROR": "failed", "DEIDENTIFICATION_FAILED": "failed",
    "RESULT_INVALID": "failed", "EXPORT_FAILED": "failed", "RESULT_EXPORTED": "processed",
}
_JOB_TO_DESK = {"pending": "sent", "running": "processing", "waiting": "processing",
                "finished": "processed", "failed": "failed"}
DESK_SORTS = {
    "patient": ("study__patient__patient_id", "study__patient__patient_name"),
    "name": ("study__patient__patient_name",), "date": ("study__study_date",), "-date": ("-study__study_date",),
    "modality": ("modality",), "description": ("description",), "status": ("desk_status",),
    "instances": ("-n_instances",),
}


def _desk_status_expression(latest_jobs):
    """The desk status of each series: its latest (non-cancelled) job's, else its rules' outcome.

    ONE correlated subquery gives the latest job's desk status (a CASE inside it), so the
    expression does not repeat the subquery for every WHEN. Rows of a page only: filtering by
    status goes through :func:`_desk_status_filter` (set-based), not through this expression.
    """
    from django.db.models import Case, CharField, Subquery, Value, When
    from django.db.models.functions import Coalesce

    job_desk = Case(*[When(status=job, then=Value(desk)) for job, desk in _JOB_TO_DESK.items()],
                    default=Value(None), output_field=CharField())
    rules = Case(*[When(processing_state__status=rule, then=Value(desk)) for rule, desk in _RULE_TO_DESK.items()],
                 default=Value("not_evaluated"), output_field=CharField())
    return Coalesce(Subquery(latest_jobs.annotate(desk=job_desk).values("desk")[:1], output_field=CharField()),
                    rules, output_field=CharField())


def _desk_status_filter(status: str, jobs):
    """``Q`` of the series whose desk status is ``status``, as EXISTS / NOT EXISTS conditions that
    PostgreSQL (and SQLite) run as semi- and anti-joins over the whole catalog at once, instead of
    computing every series' status row by row."""
    from django.db.models import Exists, OuterRef, Q

    live = jobs.exclude(status="cancelled")
    newer = live.filter(series=OuterRef("series")).filter(
        Q(created_at__gt=OuterRef("created_at")) | Q(created_at=OuterRef("created_at"), pk__gt=OuterRef("pk")))
    job_states = [job for job, desk in _JOB_TO_DESK.items() if desk == status]
    latest_in = live.filter(series=OuterRef("pk"), status__in=job_states).filter(~Exists(newer))
    no_job = ~Exists(live.filter(series=OuterRef("pk")))
    rule_states = [rule for rule, desk in _RULE_TO_DESK.items() if desk == status]
    if status == "not_evaluated":
        by_rules = ~Q(processing_state__status__in=list(_RULE_TO_DESK)) | Q(processing_state__isnull=True)
    else:
        by_rules = Q(processing_state__status__in=rule_states)
    q = no_job & by_rules if (rule_states or status == "not_evaluated") else Q(pk__in=[])
    return (Exists(latest_in) | q) if job_states else q


def series_for_processing(user, *, status: str = "", search: str = "", sort: str = "-date"):
    """Catalogued series ``user`` may see, with patient, instance count, the rules' template, the
    latest visible job and ``desk_status`` (a key of :data:`DESK_STATUSES`); filtered and sorted.

    Shaped for a million-instance catalog: the instance count and the latest job are correlated
    subqueries that the database evaluates for the rows of the page only (PostgreSQL postpones
    them past ORDER BY/LIMIT, and the paginator's COUNT drops them), and the status filter is
    set-based (:func:`_desk_status_filter`). No GROUP BY over the instances.
    """
    from django.db.models import Count, IntegerField, OuterRef, Q, Subquery

    from django.db.models.functions import Coalesce

    from dicomflow.catalog.models import Instance
    from dicomflow.projects.selectors import visible_series

    jobs = visible_jobs(user)
    latest = jobs.filter(series=OuterRef("pk")).exclude(status="cancelled").order_by("-created_at", "-id")
    n_instances = (Instance.objects.filter(series=OuterRef("pk")).order_by().values("series")
                   .annotate(n=Count("pk")).values("n"))
    qs = (visible_series(user).select_related("study", "study__patient", "processing_state",
                                              "processing_state__template", "project")
          .annotate(n_instances=Coalesce(Subquery(n_instances, output_field=IntegerField()), 0),
                    latest_job_id=Subquery(latest.values("pk")[:1]),
                    desk_status=_desk_status_expression(latest)))
    if status in DESK_STATUSES:
        qs = qs.filter(_desk_status_filter(status, jobs))
    if search := (search or "").strip():
        qs = qs.filter(Q(study__patient__patient_id__icontains=search)
                       | Q(study__patient__patient_name__icontains=search.replace(" ", "^"))
                       | Q(study__patient__patient_name__icontains=search))
    return qs.order_by(*DESK_SORTS.get(sort, DESK_SORTS["-date"]), "series_number", "pk")


def desk_statuses(user, series_uids) -> dict[str, dict]:
    """``{uid: {"status", "label", "job"}}`` for the visible series among ``series_uids`` (page polling)."""
    rows = series_for_processing(user, sort="date").filter(series_instance_uid__in=list(series_uids)[:500])
    return {s.series_instance_uid: {"status": s.desk_status, "label": DESK_STATUSES[s.desk_status],
                                    "job": s.latest_job_id} for s in rows}


def _patient_match(user, search: str):
    """Jobs/log lines whose series' patient ID or name holds ``search``; clinical patients only for
    those who may see the clinical pool (a job of one's project may have a clinical series)."""
    from django.db.models import Q

    from dicomflow.projects.selectors import can_see_clinical

    q = (Q(series__study__patient__patient_id__icontains=search)
         | Q(series__study__patient__patient_name__icontains=search.replace(" ", "^")))
    return q if can_see_clinical(user) else q & Q(series__project__isnull=False)


def jobs_for_desk(user, *, status: str = "", search: str = ""):
    """Visible jobs, newest first, with their series, patient and template; ``search``: a job number
    (``12`` or ``#12``), a patient ID or name, or a template name."""
    from django.db.models import Q

    qs = visible_jobs(user).select_related("series", "series__study__patient", "template")
    if status:
        qs = qs.filter(status=status)
    if search := (search or "").strip():
        q = _patient_match(user, search) | Q(template__name__icontains=search)
        if search.lstrip("#").isdigit():
            q |= Q(pk=int(search.lstrip("#")))
        qs = qs.filter(q)
    return qs.order_by("-created_at", "-id")


def visible_log(user, *, level: str = "", job_status: str = "", search: str = ""):
    """Every processing-log line of the jobs ``user`` sees (lines of no job: superusers only), newest
    first; ``search``: a job number, a patient ID or name, or words of the message."""
    from django.db.models import Q

    from dicomflow.accounts.actors import is_active_user

    scope = Q(job__in=visible_jobs(user))
    if is_active_user(user) and user.is_superuser:
        scope |= Q(job__isnull=True)
    qs = LogEntry.objects.filter(scope).select_related("job", "series__study__patient")
    if level:
        qs = qs.filter(level=level)
    if job_status:
        qs = qs.filter(job__status=job_status)
    if search := (search or "").strip():
        q = Q(message__icontains=search) | _patient_match(user, search)
        if search.lstrip("#").isdigit():
            q |= Q(job_id=int(search.lstrip("#")))
        qs = qs.filter(q)
    return qs.order_by("-time", "-id")


def result_series(job_id: int) -> list:
    """The catalogued series holding a job's re-identified results (results are catalogued after
    re-identification), found by the SOP Instance UIDs of the result files."""
    import pydicom

    from dicomflow.catalog.models import Series

    uids = []
    for path in Result.objects.filter(job_id=job_id, reidentified=True).values_list("path", flat=True):
        try:
            uids.append(str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
                            .SOPInstanceUID))
        except (OSError, AttributeError, ValueError):
            continue
    return list(Series.objects.filter(instances__sop_instance_uid__in=uids).distinct())


def qc_picture_inputs(job_id: int):
    """(image series, ROI outlines) of a job's result for the QC preview: the re-identified
    structure set drawn over the catalogued series the job processed (InputError when there is none)."""
    from dicomflow.core.segmentation import read_image_series
    from dicomflow.core.segmentation.preview import read_outlines
    from dicomflow.errors import InputError
    from dicomflow.processing.models import ResultKind
    from dicomflow.processing.services import instance_paths

    job = Job.objects.get(pk=job_id)
    result = (Result.objects.filter(job_id=job_id, reidentified=True, kind=ResultKind.RTSTRUCT).order_by("id").first()
              or Result.objects.filter(job_id=job_id, reidentified=True).order_by("id").first())
    if result is None or job.series_id is None:
        raise InputError(f"job #{job_id} has no re-identified structure set to show")
    series = read_image_series(instance_paths(job.series_id))
    return series, read_outlines(result.path, series)
