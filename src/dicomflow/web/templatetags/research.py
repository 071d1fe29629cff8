"""``{% project_bar %}``: the active project on every page, a chooser of the user's projects and the
project's research pages (Subjects, Uploader, Lookup), as a bar under the top navigation."""

from django import template

from dicomflow.projects.selectors import projects_for

register = template.Library()


@register.inclusion_tag("web/research/_project_bar.html", takes_context=True)
def project_bar(context):
    request = context.get("request")
    user = getattr(request, "user", None)
    if request is None or not getattr(user, "is_authenticated", False):
        return {"projects": []}
    from dicomflow.web.research.context import active_project

    return {"projects": list(projects_for(user).order_by("key")), "active": active_project(request),
            "next": request.get_full_path(), "csrf_token": context.get("csrf_token"), "nav": context.get("nav", "")}
