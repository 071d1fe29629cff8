"""The active project on every page: ``{% active_project as p %}`` for the nav links of the research
pages, ``{% project_switcher %}`` for the chooser of the user's projects."""

from django import template

from dicomflow.projects.selectors import projects_for

register = template.Library()


def _user(context):
    request = context.get("request")
    user = getattr(request, "user", None)
    return request, user if getattr(user, "is_authenticated", False) else None


@register.simple_tag(takes_context=True)
def active_project(context):
    request, user = _user(context)
    if user is None:
        return None
    if "_df_active_project" not in context.render_context:
        from dicomflow.web.research.context import active_project as active

        context.render_context["_df_active_project"] = active(request)
    return context.render_context["_df_active_project"]


@register.inclusion_tag("web/research/_project_switcher.html", takes_context=True)
def project_switcher(context):
    request, user = _user(context)
    if user is None:
        return {"projects": []}
    return {"projects": list(projects_for(user).order_by("key")), "active": active_project(context),
            "next": request.get_full_path(), "csrf_token": context.get("csrf_token")}
