"""Jobs: the list, one job's stage timeline (polled while it runs), its log, results and actions."""

from __future__ import annotations

from functools import lru_cache

from django.contrib import messages
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from dicomflow.errors import DicomflowError
from dicomflow.processing import selectors, services
from dicomflow.processing.models import Job, JobStatus, Stage, StageStatus
from dicomflow.projects.selectors import can_see_clinical
from dicomflow.web.desk import rights
from dicomflow.web.desk.common import attempt, back, desk_view, page_of


def _visible(request, job_id: int) -> Job:
    return get_object_or_404(selectors.visible_jobs(request.user).select_related(
        "series", "series__study__patient", "template"), pk=job_id)


def _waiting_for_qc(job: Job) -> bool:
    return job.stages.filter(name=Stage.QUALITY_CONTROL, status=StageStatus.WAITING).exists()


def progress_document(job: Job) -> dict:
    """What the job page polls: the one progress format of long jobs
    (:meth:`dicomflow.progress.LongJob.progress_dict`), each stage with done/total and its error."""
    return job.progress_dict() | {
        "id": job.pk, "status_label": job.get_status_display(), "ended": job.is_over,
        "waiting_qc": _waiting_for_qc(job),
        "stages": [{"name": s.name, "label": s.get_name_display(), "status": s.status,
                    "status_label": s.get_status_display(), "done": s.done, "total": s.total, "error": s.error}
                   for s in job.stages.all()],
    }


@desk_view
def job_list(request):
    rights.require(rights.is_member(request.user), "processing jobs")
    status, search = request.GET.get("status", ""), request.GET.get("q", "")
    return render(request, "web/desk/jobs.html", {
        "page": page_of(request, selectors.jobs_for_desk(request.user, status=status, search=search)),
        "status": status, "q": search, "statuses": JobStatus.choices, "nav": "desk-jobs", "clinical": can_see_clinical(request.user),
    })


@desk_view
def job_detail(request, job_id: int):
    job = _visible(request, job_id)
    may_manage = rights.managed_projects(request.user).filter(key=job.project_key).exists()
    qc = None
    if _waiting_for_qc(job) and may_manage:
        qc = _qc_context(job)
    from dicomflow.web.desk.quality_views import rating_context

    return render(request, "web/desk/job.html", {
        "job": job, "progress": progress_document(job), "may_manage": may_manage, "qc": qc,
        "quality": rating_context(request, job),
        "log": job.log.order_by("time", "id"), "results": job.results.all(),
        "result_series": selectors.result_series(job.pk) if job.status == JobStatus.FINISHED else [],
        "may_download": services.may_download_results(request.user, job.project_key),
        "ended": job.is_over, "nav": "desk-jobs", "clinical": can_see_clinical(request.user),
    })


@lru_cache(maxsize=8)
def _qc_inputs(job_id: int, version: str):
    """The QC picture's inputs (CT geometry and outlines; no pixels), kept while the job is unchanged:
    paging through slices reads one CT file per picture instead of every header each time."""
    return selectors.qc_picture_inputs(job_id)


def _qc_context(job: Job) -> dict:
    from dicomflow.core.segmentation.preview import pick_slices

    try:
        series, outlines = _qc_inputs(job.pk, job.updated_at.isoformat())
    except DicomflowError as exc:
        return {"error": str(exc)}
    return {"slices": pick_slices(outlines, count=7), "rois": [(o.name, o.hex_colour) for o in outlines],
            "n_slices": series.geometry.n_slices}


@desk_view
def job_status(request, job_id: int):
    """The job's progress and its log lines after ``?after=<log line id>`` (the page appends them)."""
    job = _visible(request, job_id)
    after = request.GET.get("after", "")
    lines = job.log.filter(pk__gt=int(after) if after.isdigit() else 0).order_by("time", "id")[:500]
    return JsonResponse(progress_document(job) | {"log": [
        {"id": e.pk, "time": e.time.strftime("%H:%M:%S"), "level": e.level, "stage": e.get_stage_display(),
         "message": e.message} for e in lines]})


@desk_view
def qc_picture(request, job_id: int, k: int):
    """One axial slice with the result's contours drawn on it (PNG), for those who decide QC."""
    from django.http import HttpResponse

    from dicomflow.core.segmentation.preview import render_slice, to_png

    job = _visible(request, job_id)
    services.require_project(request.user, job.project_key, "manage")
    try:
        series, outlines = _qc_inputs(job.pk, job.updated_at.isoformat())
    except DicomflowError as exc:  # no result (yet) to draw: nothing at this address
        raise Http404(str(exc)) from None
    if not 0 <= k < series.geometry.n_slices:
        raise Http404("no such slice")
    response = HttpResponse(to_png(render_slice(series, k, outlines)), content_type="image/png")
    response["Cache-Control"] = "private, max-age=300"
    return response


def _act(request, job_id: int, action, done: str, *args):
    _visible(request, job_id)
    if attempt(request, action, request.user, job_id, *args) is not None:
        messages.success(request, done)
    return back(request, reverse("desk-job", args=[job_id]))


@desk_view
@require_POST
def retry(request, job_id: int):
    return _act(request, job_id, services.retry_job, f"Job #{job_id} is being retried.")


@desk_view
@require_POST
def cancel(request, job_id: int):
    return _act(request, job_id, services.cancel_job, f"Job #{job_id} is cancelled (or stops after its running stage).")


@desk_view
@require_POST
def approve(request, job_id: int):
    return _act(request, job_id, services.approve_qc, f"Job #{job_id}: result approved; export follows.")


@desk_view
@require_POST
def reject(request, job_id: int):
    return _act(request, job_id, services.reject_qc, f"Job #{job_id}: result rejected.",
                request.POST.get("reason", ""))


@desk_view
def download(request, job_id: int):
    """The job's re-identified results as a ZIP (audited by the service)."""
    _visible(request, job_id)
    path = attempt(request, services.download_results, request.user, job_id)
    if path is None:
        return back(request, reverse("desk-job", args=[job_id]))
    return FileResponse(open(path, "rb"), as_attachment=True, filename=f"results-job-{job_id}.zip",
                        content_type="application/zip")
