"""ZIP uploads (as the ICON seed does): the admin stores the ZIP, a Celery task imports it in stages.

Stages and the overall percentage each covers (``ZipUpload.stage_spans``; the stage and its
done/total are committed on the row by the shared reporter of :mod:`dicomflow.progress`, so the
progress page, the API and the CLI read the same thing):

==========  ======  ==================================================================
initialise   0–5    take the upload (conditional update Pending → In progress), read the
                    ZIP's central directory: is it a ZIP, how many members (the total)
extract      5–10   open the archive through ``dicomflow.core.archive`` (safety checks)
import      10–90   members are extracted and imported as a stream by
                    :func:`dicomflow.intake.services.import_paths` (done / total members)
clean up    90–95   the uploaded ZIP is deleted: its content now lives in the file store
finalise    95–100  counters and the ImportRun are recorded; status finished ("Completed")
==========  ======  ==================================================================

Extraction and import overlap on purpose (members are extracted one by one as they are read), so
an upload never needs twice its size on disk. On failure the ZIP is kept so it can be processed
again; the error message (from :mod:`dicomflow.errors`, never with identifying values) is shown on
the error page. A re-delivered task for an upload that is already In progress or Completed finds
the conditional update lost and does nothing.
"""

from __future__ import annotations

import os
import uuid
import zipfile
from collections.abc import Iterable

from django.db import transaction

from dicomflow import progress
from dicomflow.errors import ArchiveError
from dicomflow.intake.models import ImportRun, SourceKind, UploadStage, UploadStatus, ZipUpload
from dicomflow.intake.services import import_paths

STAGE_RANGES = ZipUpload.stage_spans


def create_upload(uploaded_file, user=None) -> ZipUpload:
    """Store an uploaded ZIP as a Pending upload (not processed until asked)."""
    upload = ZipUpload(
        original_name=os.path.basename(getattr(uploaded_file, "name", "") or "upload.zip")[:255],
        size=getattr(uploaded_file, "size", 0) or 0,
        uploaded_by=user if getattr(user, "is_authenticated", False) else None,
    )
    upload.file.save(upload.original_name, uploaded_file, save=False)
    upload.save()
    return upload


def request_processing(upload_ids: Iterable[int]) -> list[int]:
    """Queue the given uploads ("Process now", bulk action); failed ones are reset to pending first.

    Finished and running uploads are left alone. Tasks are sent once the surrounding
    transaction commits. Returns the ids queued.
    """
    from dicomflow.intake.tasks import process_zip_upload

    queued = []
    for upload_id in upload_ids:
        progress.reset(ZipUpload.objects.filter(pk=upload_id, status=UploadStatus.FAILED).exclude(file=""),
                       stage=UploadStage.WAITING)
        task_id = uuid.uuid4().hex
        if not ZipUpload.objects.filter(pk=upload_id, status=UploadStatus.PENDING).update(task_id=task_id):
            continue
        transaction.on_commit(
            lambda i=upload_id, t=task_id: process_zip_upload.apply_async((i,), task_id=t)
        )
        queued.append(upload_id)
    return queued


def _member_count(path: str) -> int:
    try:
        with zipfile.ZipFile(path) as zf:
            return sum(1 for info in zf.infolist() if not info.is_dir())
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{os.path.basename(path)} is not a readable ZIP archive ({exc})") from None


def _rename_entries(report, path: str, name: str) -> None:
    """Show ZIP members as ``upload.zip!member`` (not the upload folder's path) here and on the ImportRun."""
    prefix = os.fspath(path)
    for entry in (*report.conflicts, *report.ignored):
        if entry["path"] == prefix or entry["path"].startswith(prefix + "!"):
            entry["path"] = name + entry["path"][len(prefix):]
    ImportRun.objects.filter(pk=report.import_run_id).update(conflicts=report.conflicts, ignored=report.ignored)


def _whole_archive_refusal(report, name: str) -> str | None:
    """The reason, when the archive as a whole was refused (corrupt, bomb...): the upload failed."""
    if report.files_seen == 1 and report.ignored and report.ignored[0]["path"] == name:
        return report.ignored[0]["reason"]
    return None


def process_upload(upload_id: int) -> dict:
    """Import one upload through its stages; the body of the Celery task (never raises)."""
    upload = progress.run_long_job(ZipUpload, upload_id, _import_upload, stage=UploadStage.INITIALISE)
    if upload is None:
        return {"upload": upload_id, "skipped": True}
    return {"upload": upload_id, "status": upload.status, "files_seen": upload.files_seen,
            "instances_new": upload.instances_new, "instances_duplicate": upload.instances_duplicate,
            "patients": upload.patients, "studies": upload.studies, "series": upload.series}


