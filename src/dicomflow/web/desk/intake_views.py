"""The datastore (watched folders and every copy taken) and ZIP uploads in the web app."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from dicomflow.intake import selectors, uploads, watch
from dicomflow.intake.models import FolderIntake, ZipUpload
from dicomflow.web.desk import rights
from dicomflow.web.desk.common import attempt, back, desk_view, page_of


# --- datastore -----------------------------------------------------------------------------------
@desk_view
def datastore(request):
    rights.require(selectors.may_view_datastore(request.user), "the datastore")
    folder, status, search = request.GET.get("folder", ""), request.GET.get("status", ""), request.GET.get("q", "")
    copies = selectors.folder_copies(watched_folder=int(folder) if folder.isdigit() else None, status=status,
                                     search=search)
    return render(request, "web/desk/datastore.html", {
        "folders": selectors.watched_folders(), "page": page_of(request, copies), "folder": folder, "status": status,
        "q": search, "statuses": FolderIntake._meta.get_field("status").choices,
        "may_manage": selectors.may_manage_watched_folders(request.user), "nav": "desk-datastore",
    })


@desk_view
@require_POST
def datastore_add(request):
    minutes = request.POST.get("stable_minutes", "").strip()
    try:
        stable = float(minutes) if minutes else None
    except ValueError:
        messages.error(request, "Give the quiet time in minutes (a number).")
        return back(request, reverse("desk-datastore"))
    folder = attempt(request, watch.add_watched_folder, request.user, name=request.POST.get("name", ""),
                     path=request.POST.get("path", ""), stable_minutes=stable)
    if folder is not None:
        messages.success(request, f"Watched folder '{folder.name}' added.")
    return back(request, reverse("desk-datastore"))


@desk_view
@require_POST
def datastore_toggle(request, folder_id: int):
    enable = request.POST.get("enabled") == "1"
    folder = attempt(request, watch.set_watched_folder_enabled, request.user, folder_id, enable)
    if folder is not None:
        messages.success(request, f"Watched folder '{folder.name}' {'resumed' if enable else 'paused'}.")
    return back(request, reverse("desk-datastore"))


# --- ZIP uploads ----------------------------------------------------------------------------------
def upload_document(upload) -> dict:
    """One upload's progress as the progress page polls it: the one progress format of long jobs
    (:meth:`dicomflow.progress.LongJob.progress_dict`) with the words and links the page shows."""
    return upload.progress_dict() | {
        "id": upload.pk, "name": upload.original_name, "status_label": upload.get_status_display(),
        "stage_label": upload.get_stage_display(), "ended": upload.is_over, "failed": upload.status == "failed",
        "result_url": reverse("desk-zip-result", args=[upload.pk]),
    }


@desk_view
def zip_list(request):
    rights.require(selectors.may_see_zip_uploads(request.user), "ZIP uploads")
    if request.method == "POST":
        made = attempt(request, uploads.upload_zips, request.user, request.FILES.getlist("files"))
        if made:
            messages.success(request, f"{len(made)} ZIP file(s) uploaded; they wait until you press Process now.")
        return back(request, reverse("desk-zip"))
    status = request.GET.get("status", "")
    qs = selectors.zip_uploads_for(request.user)
    if status:
        qs = qs.filter(status=status)
    return render(request, "web/desk/zip_uploads.html", {
        "page": page_of(request, qs), "status": status, "statuses": ZipUpload._meta.get_field("status").choices,
        "may_upload": selectors.may_upload_zip(request.user), "nav": "desk-zip",
    })


@desk_view
@require_POST
def zip_process(request):
    """"Process now" for one row or for the ticked rows; then the page following all of them."""
    rights.require(selectors.may_see_zip_uploads(request.user), "ZIP uploads")
    ids = [i for i in request.POST.getlist("upload") if i.isdigit()]
    if not ids:
        messages.error(request, "Tick at least one upload.")
        return back(request, reverse("desk-zip"))
    queued = attempt(request, uploads.process_now, request.user, ids)
    if queued is None:
        return back(request, reverse("desk-zip"))
    if len(queued) < len(ids):
        messages.info(request, f"{len(ids) - len(queued)} upload(s) were already processed or in progress.")
    return _to_progress(ids)


def _to_progress(ids) -> HttpResponseRedirect:
    """The one progress page following every upload in ``ids``."""
    return HttpResponseRedirect(reverse("desk-zip-progress") + "?" + urlencode([("id", i) for i in ids]))


def _selected(request):
    ids = [int(i) for i in request.GET.getlist("id") if i.isdigit()][:100]
    return list(selectors.zip_uploads_for(request.user).filter(pk__in=ids).order_by("pk"))


@desk_view
def zip_progress(request):
    rights.require(selectors.may_see_zip_uploads(request.user), "ZIP uploads")
    return render(request, "web/desk/zip_progress.html", {
        "uploads": [upload_document(u) for u in _selected(request)], "nav": "desk-zip",
        "json_url": reverse("desk-zip-progress-json") + "?" + request.GET.urlencode(),
    })


@desk_view
def zip_progress_json(request):
    rights.require(selectors.may_see_zip_uploads(request.user), "ZIP uploads")
    return JsonResponse({"uploads": [upload_document(u) for u in _selected(request)]})


@desk_view
def zip_result(request, upload_id: int):
    """The result (counters, conflicts and ignored files) or, for a failed upload, the error."""
    rights.require(selectors.may_see_zip_uploads(request.user), "ZIP uploads")
    upload = get_object_or_404(selectors.zip_uploads_for(request.user), pk=upload_id)
    run = upload.import_run
    return render(request, "web/desk/zip_result.html", {
        "upload": upload, "doc": upload_document(upload), "conflicts": run.conflicts if run else [],
        "ignored": run.ignored if run else [], "nav": "desk-zip",
    })
