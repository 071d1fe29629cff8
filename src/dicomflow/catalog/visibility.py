"""Who sees which catalog rows, for the admin of the lower layers (catalog, intake).

The one visibility rule lives in :mod:`dicomflow.projects.selectors` (the clinical pool for holders
of ``projects.view_clinical_pool``, a project's copy for its members, everything for superusers).
The catalog and intake sit below the projects app and may not import it, so the projects app
installs its rule here when Django starts (``ProjectsConfig.ready``). Until it is installed the
admin of these layers shows rows to superusers only (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable

from django.db.models import Q, QuerySet

ScopeFn = Callable[[object, str], "Q | None"]  # (user, path to a catalog row's project) -> filter, None = nothing
ClinicalFn = Callable[[object], bool]

_scope: ScopeFn | None = None
_clinical: ClinicalFn | None = None


def install(scope: ScopeFn, sees_clinical: ClinicalFn) -> None:
    global _scope, _clinical
    _scope, _clinical = scope, sees_clinical


def _superuser(user) -> bool:
    return bool(user is not None and getattr(user, "is_active", False) and getattr(user, "is_superuser", False))


def scoped(queryset: QuerySet, user, project_path: str) -> QuerySet:
    """``queryset`` filtered to rows whose project (``project_path``, e.g. ``series__project``) ``user`` may see."""
    if _scope is None:
        return queryset if _superuser(user) else queryset.none()
    allowed = _scope(user, project_path)
    return queryset.none() if allowed is None else queryset.filter(allowed)  # "__in" subqueries: no duplicates


def sees_clinical(user) -> bool:
    """Whether ``user`` may see the clinical pool (imports and their records are clinical data)."""
    return _clinical(user) if _clinical is not None else _superuser(user)