def _import_upload(upload: ZipUpload, report: progress.ProgressReporter) -> dict:
    """The stages of one claimed upload; returns the counters stored with the ending."""
    if not upload.file or not os.path.exists(upload.file.path):
        raise ArchiveError(f"the uploaded file of upload #{upload.pk} is missing from the upload folder")
    path = upload.file.path
    name = upload.original_name or os.path.basename(path)
    total = _member_count(path)
    report(UploadStage.INITIALISE, 1, 1)
    report(UploadStage.EXTRACT, 0, 1)

    def imported(done: int, _total: int | None) -> None:
        if done == 1:
            report(UploadStage.EXTRACT, 1, 1)
        report(UploadStage.IMPORT, done, total)

    result = import_paths(
        [path], source_kind=SourceKind.ZIP_UPLOAD, received_from=f"ZIP upload #{upload.pk}", progress=imported,
    )
    _rename_entries(result, path, name)
    refused = _whole_archive_refusal(result, name)
    if refused:
        raise ArchiveError(f"{name}: {refused}")
    report(UploadStage.IMPORT, total, total)

    report(UploadStage.CLEAN_UP, 0, 1)
    upload.file.delete(save=False)
    ZipUpload.objects.filter(pk=upload.pk).update(file="")
    report(UploadStage.CLEAN_UP, 1, 1)

    report(UploadStage.FINALISE, 0, 1)
    counters = result.as_dict()
    return {
        "stage": UploadStage.DONE, "done": 1, "total": 1, "import_run_id": result.import_run_id,
        "files_seen": result.files_seen, "instances_new": result.instances_new,
        "instances_duplicate": result.instances_duplicate, "conflicts_count": len(result.conflicts),
        "ignored_count": len(result.ignored), "patients": counters["patients"], "studies": counters["studies"],
        "series": counters["series"],
    }


def abandon(upload_ids: Iterable[int]) -> int:
    """Mark running ("In progress") uploads whose worker was lost as Failed, so "Process now" can retry them.

    Only for uploads nobody is processing any more (the admin decides); returns how many changed.
    """
    return progress.fail(
        ZipUpload.objects.filter(pk__in=list(upload_ids), status=UploadStatus.RUNNING),
        "stopped by an administrator (the worker processing it was lost); process it again",
    )


def delete_uploads(uploads: Iterable[ZipUpload]) -> int:
    """Delete uploads and their ZIP files; uploads in progress are kept. Returns how many were deleted."""
    deleted = 0
    for upload in uploads:
        if upload.status == UploadStatus.RUNNING:
            continue
        if upload.file:
            upload.file.delete(save=False)
        upload.delete()
        deleted += 1
    return deleted



# --- what people do from the web page (permission-checked) ----------------------------------------
def upload_zips(actor, files) -> list[ZipUpload]:
    """Store uploaded ZIP files as Pending uploads of ``actor`` (each must be a ZIP by name)."""
    from dicomflow.errors import InputError, PermissionDeniedError
    from dicomflow.intake.selectors import may_upload_zip

    if not may_upload_zip(actor):
        raise PermissionDeniedError("you may not upload ZIP files (they fill the clinical pool)")
    files = list(files)
    if not files:
        raise InputError("choose at least one ZIP file")
    bad = [f.name for f in files if not str(f.name).lower().endswith(".zip")]
    if bad:
        raise InputError(f"{len(bad)} of the files chosen are not ZIP files (.zip)")
    from dicomflow.intake.resumable import check_room

    with transaction.atomic():
        check_room(sum(int(getattr(f, "size", 0) or 0) for f in files), actor)
        return [create_upload(f, actor) for f in files]


def process_now(actor, upload_ids: Iterable[int]) -> list[int]:
    """"Process now" for uploads ``actor`` may see (others are refused as not found); ids queued."""
    from dicomflow.errors import NotFoundError
    from dicomflow.intake.selectors import zip_uploads_for

    ids = [int(i) for i in upload_ids]
    visible = set(zip_uploads_for(actor).filter(pk__in=ids).values_list("pk", flat=True))
    missing = [i for i in ids if i not in visible]
    if missing:
        raise NotFoundError(f"no ZIP upload #{missing[0]}")
    return request_processing(ids)
