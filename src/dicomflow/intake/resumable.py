"""Resumable uploads: the REST/SDK upload and the browser folder upload use this one protocol.

1. **Create** a session declaring its files: ``[{"name", "size", "sha256"?}]`` (a single DICOM
   file, a ZIP, or a whole folder's files). Limits on total size, file count and file size are
   checked here, before any byte is sent.
2. **Send chunks**: ``write_chunk(session, index, offset, data)``. ``offset`` must equal the bytes
   the server holds for that file (``received``) — ask the session to learn it after an
   interruption. A chunk that repeats bytes already held (a retry whose answer was lost) is
   accepted when those bytes are identical, so sending is idempotent; anything else is refused
   with the offset to resume from. When a file is complete its sha256 is verified (or computed,
   when the client declared none); a mismatch discards the file's bytes and asks for it again.
3. **Finalize**: once every file is complete the session is queued (waiting → pending); a Celery
   task (:func:`import_session`, run by :func:`dicomflow.progress.run_long_job`) imports the files
   with :func:`dicomflow.intake.services.import_paths`, reporting progress (files done / total) on
   the session with the shared reporter, then removes the uploaded bytes.

Chunks are bounded (``max_chunk``) and read into memory before the session row is locked, so a
slow client never holds the database's write lock. Files are stored under numbered names; the
client's names are used only in reports.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import shutil
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from dicomflow import progress
from dicomflow.errors import UploadError
from dicomflow.intake.models import SourceKind, UploadFile, UploadSession, UploadSessionStage, UploadSessionStatus
from dicomflow.intake.signals import upload_imported

log = logging.getLogger(__name__)

MiB = 1024 * 1024
GiB = 1024 * MiB
_HEX = set("0123456789abcdef")


class UploadOffsetError(UploadError):
    """A chunk does not start where the server's copy of the file ends."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


class UploadChecksumError(UploadError):
    """A complete file's sha256 differs from the declared one; its bytes were discarded."""


class UploadLimitError(UploadError):
    """The upload is larger (bytes, files, chunk) than this server accepts."""


class UploadQuotaError(UploadLimitError):
    """Accepting the upload would take the user's or the server's uploads in progress over quota."""


class UploadSpaceError(UploadError):
    """The file system has not room for the upload and the configured reserve (HTTP 507)."""


class UploadStateError(UploadError):
    """The session is not in a state that allows this (e.g. chunks after finalize)."""


@dataclass(frozen=True)
class UploadLimits:
    """Upper bounds, from ``DICOMFLOW_UPLOAD_MAX_BYTES`` / ``_MAX_FILES`` / ``_MAX_CHUNK`` (bytes).

    20 GiB per session matches the archive extraction budget (``ArchiveLimits``); 8 MiB chunks keep
    each request short and bounded in memory.
    """

    max_bytes: int = 20 * GiB
    max_files: int = 100_000
    max_chunk: int = 8 * MiB

    @classmethod
    def from_env(cls) -> UploadLimits:
        """The limits configured by ``DICOMFLOW_UPLOAD_*`` (parsed, strictly, in ``dicomflow.settings``)."""
        return cls(settings.DICOMFLOW_UPLOAD_MAX_BYTES, settings.DICOMFLOW_UPLOAD_MAX_FILES,
                   settings.DICOMFLOW_UPLOAD_MAX_CHUNK)


@dataclass(frozen=True)
class UploadQuota:
    """``DICOMFLOW_UPLOAD_QUOTA_USER`` / ``_QUOTA_TOTAL`` (bytes held by uploads in progress) and
    ``DICOMFLOW_UPLOAD_RESERVE`` (bytes every new upload must leave free)."""

    per_user: int
    total: int
    reserve: int

    @classmethod
    def from_env(cls) -> UploadQuota:
        return cls(settings.DICOMFLOW_UPLOAD_QUOTA_USER, settings.DICOMFLOW_UPLOAD_QUOTA_TOTAL,
                   settings.DICOMFLOW_UPLOAD_RESERVE)


_IN_PROGRESS = (UploadSessionStatus.WAITING, UploadSessionStatus.PENDING, UploadSessionStatus.RUNNING)


