"""ZIP uploads (as the ICON seed does): the admin stores the ZIP, a Celery task imports it in stages.

Stages and the overall percentage each covers (stored on the :class:`ZipUpload` row and committed
as they change, so the progress page, the API and the CLI read the same thing):

==========  ======  ==================================================================
initialise   0–5    take the upload (conditional update Pending → In progress), read the
                    ZIP's central directory: is it a ZIP, how many members (the total)
extract      5–10   open the archive through ``dicomflow.core.archive`` (safety checks)
import      10–90   members are extracted and imported as a stream by
                    :func:`dicomflow.intake.services.import_paths` (done / total members)
clean up    90–95   the uploaded ZIP is deleted: its content now lives in the file store
finalise    95–100  counters and the ImportRun are recorded; status Completed
==========  ======  ==================================================================

Extraction and import overlap on purpose (members are extracted one by one as they are read), so
an upload never needs twice its size on disk. On failure the ZIP is kept so it can be processed
again; the error message (from :mod:`dicomflow.errors`, never with identifying values) is shown on
the error page. A re-delivered task for an upload that is already In progress or Completed finds
the conditional update lost and does nothing.
"""

from __future__ import annotations

import logging
import os
import uuid
import zipfile
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from dicomflow.errors import ArchiveError, DicomflowError
from dicomflow.intake.models import ImportRun, SourceKind, UploadStage, UploadStatus, ZipUpload
from dicomflow.intake.services import import_paths

log = logging.getLogger(__name__)

STAGE_RANGES: dict[str, tuple[int, int]] = {
    UploadStage.INITIALISE: (0, 5),
    UploadStage.EXTRACT: (5, 10),
    UploadStage.IMPORT: (10, 90),
    UploadStage.CLEAN_UP: (90, 95),
    UploadStage.FINALISE: (95, 100),
}


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
    """Queue the given uploads ("Process now", bulk action); Failed ones are reset to Pending first.

    Completed and In-progress uploads are left alone. Tasks are sent once the surrounding
    transaction commits. Returns the ids queued.
    """
    from dicomflow.intake.tasks import process_zip_upload

    queued = []
    for upload_id in upload_ids:
        ZipUpload.objects.filter(pk=upload_id, status=UploadStatus.FAILED).exclude(file="").update(
            status=UploadStatus.PENDING, stage=UploadStage.WAITING, percent=0, error_message="",
            started_at=None, finished_at=None,
        )
        task_id = uuid.uuid4().hex
        if not ZipUpload.objects.filter(pk=upload_id, status=UploadStatus.PENDING).update(task_id=task_id):
            continue
        transaction.on_commit(
            lambda i=upload_id, t=task_id: process_zip_upload.apply_async((i,), task_id=t)
        )
        queued.append(upload_id)
    return queued


class _Reporter:
    """Writes stage and overall percent to the row, only when they change (each write commits)."""

    def __init__(self, upload_id: int):
        self.upload_id = upload_id
        self.stage = ""
        self.percent = -1

    def __call__(self, stage: str, fraction: float = 0.0) -> None:
        low, high = STAGE_RANGES[stage]
        percent = int(low + (high - low) * max(0.0, min(1.0, fraction)))
        if stage == self.stage and percent == self.percent:
            return
        self.stage, self.percent = stage, percent
        ZipUpload.objects.filter(pk=self.upload_id).update(stage=stage, percent=percent)


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
    """Import one upload through its stages; the body of the Celery task."""
    taken = ZipUpload.objects.filter(pk=upload_id, status=UploadStatus.PENDING).update(
        status=UploadStatus.IN_PROGRESS, stage=UploadStage.INITIALISE, percent=0,
        started_at=timezone.now(), finished_at=None, error_message="",
    )
    if not taken:
        log.info("ZIP upload %s is not pending (already taken or gone); nothing to do", upload_id)
        return {"upload": upload_id, "skipped": True}
    upload = ZipUpload.objects.get(pk=upload_id)
    report_stage = _Reporter(upload_id)
    try:
        report_stage(UploadStage.INITIALISE)
        if not upload.file or not os.path.exists(upload.file.path):
            raise ArchiveError(f"the uploaded file of upload #{upload_id} is missing from the upload folder")
        path = upload.file.path
        total = _member_count(path)
        report_stage(UploadStage.INITIALISE, 1.0)

        report_stage(UploadStage.EXTRACT)

        def progress(done: int, _total: int | None) -> None:
            if done == 1:
                report_stage(UploadStage.EXTRACT, 1.0)
            report_stage(UploadStage.IMPORT, done / total if total else 1.0)

        report = import_paths(
            [path], source_kind=SourceKind.ZIP_UPLOAD, received_from=f"ZIP upload #{upload_id}",
            progress=progress,
        )
        _rename_entries(report, path, upload.original_name or os.path.basename(path))
        name = upload.original_name or os.path.basename(path)
        refused = _whole_archive_refusal(report, name)
        if refused:
            raise ArchiveError(f"{name}: {refused}")
        report_stage(UploadStage.IMPORT, 1.0)

        report_stage(UploadStage.CLEAN_UP)
        upload.file.delete(save=False)
        ZipUpload.objects.filter(pk=upload_id).update(file="")
        report_stage(UploadStage.CLEAN_UP, 1.0)

        report_stage(UploadStage.FINALISE)
        counters = report.as_dict()
        ZipUpload.objects.filter(pk=upload_id).update(
            status=UploadStatus.COMPLETED, stage=UploadStage.DONE, percent=100, finished_at=timezone.now(),
            import_run_id=report.import_run_id, files_seen=report.files_seen,
            instances_new=report.instances_new, instances_duplicate=report.instances_duplicate,
            conflicts_count=len(report.conflicts), ignored_count=len(report.ignored),
            patients=counters["patients"], studies=counters["studies"], series=counters["series"],
        )
        return {"upload": upload_id, "status": UploadStatus.COMPLETED} | {
            k: v for k, v in counters.items() if k not in ("conflicts", "ignored")
        }
    except DicomflowError as exc:
        _fail(upload_id, str(exc))
        return {"upload": upload_id, "status": UploadStatus.FAILED}
    except Exception as exc:
        _fail(upload_id, f"internal error ({type(exc).__name__}); see the worker log")
        log.exception("ZIP upload %s failed", upload_id)
        raise


def _fail(upload_id: int, message: str) -> None:
    ZipUpload.objects.filter(pk=upload_id).update(
        status=UploadStatus.FAILED, finished_at=timezone.now(), error_message=message[:4000]
    )
    log.warning("ZIP upload %s failed: %s", upload_id, message)


def abandon(upload_ids: Iterable[int]) -> int:
    """Mark In-progress uploads whose worker was lost as Failed, so "Process now" can retry them.

    Only for uploads nobody is processing any more (the admin decides); returns how many changed.
    """
    return ZipUpload.objects.filter(pk__in=list(upload_ids), status=UploadStatus.IN_PROGRESS).update(
        status=UploadStatus.FAILED, finished_at=timezone.now(),
        error_message="stopped by an administrator (the worker processing it was lost); process it again",
    )


def delete_uploads(uploads: Iterable[ZipUpload]) -> int:
    """Delete uploads and their ZIP files; uploads in progress are kept. Returns how many were deleted."""
    deleted = 0
    for upload in uploads:
        if upload.status == UploadStatus.IN_PROGRESS:
            continue
        if upload.file:
            upload.file.delete(save=False)
        upload.delete()
        deleted += 1
    return deleted

