"""Series for processing: what the user may see, its rule status, the bulk "Send for processing"."""

from __future__ import annotations

from django.contrib import messages
from django.http import JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from dicomflow.processing import selectors, services
from dicomflow.processing.models import Template
from dicomflow.web.desk import rights
from dicomflow.web.desk.common import attempt, back, desk_view, page_of


@desk_view
def series_list(request):
    user = request.user
    rights.require(rights.may_see_series(user), "the series for processing")
    status, search, sort = (request.GET.get(k, "") for k in ("status", "q", "sort"))
    page = page_of(request, selectors.series_for_processing(user, status=status, search=search, sort=sort or "-date"))
    return render(request, "web/desk/series.html", {
        "page": page, "status": status, "q": search, "sort": sort or "-date", "statuses": selectors.DESK_STATUSES,
        "templates": list(Template.objects.order_by("name").values_list("name", flat=True)),
        "projects": rights.managed_projects(user), "may_send": rights.may_manage(user),
        "may_add_template": rights.may_edit(user, "template", "add"), "nav": "desk-series",
    })


@desk_view
def series_status(request):
    """The statuses of the series on a page, polled by the page (``?uid=...&uid=...``)."""
    rights.require(rights.may_see_series(request.user), "the series for processing")
    return JsonResponse({"series": selectors.desk_statuses(request.user, request.GET.getlist("uid"))})


@desk_view
@require_POST
def send(request):
    """The bulk bar: the ticked series, each with the template of its row ('' = the rules choose)."""
    uids = request.POST.getlist("series")
    project = request.POST.get("project", "")
    if not uids:
        messages.error(request, "Tick at least one series to send.")
        return back(request, reverse("desk-series"))
    by_template: dict[str, list[str]] = {}
    for uid in uids:
        by_template.setdefault(request.POST.get(f"template-{uid}", ""), []).append(uid)
    jobs = []
    for template, group in by_template.items():
        made = attempt(request, services.send_for_processing, request.user, project_key=project,
                       series_uids=group, template_name=template or None)
        jobs += made or []
    if jobs:
        names = sorted({job.template.name for job in jobs if job.template})
        messages.success(request, f"Sent {len(jobs)} series for processing in project {project} "
                                  f"(template {', '.join(names)}): jobs "
                         + ", ".join(f"#{job.pk}" for job in jobs) + ".")
    return back(request, reverse("desk-series"))


@desk_view
def why(request, uid: str):
    """The rules' dry run for one series: which clause held or failed, on which value."""
    rights.require(rights.may_see_series(request.user), "the series for processing")
    outcome = services.rules_dry_run(request.user, uid)
    template = "web/desk/_why.html" if request.GET.get("fragment") else "web/desk/why.html"
    return render(request, template, {"outcome": outcome, "uid": uid, "nav": "desk-series"})
