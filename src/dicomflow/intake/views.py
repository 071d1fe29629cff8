"""ZIP upload pages (admin look): progress that updates itself, result, error. Staff only, read only."""

from __future__ import annotations

from functools import wraps

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from dicomflow.intake.models import UploadStage, ZipUpload

STAGES = [UploadStage.INITIALISE, UploadStage.EXTRACT, UploadStage.IMPORT, UploadStage.CLEAN_UP, UploadStage.FINALISE]


def _can_view_uploads(view):
    @staff_member_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.has_perm("intake.view_zipupload"):
            raise PermissionDenied("you may not see ZIP uploads")
        return view(request, *args, **kwargs)

    return wrapper


def progress_document(upload: ZipUpload) -> dict:
    """What the progress page polls: the one progress format (``progress_dict``) plus labels and links."""
    return upload.progress_dict() | {
        "id": upload.pk,
        "status_label": upload.get_status_display(),
        "stage_label": upload.get_stage_display(),
        "finished": upload.is_over,
        "result_url": reverse("intake:upload-result", args=[upload.pk]),
        "error_url": reverse("intake:upload-error", args=[upload.pk]),
        "stages": [{"name": s.value, "label": s.label, "starts_at": ZipUpload.stage_spans[s][0]} for s in STAGES],
    }


def _context(request, upload: ZipUpload, title: str, **extra) -> dict:
    return {
        **admin.site.each_context(request),
        "title": title,
        "upload": upload,
        "opts": ZipUpload._meta,
        "progress": progress_document(upload),
        **extra,
    }


@_can_view_uploads
def upload_progress(request, pk: int):
    upload = get_object_or_404(ZipUpload, pk=pk)
    return render(request, "intake/upload_progress.html", _context(request, upload, f"ZIP upload #{pk}"))


@_can_view_uploads
def upload_progress_json(request, pk: int):
    upload = get_object_or_404(ZipUpload, pk=pk)
    return JsonResponse(progress_document(upload))


@_can_view_uploads
def upload_result(request, pk: int):
    upload = get_object_or_404(ZipUpload.objects.select_related("import_run"), pk=pk)
    run = upload.import_run
    # File names inside a ZIP often carry patient IDs: list them only to those who may see the catalog.
    may_see_files = request.user.has_perm("catalog.view_instance")
    return render(
        request,
        "intake/upload_result.html",
        _context(
            request, upload, f"Result of ZIP upload #{pk}",
            may_see_files=may_see_files,
            conflicts=(run.conflicts if run and may_see_files else []),
            ignored=(run.ignored if run and may_see_files else []),
        ),
    )


@_can_view_uploads
def upload_error(request, pk: int):
    upload = get_object_or_404(ZipUpload, pk=pk)
    return render(request, "intake/upload_error.html", _context(request, upload, f"ZIP upload #{pk} failed"))
