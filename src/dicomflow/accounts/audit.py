"""Writing the audit log: one entry per audited action, allowed, refused or failed."""

from __future__ import annotations

from dicomflow.accounts.actors import actor_name, is_operator
from dicomflow.accounts.models import AuditAction, AuditEntry, AuditOutcome


def record(actor, action: AuditAction | str, *, project: str | object = "", obj: str = "",
           outcome: AuditOutcome | str = AuditOutcome.OK, detail: str = "") -> AuditEntry:
    """Append one entry. ``project`` is a key or a Project; ``obj`` and ``detail`` hold no identities."""
    key = getattr(project, "key", project) or ""
    user = None if is_operator(actor) or not getattr(actor, "pk", None) else actor
    return AuditEntry.objects.create(
        user=user, username=actor_name(actor)[:160], action=str(action), project=str(key)[:64],
        object=obj[:200], outcome=str(outcome), detail=detail[:500],
    )


def denied(actor, action: AuditAction | str, *, project: str | object = "", obj: str = "", detail: str = "") -> AuditEntry:
    return record(actor, action, project=project, obj=obj, outcome=AuditOutcome.DENIED, detail=detail)
