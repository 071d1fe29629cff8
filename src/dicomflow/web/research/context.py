"""The active project: chosen once, kept in the session, shown on every page (``project_switcher``
template tag in the layout). Switching keeps the user on the same page of the other project."""

from __future__ import annotations

import re

from django.contrib.auth.decorators import login_required
from django.http import HttpResponseRedirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from dicomflow.projects.models import Capability
from dicomflow.projects.selectors import projects_for
from dicomflow.web.research.http import project_or_404

SESSION_KEY = "dicomflow_active_project"
_PROJECT_PATH = re.compile(r"^/projects/[^/]+/")


def remember(request, project) -> None:
    """Make ``project`` the active one (every research page of a project does this)."""
    if request.session.get(SESSION_KEY) != project.key:
        request.session[SESSION_KEY] = project.key


def active_project(request):
    """The active project of the session if the user still sees it; else their first project, or None."""
    mine = projects_for(request.user)
    key = request.session.get(SESSION_KEY)
    return (mine.filter(key=key).first() if key else None) or mine.order_by("key").first()


def same_page_in(path: str, key: str) -> str:
    """``path`` of one project's page as the same page of project ``key``."""
    if _PROJECT_PATH.match(path):
        return _PROJECT_PATH.sub(f"/projects/{key}/", path, count=1)
    return path


@login_required
@require_POST
def switch(request):
    """Make the chosen project active and go back to the page the user was on (in that project)."""
    project = project_or_404(request, request.POST.get("project", ""), Capability.VIEW)
    remember(request, project)
    back = request.POST.get("next") or "/"
    if not url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
        back = "/"
    return HttpResponseRedirect(same_page_in(back.split("?")[0], project.key))
