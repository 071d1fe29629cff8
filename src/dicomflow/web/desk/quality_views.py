"""The RT quality loop on the desk: rate a job's returned contours, see how the clinician's edit
compares, import an Eclipse structure template into a template, and the statistics page."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from dicomflow.processing import selectors as processing_selectors
from dicomflow.quality import selectors, services
from dicomflow.quality.models import Rating
from dicomflow.web.desk.common import attempt, back, desk_view

MAX_XML_UPLOAD = 2 * 1024 * 1024


def rating_context(request, job) -> dict:
    """What the job page shows of the quality loop (the form only to those who may rate)."""
    mine = next((r for r in selectors.job_ratings(job) if r["assessor"] == request.user.get_username()), None)
    previous = {roi["name"]: roi for roi in (mine or {}).get("rois", [])}
    names = services.result_roi_names(job) if job.status in ("finished", "waiting") else []
    return {
        "roi_rows": [{"name": n, "index": i, "rating": previous.get(n, {}).get("rating", ""),
                      "minutes": previous.get(n, {}).get("minutes"), "comment": previous.get(n, {}).get("comment", "")}
                     for i, n in enumerate(names)],
        "ratings": selectors.job_ratings(job), "mine": mine, "choices": Rating.choices,
        "comparisons": selectors.job_comparisons(job), "scores": range(11),
    }


@desk_view
@require_POST
def rate(request, job_id: int):
    get_object_or_404(processing_selectors.visible_jobs(request.user), pk=job_id)
    rois = []
    for index in range(int(request.POST.get("roi_count", "0") or 0)):
        name = request.POST.get(f"roi-{index}-name", "")
        rating = request.POST.get(f"roi-{index}-rating", "")
        if name and rating:
            rois.append({"name": name, "rating": rating, "minutes": request.POST.get(f"roi-{index}-minutes") or None,
                         "comment": request.POST.get(f"roi-{index}-comment", "")})
    done = attempt(request, services.rate_job, request.user, job_id, overall_score=request.POST.get("overall_score", ""),
                   comment=request.POST.get("comment", ""), rois=rois)
    if done is not None:
        messages.success(request, f"Your rating of job #{job_id} is saved.")
    return back(request, reverse("desk-job", args=[job_id]) + "#df-rating")


@desk_view
@require_POST
def import_eclipse(request, name: str):
    upload = request.FILES.get("structure_template")
    target = reverse("desk-template", args=[name])
    if upload is None:
        messages.error(request, "Choose an Eclipse structure template (XML) to import.")
        return back(request, target)
    if upload.size > MAX_XML_UPLOAD:
        messages.error(request, "The structure template is larger than 2 MiB.")
        return back(request, target)
    done = attempt(request, services.import_eclipse_structures, request.user, name, upload.read())
    if done is not None:
        messages.success(request, f"{len(done['structures'])} structures imported from '{done['source'] or upload.name}'.")
    return back(request, target)


@desk_view
def statistics(request):
    if not (request.user.is_superuser or selectors.may_see_statistics(request.user)):
        raise PermissionDenied("statistics are for administrators and data managers")
    project, template = request.GET.get("project", ""), request.GET.get("template", "")
    weeks = request.GET.get("weeks", "12")
    weeks = int(weeks) if weeks.isdigit() and 1 <= int(weeks) <= 520 else 12
    from dicomflow.web.desk.rights import managed_projects

    return render(request, "web/desk/statistics.html", {
        "stats": selectors.statistics(request.user, project=project or None, template=template or None, weeks=weeks),
        "projects": managed_projects(request.user), "project": project, "template": template, "weeks": weeks,
        "nav": "desk-statistics",
    })
