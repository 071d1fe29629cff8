"""The processing log: every line of every job the user sees, searched and filtered, never clipped."""

from __future__ import annotations

from django.shortcuts import render

from dicomflow.processing import selectors
from dicomflow.processing.models import JobStatus, LogLevel
from dicomflow.projects.selectors import can_see_clinical
from dicomflow.web.desk import rights
from dicomflow.web.desk.common import desk_view, page_of


@desk_view
def log_list(request):
    rights.require(rights.is_member(request.user), "the processing log")
    level, status, search = (request.GET.get(k, "") for k in ("level", "status", "q"))
    entries = selectors.visible_log(request.user, level=level, job_status=status, search=search)
    return render(request, "web/desk/logs.html", {
        "page": page_of(request, entries, 100), "level": level, "status": status, "q": search,
        "levels": LogLevel.choices, "statuses": JobStatus.choices, "nav": "desk-logs", "clinical": can_see_clinical(request.user),
    })
