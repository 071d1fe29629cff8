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


def can_upload(user) -> bool:
    return _active(user) and (user.is_superuser or user.has_perm(UPLOAD_PERMISSION))


def can_view_imports(user) -> bool:
    return _active(user) and (user.is_superuser or user.has_perm(VIEW_IMPORTS_PERMISSION))


def can_see_review(user) -> bool:
    """Who approved an RT plan and when (names, dates) — for users who see the clinical pool."""
    if _projects:
        return _projects.can_see_clinical(user)
    return _active(user) and user.is_staff


def rt_selectors():
    """``dicomflow.catalog.rt_selectors`` when the RT analysis has landed, else None."""
    try:
        from dicomflow.catalog import rt_selectors
    except ImportError:  # pragma: no cover
        return None
    return rt_selectors