def _held(owner) -> tuple[int, int, int]:
    """Bytes held by uploads in progress: (the owner's, everyone's, still to arrive).

    Resumable sessions hold their declared size until imported, cancelled or failed; ZIP uploads
    hold their size until imported (a failed one keeps its ZIP on disk, so it still counts).
    """
    from django.db.models import Sum

    from dicomflow.intake.models import ZipUpload
    from dicomflow.progress import Status

    sessions = UploadSession.objects.filter(status__in=_IN_PROGRESS)
    zips = ZipUpload.objects.exclude(status__in=(Status.FINISHED, Status.CANCELLED))
    total = (sessions.aggregate(n=Sum("total_size"))["n"] or 0) + (zips.aggregate(n=Sum("size"))["n"] or 0)
    outstanding = sessions.aggregate(n=Sum(F("total_size") - F("received_size")))["n"] or 0
    mine = 0
    if owner is not None and getattr(owner, "pk", None) is not None:
        mine = (sessions.filter(owner=owner).aggregate(n=Sum("total_size"))["n"] or 0) + (
            zips.filter(uploaded_by=owner).aggregate(n=Sum("size"))["n"] or 0
        )
    return mine, total, outstanding


def _free(path: Path) -> int:
    return shutil.disk_usage(path).free


def check_room(size: int, owner=None, quota: UploadQuota | None = None) -> None:
    """Refuse an upload of ``size`` bytes that would break a quota or fill the disk.

    Per user and in total, uploads in progress may hold at most the configured quota; and the
    upload folder's file system must keep ``reserve`` bytes free after this upload *and* what the
    sessions already accepted still have to send. The import copies files into the store before
    the upload is removed, so when the store shares that file system the upload counts twice.
    """
    quota = quota or UploadQuota.from_env()
    owner = owner if getattr(owner, "is_authenticated", False) else None
    mine, total, outstanding = _held(owner)
    if owner is not None and mine + size > quota.per_user:
        raise UploadQuotaError(
            f"this upload of {size} bytes would bring your uploads in progress to {mine + size} bytes; "
            f"each user may have at most {quota.per_user} bytes in progress (finish or cancel earlier uploads)"
        )
    if total + size > quota.total:
        raise UploadQuotaError(
            f"this upload of {size} bytes would bring the server's uploads in progress to {total + size} bytes; "
            f"at most {quota.total} bytes are accepted at a time — try again once earlier uploads are imported"
        )
    upload_dir, store_dir = Path(settings.UPLOAD_DIR), Path(settings.STORE_DIR)
    needed = outstanding + size + quota.reserve
    same = os.stat(upload_dir).st_dev == os.stat(store_dir).st_dev
    if same:
        needed += size
    free = _free(upload_dir)
    if free < needed:
        raise UploadSpaceError(
            f"not enough free disk space for this upload of {size} bytes: {free} bytes free, {needed} needed "
            f"(including {quota.reserve} bytes kept in reserve{' and room to import it' if same else ''})"
        )
    if not same and _free(store_dir) < size + quota.reserve:
        raise UploadSpaceError(
            f"not enough free space in the file store to import this upload of {size} bytes "
            f"(keeping {quota.reserve} bytes in reserve)"
        )


def sessions_root() -> Path:
    return Path(settings.UPLOAD_DIR) / "sessions"


def session_dir(session: UploadSession) -> Path:
    return sessions_root() / session.pk.hex


def file_path(session: UploadSession, index: int) -> Path:
    return session_dir(session) / f"{index:06d}"


def _clean_name(name: object, index: int) -> str:
    """The client's relative name, for reports only: no leading slash, no control characters."""
    text = "".join(ch for ch in str(name or "") if ch.isprintable()).replace("\\", "/").lstrip("/")
    return text[:1024] or f"file-{index}"


