"""Who may use which desk page: the navigation shows exactly what the views allow.

Processing works per research project: a member of any project sees the jobs of their projects;
data managers (the Manage capability) send series, retry, cancel and decide QC. Templates and
rulesets are shared definitions: managers read them, holders of the model permissions change them.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied

from dicomflow.accounts.actors import is_active_user
from dicomflow.intake import selectors as intake_selectors
from dicomflow.projects.models import ROLE_CAPABILITIES, Capability, Project, ProjectMembership
from dicomflow.projects.selectors import can_see_clinical



def managed_projects(user):
    """Projects in which ``user`` may send series for processing (the Manage capability)."""
    if not is_active_user(user):
        return Project.objects.none()
    if user.is_superuser:
        return Project.objects.order_by("key")
    roles = [role for role, caps in ROLE_CAPABILITIES.items() if Capability.MANAGE in caps]
    return Project.objects.filter(memberships__user=user, memberships__role__in=roles).distinct().order_by("key")


def is_member(user) -> bool:
    return is_active_user(user) and (user.is_superuser or ProjectMembership.objects.filter(user=user).exists())


def may_see_series(user) -> bool:
    return is_active_user(user) and (is_member(user) or can_see_clinical(user))


def may_manage(user) -> bool:
    return managed_projects(user).exists()


def may_see_definitions(user) -> bool:
    return is_active_user(user) and (may_manage(user) or user.has_perm("processing.view_template"))


def may_edit(user, kind: str, verb: str = "change") -> bool:
    """Mirrors the services' check (superusers, or the ``processing.<verb>_<kind>`` permission)."""
    return is_active_user(user) and (user.is_superuser or user.has_perm(f"processing.{verb}_{kind}"))


def nav(user) -> dict[str, bool]:
    """Which desk entries the top navigation shows to ``user``."""
    return {
        "series": may_see_series(user),
        "jobs": is_member(user),
        "logs": is_member(user),
        "definitions": may_see_definitions(user),
        "datastore": intake_selectors.may_view_datastore(user),
        "zip": intake_selectors.may_see_zip_uploads(user),
        "statistics": is_active_user(user) and (user.is_superuser or may_manage(user)),
    }


def require(allowed: bool, what: str) -> None:
    if not allowed:
        raise PermissionDenied(f"your roles do not give you {what}")
