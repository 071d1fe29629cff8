"""Reads of research projects, and who may see what: the one visibility rule of web, API and admin.

Access rule:
- the clinical pool ("Study0": rows with ``project`` null) is visible to superusers and to users
  holding the permission ``projects.view_clinical_pool``;
- a project's de-identified copy is visible to the members of that project (any role) and to
  superusers;
- nobody else sees anything.
Re-identification needs the Re-identifier role in that very project (superusers included: the
role is given explicitly, so every re-identification has a named, audited grant).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Count, Prefetch, Q, QuerySet

from dicomflow.accounts.actors import is_operator
from dicomflow.catalog.models import Instance, Patient, Series, Study
from dicomflow.errors import NotFoundError, PermissionDeniedError
from dicomflow.progress import Status
from dicomflow.projects.models import (
    Capability,
    Event,
    Project,
    ProjectMembership,
    ProjectUpload,
    StagedSeries,
    StagingJob,
    Subject,
    UploadSlot,
    UploadSlotLink,
)

CLINICAL_POOL_PERMISSION = "projects.view_clinical_pool"
# Imports and uploads go into the clinical pool, so they need these model permissions (or superuser).
UPLOAD_PERMISSION = "intake.add_uploadsession"
VIEW_IMPORTS_PERMISSION = "intake.view_importrun"


def _active(user) -> bool:
    return bool(user is not None and getattr(user, "is_authenticated", False) and user.is_active)


def can_see_clinical(user) -> bool:
    return _active(user) and (user.is_superuser or is_operator(user) or user.has_perm(CLINICAL_POOL_PERMISSION))


def can_upload(user) -> bool:
    """Whether ``user`` may upload into the clinical pool (browser, API, SDK)."""
    return _active(user) and (user.is_superuser or user.has_perm(UPLOAD_PERMISSION))


def can_view_imports(user) -> bool:
    """Whether ``user`` may read the import records (what each import saw and did)."""
    return _active(user) and (user.is_superuser or user.has_perm(VIEW_IMPORTS_PERMISSION))


def projects_for(user) -> QuerySet[Project]:
    """Projects whose copies ``user`` may see."""
    if not _active(user):
        return Project.objects.none()
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user).distinct()


def membership(user, project: Project) -> ProjectMembership | None:
    if not _active(user):
        return None
    return ProjectMembership.objects.filter(user=user, project=project).first()


def can_reidentify(user, project: Project) -> bool:
    member = membership(user, project) if not is_operator(user) else None
    return member is not None and member.can_reidentify


def can(user, project: Project, capability: str) -> bool:
    """Whether ``user`` may do ``capability`` in ``project``.

    Superusers and the command-line operator may do everything but re-identify: re-identification
    needs the Re-identifier role given by name in that very project.
    """
    if not _active(user):
        return False
    if capability != Capability.REIDENTIFY and (user.is_superuser or is_operator(user)):
        return True
    if is_operator(user):
        return False
    member = membership(user, project)
    return member is not None and member.can(capability)


def require(user, project: Project, capability: str) -> None:
    """Raise unless ``user`` may do ``capability`` in ``project``.

    Someone who is not a member at all gets NotFoundError (the project's objects do not exist for
    them: 404); a member without the capability gets PermissionDeniedError (403).
    """
    if can(user, project, capability):
        return
    if not _active(user) or not (user.is_superuser or is_operator(user) or membership(user, project)):
        raise NotFoundError(f"no project '{project.key}'")
    label = Capability(capability).label
    raise PermissionDeniedError(f"your role in project '{project.key}' does not allow you to {label}")


def project_for(user, key: str, capability: str = Capability.VIEW) -> Project:
    """The project ``key`` checked for ``capability``; NotFoundError for unknown and foreign projects."""
    project = Project.objects.filter(key=key).first()
    if project is None:
        raise NotFoundError(f"no project '{key}'")
    require(user, project, capability)
    return project


def _scope(user, field: str) -> Q | None:
    """The filter on ``<field>`` (a catalog row's project) for what ``user`` may see; None = nothing."""
    if not _active(user):
        return None
    if user.is_superuser:
        return Q()
    allowed = Q(**{f"{field}__in": Project.objects.filter(memberships__user=user).values("pk")})
    if user.has_perm(CLINICAL_POOL_PERMISSION):
        allowed |= Q(**{f"{field}__isnull": True})
    return allowed


def visible_studies(user) -> QuerySet[Study]:
    scope = _scope(user, "project")
    return Study.objects.none() if scope is None else Study.objects.filter(scope)


def visible_series(user) -> QuerySet[Series]:
    scope = _scope(user, "project")
    return Series.objects.none() if scope is None else Series.objects.filter(scope)


def visible_patients(user) -> QuerySet[Patient]:
    scope = _scope(user, "project")
    return Patient.objects.none() if scope is None else Patient.objects.filter(scope)


def visible_instances(user) -> QuerySet[Instance]:
    scope = _scope(user, "series__project")
    return Instance.objects.none() if scope is None else Instance.objects.filter(scope)


def project_studies(project: Project) -> QuerySet[Study]:
    return Study.objects.filter(project=project)


# --- pseudonymization state of clinical studies ----------------------------------------------------
NONE, PARTLY, FULLY = "none", "partly", "fully"


def study_pseudonymization(study: Study, projects: QuerySet[Project] | None = None) -> list[dict]:
    """Per project: how many of the clinical study's series have a complete de-identified copy.

    A series counts when its copy holds at least as many instances as the clinical series holds
    now (a quarantined instance, or one that arrived after staging, leaves it incomplete).
    ``status`` is "none", "partly" or "fully".
    """
    projects = Project.objects.all() if projects is None else projects
    source_counts = dict(
        Series.objects.filter(study=study).annotate(n=Count("instances")).values_list("pk", "n")
    )
    total = len(source_counts)
    complete: dict[int, int] = {}
    copies = (
        StagedSeries.objects.filter(source_series__study=study, copy_series__isnull=False)
        .annotate(n=Count("copy_series__instances"))
        .values_list("project_id", "source_series_id", "n")
    )
    for project_id, source_id, n in copies:
        if n >= source_counts.get(source_id, 0):
            complete[project_id] = complete.get(project_id, 0) + 1
    out = []
    for project in projects.order_by("key"):
        staged = complete.get(project.pk, 0)
        status = NONE if staged == 0 else FULLY if staged >= total else PARTLY
        out.append({"project": project.key, "status": status, "series_staged": staged, "series_total": total})
    return out


def copies_of(study: Study, project: Project) -> QuerySet[Series]:
    """The project's copy series made from ``study``'s clinical series."""
    return Series.objects.filter(
        pk__in=StagedSeries.objects.filter(project=project, source_series__study=study).values("copy_series")
    )


def project_summaries() -> list[dict]:
    """What ``dicomflow project list`` shows."""
    rows = Project.objects.annotate(
        n_subjects=Count("subjects", distinct=True),
        n_members=Count("memberships", distinct=True),
        n_studies=Count("studies", distinct=True),
    ).order_by("key")
    return [
        {
            "key": p.key,
            "name": p.name,
            "subjects": p.n_subjects,
            "members": p.n_members,
            "studies": p.n_studies,
            "options": p.deid_options().to_dict(),
        }
        for p in rows
    ]


def upload_links(session) -> dict:
    """What a resumable upload led to: ``{"project", "studies", "project_studies", "jobs"}``.

    ``studies``: the uploaded studies' UIDs (as sent); ``project_studies``: the project's copies of
    them (uploads into a project); ``jobs``: processing jobs on the uploaded series (the upload's
    template, or the rules).
    """
    from dicomflow.projects.models import ProjectUpload

    link = ProjectUpload.objects.filter(session_id=session.pk).select_related("project").first()
    series_uids = (session.result or {}).get("series_uids") or []
    uploaded = Series.objects.filter(series_instance_uid__in=series_uids, project__isnull=True)
    studies = sorted(set(uploaded.values_list("study__study_instance_uid", flat=True)))
    jobs = set(link.jobs if link else [])
    if series_uids:
        from dicomflow.processing.models import Job

        jobs |= set(Job.objects.filter(series__in=uploaded).values_list("pk", flat=True))
    return {"project": link.project.key if link else None, "studies": studies,
            "project_studies": list(link.staged_studies) if link else [], "jobs": sorted(jobs)}


def subjects_of(project: Project) -> QuerySet[Subject]:
    return Subject.objects.filter(project=project).order_by("study_subject_id")


def subject_of(project: Project, subject_id: int) -> Subject:
    subject = Subject.objects.filter(project=project, pk=subject_id).first()
    if subject is None:
        raise NotFoundError(f"no subject #{subject_id} in project '{project.key}'")
    return subject


def event_of(subject: Subject, event_id: int) -> Event:
    event = Event.objects.filter(subject=subject, pk=event_id).first()
    if event is None:
        raise NotFoundError(f"subject #{subject.pk} has no event #{event_id}")
    return event


def slot_of(project: Project, slot_id: int) -> UploadSlot:
    slot = (UploadSlot.objects.filter(event__subject__project=project, pk=slot_id)
            .select_related("event__subject__project", "study").first())
    if slot is None:
        raise NotFoundError(f"no upload slot #{slot_id} in project '{project.key}'")
    return slot


def copy_study(project: Project, study_uid: str) -> Study:
    """A study of the project's de-identified copy by its UID."""
    study = Study.objects.filter(project=project, study_instance_uid=study_uid).first()
    if study is None:
        raise NotFoundError(f"no study with this UID in project '{project.key}'")
    return study


def members_of(project: Project) -> QuerySet[ProjectMembership]:
    return ProjectMembership.objects.filter(project=project).select_related("user").order_by("user__username")


def staging_jobs_of(project: Project):
    from dicomflow.projects.models import StagingJob

    return StagingJob.objects.filter(project=project).select_related("project").order_by("-created_at", "-id")


def staging_job_of(project: Project, job_id: int):
    job = staging_jobs_of(project).filter(pk=job_id).first()
    if job is None:
        raise NotFoundError(f"no staging job #{job_id} in project '{project.key}'")
    return job


__all__ = [
    "CLINICAL_POOL_PERMISSION",
    "UPLOAD_PERMISSION",
    "VIEW_IMPORTS_PERMISSION",
    "can",
    "can_upload",
    "can_view_imports",
    "project_for",
    "require",
    "can_reidentify",
    "can_see_clinical",
    "copies_of",
    "copy_study",
    "event_of",
    "members_of",
    "slot_of",
    "staging_job_of",
    "staging_jobs_of",
    "subject_of",
    "subjects_of",
    "upload_links",
    "membership",
    "project_studies",
    "project_summaries",
    "projects_for",
    "study_pseudonymization",
    "visible_instances",
    "visible_patients",
    "visible_series",
    "visible_studies",
]


# --- reads of the research pages (subjects, uploader, DICOM lookup) --------------------------------
def subjects_overview(project: Project) -> list:
    """The project's subjects with their events, each event's slots, the linked study and the history
    of every slot (newest link first), in a fixed number of queries."""
    links = UploadSlotLink.objects.select_related("linked_by").order_by("-linked_at", "-id")
    slots = UploadSlot.objects.select_related("study").prefetch_related(Prefetch("links", queryset=links))
    events = Event.objects.prefetch_related(Prefetch("slots", queryset=slots))
    return list(Subject.objects.filter(project=project).prefetch_related(Prefetch("events", queryset=events)))


def slot_in(project: Project, slot_id) -> UploadSlot:
    """One upload slot of ``project`` (NotFoundError for another project's or an unknown slot)."""
    slot = (UploadSlot.objects.select_related("event__subject", "study")
            .filter(pk=_int_or_none(slot_id), event__subject__project=project).first())
    if slot is None:
        raise NotFoundError(f"no upload slot #{slot_id} in project '{project.key}'")
    return slot


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def linkable_studies(project: Project) -> QuerySet[Study]:
    """The project's own (de-identified) studies: what a slot can be linked to."""
    return Study.objects.filter(project=project).select_related("patient").order_by("patient__patient_id",
                                                                                    "-study_date", "pk")


def project_study(project: Project, study_id) -> Study:
    """One of the project's own studies (NotFoundError otherwise)."""
    study = linkable_studies(project).filter(pk=_int_or_none(study_id)).first()
    if study is None:
        raise NotFoundError(f"no such study in project '{project.key}'")
    return study


def lookup_pool(user, project: Project) -> QuerySet[Patient]:
    """The patients the DICOM lookup of ``project`` searches: the clinical pool for users who may see it
    (they stage from it), otherwise the project's own de-identified copy."""
    if can_see_clinical(user):
        return Patient.objects.filter(project__isnull=True)
    if can(user, project, Capability.VIEW):
        return Patient.objects.filter(project=project)
    return Patient.objects.none()


def _id_match(project: Project, term: str) -> Q:
    """Patients whose Patient ID holds ``term``, or whose study subject ID in ``project`` does."""
    subjects = Subject.objects.filter(project=project, study_subject_id__icontains=term)
    return (Q(patient_id__icontains=term) | Q(pk__in=subjects.filter(patient__isnull=False).values("patient"))
            | Q(project=project, patient_id__in=subjects.values("study_subject_id")))


def lookup_suggestions(user, project: Project, term: str, limit: int = 10) -> list[dict]:
    """At most ``limit`` patients whose Patient ID or study subject ID contains ``term``."""
    term = (term or "").strip()
    if not term:
        return []
    rows = lookup_pool(user, project).filter(_id_match(project, term)).order_by("patient_id", "pk")[:limit]
    subject_ids = _subject_ids(project, rows)
    return [{"id": p.pk, "patient_id": p.patient_id, "subject": subject_ids.get(p.pk, "")} for p in rows]


def _subject_ids(project: Project, patients) -> dict[int, str]:
    return dict(Subject.objects.filter(project=project, patient__in=list(patients))
                .values_list("patient_id", "study_subject_id"))


def lookup_patients(user, project: Project, terms: Iterable[str], limit: int = 200) -> list[dict]:
    """Patients matching any of the partial IDs ``terms``, each with its studies and whether the study
    is pseudonymized in ``project`` (every series has a complete de-identified copy there)."""
    terms = [t.strip() for t in terms if t and t.strip()]
    if not terms:
        return []
    match = Q()
    for term in terms:
        match |= _id_match(project, term)
    patients = list(lookup_pool(user, project).filter(match).order_by("patient_id", "pk")[:limit])
    subject_ids = _subject_ids(project, patients)
    studies = list(Study.objects.filter(patient__in=patients).annotate(n_series=Count("series", distinct=True))
                   .order_by("-study_date", "pk"))
    done = pseudonymized_studies(project, [s.pk for s in studies if s.project_id is None])
    by_patient: dict[int, list] = {}
    for study in studies:
        pseudonymized = study.project_id == project.pk or study.pk in done
        by_patient.setdefault(study.patient_id, []).append({"study": study, "pseudonymized": pseudonymized})
    return [{"patient": p, "subject": subject_ids.get(p.pk, ""), "studies": by_patient.get(p.pk, [])}
            for p in patients]


def pseudonymized_studies(project: Project, study_ids: list[int]) -> set[int]:
    """Of the clinical studies ``study_ids``, those whose every series has a complete copy in ``project``
    (the rule of ``study_pseudonymization``, for many studies in two queries)."""
    if not study_ids:
        return set()
    sources = (Series.objects.filter(study_id__in=study_ids).annotate(n=Count("instances"))
               .values_list("pk", "study_id", "n"))
    need: dict[int, int] = {}
    series_study: dict[int, tuple[int, int]] = {}
    for pk, study_id, n in sources:
        need[study_id] = need.get(study_id, 0) + 1
        series_study[pk] = (study_id, n)
    complete: dict[int, int] = {}
    copies = (StagedSeries.objects.filter(project=project, source_series_id__in=series_study, copy_series__isnull=False)
              .annotate(n=Count("copy_series__instances")).values_list("source_series_id", "n"))
    for source_id, n in copies:
        study_id, wanted = series_study[source_id]
        if n >= wanted:
            complete[study_id] = complete.get(study_id, 0) + 1
    return {sid for sid, total in need.items() if complete.get(sid, 0) >= total}


def lookup_study(user, project: Project, study_uid: str) -> Study:
    """A study the lookup of ``project`` shows ``user`` (NotFoundError otherwise)."""
    study = Study.objects.filter(study_instance_uid=study_uid, patient__in=lookup_pool(user, project)).first()
    if study is None:
        raise NotFoundError("no such study in this lookup")
    return study


def study_series_tree(study: Study) -> list[dict]:
    """The study's series (number, modality, description, instances) with RT references both ways and
    approval status, for the lookup's table and tree views."""
    from dicomflow.catalog.rt_selectors import study_tree

    nodes = {n["uid"]: n for n in study_tree(study)["series"]}
    rows = []
    for s in study.series.annotate(n=Count("instances")).order_by("series_number", "series_instance_uid"):
        node = nodes.get(s.series_instance_uid, {})
        rows.append({
            "uid": s.series_instance_uid, "number": s.series_number, "modality": s.modality,
            "description": s.description, "instances": s.n,
            "references": [r for r in node.get("references", []) if r in nodes],
            "referenced_by": [r for r in node.get("referenced_by", []) if r in nodes],
            "approval_status": node.get("approval_status"),
        })
    return rows


def staging_job_in(project: Project, job_id) -> StagingJob:
    """One staging job of ``project`` (NotFoundError otherwise)."""
    job = StagingJob.objects.filter(project=project, pk=_int_or_none(job_id)).select_related("source_study").first()
    if job is None:
        raise NotFoundError(f"no staging job #{job_id} in project '{project.key}'")
    return job


def staging_verification(job) -> dict:
    """Whether a staging job finished with everything in place: files released, RT references intact
    in the copy, nothing found by the leak scan."""
    rt = job.rt_integrity or {}  # core.deid.rtcheck: {"references", "resolved", "external": [...]}
    external = len(rt.get("external") or [])
    finished = job.status == Status.FINISHED
    files_ok = finished and job.files_out > 0 and not job.failed
    rt_ok = finished and external == 0
    leak_ok = finished and job.leak_findings == 0
    return {
        "finished": finished, "files_in": job.files_in, "files_out": job.files_out, "files_ok": files_ok,
        "quarantined": len(job.quarantined or []), "references": rt.get("references", 0),
        "resolved": rt.get("resolved", 0), "external": external, "rt_ok": rt_ok,
        "leak_findings": job.leak_findings, "leak_ok": leak_ok, "verified": files_ok and rt_ok and leak_ok,
    }


def subject_in(project: Project, subject_id) -> Subject:
    subject = Subject.objects.filter(project=project, pk=_int_or_none(subject_id)).first()
    if subject is None:
        raise NotFoundError(f"no subject #{subject_id} in project '{project.key}'")
    return subject


def event_in(project: Project, event_id) -> Event:
    event = Event.objects.filter(subject__project=project, pk=_int_or_none(event_id)).select_related("subject").first()
    if event is None:
        raise NotFoundError(f"no event #{event_id} in project '{project.key}'")
    return event


def upload_slots(project: Project) -> list[dict]:
    """Every upload slot of the project with its subject's expected sex and birth date/year: what the
    uploader's sanity check compares the dropped headers with."""
    rows = (UploadSlot.objects.filter(event__subject__project=project).select_related("event__subject", "study")
            .order_by("event__subject__study_subject_id", "event__order", "event__name", "name"))
    return [{
        "id": s.pk, "subject": s.event.subject.study_subject_id, "subject_id": s.event.subject_id,
        "event": s.event.name, "slot": s.name, "linked": s.study_id is not None,
        "sex": s.event.subject.expected_sex,
        "birth_date": s.event.subject.expected_birth_date.strftime("%Y%m%d") if s.event.subject.expected_birth_date else "",
        "birth_year": s.event.subject.expected_birth_year,
    } for s in rows]


def uploaded_copy(user, project: Project, session_id) -> Study:
    """The project's de-identified copy of the study ``user`` uploaded in session ``session_id``
    (the upload must be the user's own, into ``project``, imported and staged)."""
    upload = ProjectUpload.objects.filter(project=project, session_id=str(session_id), session__owner=user).first()
    if upload is None:
        raise NotFoundError("no upload of yours with this id in the project")
    uids = list(upload.staged_studies or [])
    if len(uids) != 1:
        raise NotFoundError(f"the upload has {len(uids)} studies in the project; a slot takes one")
    return Study.objects.get(project=project, study_instance_uid=uids[0])


def is_pseudonymized(project: Project, study: Study) -> bool:
    """Whether every series of the clinical ``study`` has a complete de-identified copy in ``project``."""
    return study.pk in pseudonymized_studies(project, [study.pk])