def create_session(files: list[dict], *, owner=None, source_kind: str = SourceKind.API_UPLOAD,
                   limits: UploadLimits | None = None) -> UploadSession:
    """Declare an upload of ``files`` (``name``, ``size``, optional ``sha256``); nothing is sent yet."""
    limits = limits or UploadLimits.from_env()
    if not files:
        raise UploadError("declare at least one file (name and size) to upload")
    if len(files) > limits.max_files:
        raise UploadLimitError(f"{len(files)} files declared; this server accepts at most {limits.max_files} per upload")
    rows, total = [], 0
    for index, entry in enumerate(files):
        size = entry.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise UploadError(f"file {index}: size must be a whole number of bytes (0 or more)")
        digest = str(entry.get("sha256") or "").lower()
        if digest and (len(digest) != 64 or not set(digest) <= _HEX):
            raise UploadError(f"file {index}: sha256 must be 64 hexadecimal digits")
        total += size
        rows.append(UploadFile(index=index, name=_clean_name(entry.get("name"), index), size=size,
                               sha256=digest, sha256_declared=bool(digest)))
    if total > limits.max_bytes:
        raise UploadLimitError(f"the upload totals {total} bytes; this server accepts at most {limits.max_bytes} bytes")
    if source_kind not in (SourceKind.API_UPLOAD, SourceKind.BROWSER_UPLOAD):
        raise UploadError("source must be the REST/SDK upload or the browser upload")
    with transaction.atomic():
        if getattr(owner, "is_authenticated", False):  # one owner's sessions are admitted one at a time
            from django.contrib.auth import get_user_model  # owner may be request.user, a lazy object

            get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        check_room(total, owner)
        session = UploadSession.objects.create(
            id=uuid.uuid4(), owner=owner if getattr(owner, "is_authenticated", False) else None,
            source_kind=source_kind, file_count=len(rows), total_size=total,
        )
        for row in rows:
            row.session = session
        UploadFile.objects.bulk_create(rows, batch_size=1000)
    session_dir(session).mkdir(parents=True, exist_ok=True)
    empties = [r.index for r in rows if r.size == 0]
    for index in empties:  # nothing to send: complete now (checksum verified on the empty content)
        _complete_file(session.pk, index)
    return session


def write_chunk(session_id, index: int, offset: int, data: bytes, limits: UploadLimits | None = None) -> UploadFile:
    """Write ``data`` at ``offset`` of file ``index``; returns the file row (``received`` = next offset)."""
    limits = limits or UploadLimits.from_env()
    if len(data) > limits.max_chunk:
        raise UploadLimitError(f"chunk of {len(data)} bytes; send at most {limits.max_chunk} bytes per request")
    if not isinstance(offset, int) or offset < 0:
        raise UploadError("the offset must be a whole number of bytes (0 or more)")
    mismatch = False
    with transaction.atomic():  # locks this file's row only: other files of the session go on in parallel
        try:
            row = UploadFile.objects.select_for_update(of=("self",)).select_related("session").get(
                session_id=session_id, index=index)
        except UploadFile.DoesNotExist:
            count = UploadSession.objects.filter(pk=session_id).values_list("file_count", flat=True).first() or 0
            raise UploadError(f"this upload has no file number {index} (files are 0 to {count - 1})") from None
        session = row.session
        if session.status != UploadSessionStatus.WAITING:
            raise UploadStateError(f"this upload is {session.get_status_display().lower()}; it takes no more data")
        if row.complete:
            if offset + len(data) <= row.size and _same_bytes(session, index, offset, data):
                return row  # a retried chunk of a finished file
            raise UploadOffsetError("this file is already complete", row.received)
        if offset > row.received:
            raise UploadOffsetError(
                f"wrong offset {offset}: the server holds {row.received} bytes of file {index}; resume from there",
                row.received,
            )
        if offset + len(data) > row.size:
            raise UploadError(f"the chunk ends at byte {offset + len(data)}, beyond the declared size {row.size} of file {index}")
        overlap = row.received - offset
        if overlap and not _same_bytes(session, index, offset, data[:overlap]):
            raise UploadOffsetError(
                f"the chunk at offset {offset} differs from the bytes the server already holds; "
                f"resume from offset {row.received}",
                row.received,
            )
        fresh = data[overlap:]
        if fresh:
            _write_at(file_path(session, index), row.received, fresh)
            row.received += len(fresh)
            whole = len(fresh) == row.size  # the whole file in this one chunk: hash it here, no re-read
            digest = hashlib.sha256(fresh).hexdigest() if whole else ""
            mismatch = whole and row.sha256_declared and digest != row.sha256
            if mismatch:  # committed, then the error is raised (below)
                UploadFile.objects.filter(pk=row.pk).update(received=0)
                file_path(session, index).unlink(missing_ok=True)
            elif whole:
                row.sha256, row.complete = digest, True
                UploadFile.objects.filter(pk=row.pk).update(received=row.received, sha256=digest, complete=True)
                UploadSession.objects.filter(pk=session.pk).update(
                    received_size=F("received_size") + len(fresh), files_complete=F("files_complete") + 1,
                    updated_at=timezone.now(),
                )
            else:
                UploadFile.objects.filter(pk=row.pk).update(received=row.received)
                UploadSession.objects.filter(pk=session.pk).update(
                    received_size=F("received_size") + len(fresh), updated_at=timezone.now()
                )
    if mismatch:
        raise _checksum_error(index)
    if row.received == row.size and not row.complete:
        row = _complete_file(session_id, index)
    return row


