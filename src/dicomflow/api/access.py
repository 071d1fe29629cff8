"""Who may see and do what through the API and the web UI — one place, used by both.

Catalog visibility comes from ``dicomflow.projects.selectors`` (clinical pool for superusers and
holders of ``projects.view_clinical_pool``; a project's copy for its members). If that module is
absent the fallback is staff-only. Imports and uploads go into the clinical pool, so they need
the pool: superusers, or the model permissions named below.
"""

from __future__ import annotations

from django.db.models import QuerySet

from dicomflow.catalog.models import Instance, Patient, Series, Study

UPLOAD_PERMISSION = "intake.add_uploadsession"
VIEW_IMPORTS_PERMISSION = "intake.view_importrun"

try:  # per-project access (projects app)
    from dicomflow.projects import selectors as _projects
except ImportError:  # pragma: no cover - only before the projects app exists
    _projects = None


def _active(user) -> bool:
    return bool(user is not None and getattr(user, "is_authenticated", False) and user.is_active)


def _staff_only(user, qs: QuerySet) -> QuerySet:
    return qs if _active(user) and user.is_staff else qs.none()


def patients(user) -> QuerySet[Patient]:
    return _projects.visible_patients(user) if _projects else _staff_only(user, Patient.objects.all())


def studies(user) -> QuerySet[Study]:
    return _projects.visible_studies(user) if _projects else _staff_only(user, Study.objects.all())


def series(user) -> QuerySet[Series]:
    return _projects.visible_series(user) if _projects else _staff_only(user, Series.objects.all())


def instances(user) -> QuerySet[Instance]:
    return _projects.visible_instances(user) if _projects else _staff_only(user, Instance.objects.all())


def projects(user):
    """Research projects whose copies ``user`` may see; None when the projects app is absent."""
    return _projects.projects_for(user) if _projects else None


def can_upload(user) -> bool:
    return _active(user) and (user.is_superuser or user.has_perm(UPLOAD_PERMISSION))


def can_view_imports(user) -> bool:
    return _active(user) and (user.is_superuser or user.has_perm(VIEW_IMPORTS_PERMISSION))


def can_see_review(user) -> bool:
    """Who approved an RT plan and when (names, dates) — for users who see the clinical pool."""
    if _projects:
        return _projects.can_see_clinical(user)
    return _active(user) and user.is_staff


VIEW_JOBS_PERMISSION = "processing.view_job"


def jobs(user):
    """Processing jobs: all for superusers; with ``processing.view_job``, those on series the user
    sees or that the user created; None when the processing app is absent."""
    try:
        from dicomflow.processing.models import Job
    except ImportError:  # pragma: no cover
        return None
    if not _active(user):
        return Job.objects.none()
    if user.is_superuser:
        return Job.objects.all()
    if not user.has_perm(VIEW_JOBS_PERMISSION):
        return Job.objects.none()
    from django.db.models import Q

    return Job.objects.filter(Q(series__in=series(user)) | Q(created_by=user))


def processing_state(series_obj) -> dict | None:
    """The series' processing status (rules, chosen template) when the processing app is present."""
    try:
        from dicomflow.processing.models import SeriesState
    except ImportError:  # pragma: no cover
        return None
    state = SeriesState.objects.filter(series=series_obj).select_related("template").first()
    if state is None:
        return None
    return {"status": state.status, "template": state.template.name if state.template else None,
            "explanation": state.explanation or None,
            "evaluated_at": state.evaluated_at.isoformat() if state.evaluated_at else None}


def rt_selectors():
    """``dicomflow.catalog.rt_selectors`` when the RT analysis has landed, else None."""
    try:
        from dicomflow.catalog import rt_selectors
    except ImportError:  # pragma: no cover
        return None
    return rt_selectors
