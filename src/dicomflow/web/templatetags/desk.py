"""Template tags of the processing desk: the navigation entries a user may see, status badges."""

from django import template

from dicomflow.web.desk import rights

register = template.Library()

BADGE = {"matched": "ok", "processed": "ok", "finished": "ok", "done": "ok",
         "failed": "bad", "error": "bad", "ERROR": "bad", "not_matched": "muted", "not_evaluated": "muted",
         "cancelled": "muted", "skipped": "muted", "multiple": "warn", "no_template": "warn", "check_failed": "warn", "waiting": "warn",
         "WARNING": "warn", "running": "run", "processing": "run",
         "sent": "run", "pending": "muted"}


@register.inclusion_tag("web/desk/_nav.html", takes_context=True)
def desk_nav(context):
    request = context.get("request")
    user = getattr(request, "user", None)
    return {"show": rights.nav(user) if user is not None else {}, "nav": context.get("nav", "")}


@register.filter
def badge_class(status) -> str:
    return BADGE.get(str(status), "")


@register.filter
def desk_label(status) -> str:
    """The words for a series' desk status ("not_matched" → "Not matched")."""
    from dicomflow.processing.selectors import DESK_STATUSES

    return DESK_STATUSES.get(str(status), str(status))