def _checksum_error(index: int) -> UploadChecksumError:
    return UploadChecksumError(
        f"file {index} arrived complete but its sha256 differs from the declared one; "
        "its bytes were discarded: send it again from offset 0"
    )


def _write_at(path: Path, offset: int, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    except FileNotFoundError:  # the session's folder is gone: cancelled or purged meanwhile
        raise UploadStateError("this upload was cancelled; start a new one") from None
    try:
        os.ftruncate(fd, offset)  # drop bytes of an earlier, interrupted request past the offset
        view = memoryview(data)
        position = offset
        while view:
            written = os.pwrite(fd, view, position)
            view, position = view[written:], position + written
    finally:
        os.close(fd)


def _same_bytes(session: UploadSession, index: int, offset: int, data: bytes) -> bool:
    try:
        with open(file_path(session, index), "rb") as fh:
            fh.seek(offset)
            return fh.read(len(data)) == data
    except OSError:
        return False


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(MiB):
                digest.update(block)
    except FileNotFoundError:
        pass  # an empty file was never written
    return digest.hexdigest()


def _complete_file(session_id, index: int) -> UploadFile:
    """Verify (or record) the sha256 of a fully received file; discard it on mismatch."""
    session = UploadSession.objects.get(pk=session_id)
    path = file_path(session, index)
    if not path.exists():
        path.touch(mode=0o600)
    actual = _sha256_of(path)
    with transaction.atomic():
        row = UploadFile.objects.select_for_update().get(session_id=session_id, index=index)
        if row.complete:
            return row
        mismatch = row.sha256_declared and row.sha256 != actual
        if mismatch:  # committed before the error is raised (outside this block)
            UploadFile.objects.filter(pk=row.pk).update(received=0)
            UploadSession.objects.filter(pk=session_id).update(received_size=F("received_size") - row.received)
            path.unlink(missing_ok=True)
        else:
            row.sha256, row.complete = actual, True
            UploadFile.objects.filter(pk=row.pk).update(sha256=actual, complete=True)
            UploadSession.objects.filter(pk=session_id).update(files_complete=F("files_complete") + 1)
    if mismatch:
        raise _checksum_error(index)
    return row


def finalize(session_id) -> UploadSession:
    """All files complete → Queued, and the import task is sent once this transaction commits."""
    from dicomflow.intake.tasks import import_upload_session

    with transaction.atomic():
        session = UploadSession.objects.select_for_update().get(pk=session_id)
        if session.status in (UploadSessionStatus.PENDING, UploadSessionStatus.RUNNING, UploadSessionStatus.FINISHED):
            return session  # finalize is idempotent
        if session.status != UploadSessionStatus.WAITING:
            raise UploadStateError(f"this upload is {session.get_status_display().lower()}; it cannot be imported")
        missing = UploadFile.objects.filter(session=session, complete=False).count()
        if missing:
            raise UploadStateError(
                f"{missing} of {session.file_count} files are not complete yet; send their remaining bytes first"
            )
        session.status, session.stage = UploadSessionStatus.PENDING, UploadSessionStage.IMPORT
        session.save(update_fields=["status", "stage", "updated_at"])
        transaction.on_commit(lambda: import_upload_session.delay(str(session_id)))
    return session


def cancel(session_id) -> UploadSession:
    """Stop a session that is still receiving and remove its bytes (idempotent)."""
    with transaction.atomic():
        session = UploadSession.objects.select_for_update().get(pk=session_id)
        if session.status in (UploadSessionStatus.PENDING, UploadSessionStatus.RUNNING):
            raise UploadStateError("this upload is being imported; it can no longer be cancelled")
        if session.status == UploadSessionStatus.WAITING:
            session.status = UploadSessionStatus.CANCELLED
            session.finished_at = timezone.now()
            session.save(update_fields=["status", "finished_at", "updated_at"])
    shutil.rmtree(session_dir(session), ignore_errors=True)
    return session


def _count_to_import(path: Path) -> int:
    """Files the import will see in one uploaded file: ZIP members, else 1 (nested archives: estimate)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                return max(1, sum(1 for info in zf.infolist() if not info.is_dir()))
    except (OSError, zipfile.BadZipFile):
        pass
    return 1


def import_session(session_id) -> dict:
    """Import a queued session's files (the Celery task's body); a re-delivered task does nothing."""
    session = progress.run_long_job(UploadSession, session_id, _import_files, stage=UploadSessionStage.IMPORT)
    if session is None:
        return {"session": str(session_id), "skipped": True}
    return {"session": str(session_id), "status": session.status, "import_run": session.import_run_id}


def _import_files(session: UploadSession, report: progress.ProgressReporter) -> dict:
    """Import the claimed session's files; returns what is stored with the ending."""
    from dicomflow.intake.services import import_paths

    names = dict(UploadFile.objects.filter(session=session).values_list("index", "name"))
    paths = [file_path(session, i) for i in sorted(names)]
    total = sum(_count_to_import(p) for p in paths)
    report(UploadSessionStage.IMPORT, 0, total)
    result = import_paths(
        paths, source_kind=session.source_kind, received_from=f"upload session {session.pk}",
        progress=lambda done, _total: report(UploadSessionStage.IMPORT, done, max(total, done)),
    )
    _rename_entries(result, {str(file_path(session, i)): name for i, name in names.items()})
    document = result.as_dict()
    document["series_uids"], document["series_list"] = _series_touched(result.series_ids)
    # uploads into a project are staged, linked and sent for processing before the session finishes;
    # a DicomflowError from a receiver fails the session with its message
    upload_imported.send(sender=UploadSession, session=session, report=result)
    shutil.rmtree(session_dir(session), ignore_errors=True)
    return {"import_run_id": result.import_run_id, "result": document, "done": result.files_seen,
            "total": result.files_seen, "updated_at": timezone.now()}


