"""Reads of accounts: API keys of a user, the audit log (administrators only)."""

from __future__ import annotations

from django.db.models import QuerySet

from dicomflow.accounts.actors import is_active_user
from dicomflow.accounts.models import ApiKey, AuditEntry
from dicomflow.errors import PermissionDeniedError


def can_read_audit(user) -> bool:
    return is_active_user(user) and (user.is_superuser or user.has_perm("accounts.view_auditentry"))


def audit_entries(user, *, action: str | None = None, project: str | None = None,
                  username: str | None = None) -> QuerySet[AuditEntry]:
    if not can_read_audit(user):
        raise PermissionDeniedError("only administrators may read the audit log")
    qs = AuditEntry.objects.all()
    if action:
        qs = qs.filter(action=action)
    if project:
        qs = qs.filter(project=project)
    if username:
        qs = qs.filter(username=username)
    return qs.order_by("-at", "-id")


def api_keys_of(user) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(user=user).order_by("-created")