def _series_touched(series_ids: set[int], limit: int = 200) -> tuple[list[str], list[dict]]:
    """The series an import touched (at most ``limit``): UIDs, and UID/modality/description for pages."""
    from dicomflow.catalog.models import Series

    rows = list(Series.objects.filter(pk__in=sorted(series_ids)[:limit]).order_by("study_id", "series_number", "pk")
                .values("series_instance_uid", "modality", "description"))
    return [r["series_instance_uid"] for r in rows], [
        {"uid": r["series_instance_uid"], "modality": r["modality"], "description": r["description"]} for r in rows
    ]


def _rename_entries(report, names: dict[str, str]) -> None:
    """Report the client's file names (``name`` or ``name!member``), never our storage paths."""
    from dicomflow.intake.models import ImportRun

    for entry in (*report.conflicts, *report.ignored):
        stored, sep, member = entry["path"].partition("!")
        if stored in names:
            entry["path"] = names[stored] + sep + member
    ImportRun.objects.filter(pk=report.import_run_id).update(conflicts=report.conflicts, ignored=report.ignored)


def purge_stale(days: float | None = None) -> int:
    """Cancel sessions that received nothing for ``days`` (``DICOMFLOW_UPLOAD_STALE_DAYS``, default 7)
    and remove their bytes; returns how many. Run hourly by beat."""
    if days is None:
        days = settings.DICOMFLOW_UPLOAD_STALE_DAYS
    cutoff = timezone.now() - datetime.timedelta(days=days)
    stale = list(
        UploadSession.objects.filter(status=UploadSessionStatus.WAITING, updated_at__lt=cutoff).values_list("pk", flat=True)
    )
    for pk in stale:
        cancel(pk)
    return len(stale)
