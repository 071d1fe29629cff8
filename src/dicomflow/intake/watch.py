"""Watched datastore folders (as the DRAW client does): copy each new, quiet sub-folder once, then import it.

A scan lists the direct sub-folders of every enabled :class:`WatchedFolder` (hidden ones, whose
names start with ".", and symbolic links are skipped: writers may use a hidden name while a folder
is still being filled). For each it computes a *signature*: number of files, total bytes and the
newest modification time of every entry (files and folders, the folder itself included).

A folder is **stable** — taken — when both hold:

1. its signature is the one recorded at the previous scan (it has been seen at least twice and
   nothing was added, removed, grown or touched in between; this catches copies that preserve old
   mtimes, e.g. ``rsync -a`` or ``cp -p``), and
2. nothing in it is newer than N minutes (``stable_minutes``, default
   ``DICOMFLOW_WATCH_STABLE_MINUTES`` = 10) — or, for clocks that disagree (mtimes in the future on
   a network share), the signature has not changed for N minutes of our own clock.

Taking a folder is safe with several workers: each sub-folder has exactly one
:class:`FolderIntake` row (unique constraint on watched folder + name), and the claim is a
conditional update waiting → running (stage copy) that only one worker can win; later states are
never reset, so a folder is never taken twice. The copy goes to a hidden temporary folder and is
renamed into ``$DICOMFLOW_HOME/datastore/folders/<name>`` (a unique name, reserved with
``mkdir``); if the source changed while it was copied, the copy is discarded and the folder waits
again; a copied folder is pending (stage import). The import itself (``import_intake``) is the
shared claim of :func:`dicomflow.progress.run_long_job` (pending → running) followed by
:func:`dicomflow.intake.services.import_paths` with ``source_kind=WATCHED_FOLDER``.

Conventions for whoever delivers into a watched folder: put each delivery in its own sub-folder
(files lying directly in the watched folder are not taken); a name is taken once per watched
folder for ever — deliver again under a new name (exports usually carry a timestamp or UID); fill
a folder under a hidden name (``.name``) and rename it when complete if you can. The source is
left as it is; the copy stays in the datastore after the import. Administrators can retry failed
or stuck folders from the admin (:func:`retry`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from dicomflow import progress
from dicomflow.errors import DicomflowError, StorageError
from dicomflow.intake.models import FolderIntake, FolderIntakeStage, FolderIntakeStatus, SourceKind, WatchedFolder
from dicomflow.intake.filters import folder_filter
from dicomflow.intake.services import import_paths

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FolderSignature:
    """What a scan sees of a folder: if any of this changes, the folder is not quiet."""

    files: int
    bytes: int
    newest_mtime: float

    @property
    def text(self) -> str:
        return f"{self.files}:{self.bytes}:{self.newest_mtime:.6f}"


def folder_signature(path: str | os.PathLike) -> FolderSignature:
    """Count files and bytes and find the newest mtime below ``path`` (links are not followed)."""
    files = size = 0
    newest = os.lstat(path).st_mtime
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:  # removed while we looked: the next scan sees the change
                continue
            newest = max(newest, st.st_mtime)
            if name in filenames:
                files += 1
                size += st.st_size
    return FolderSignature(files, size, newest)


def is_stable(intake: FolderIntake, signature: FolderSignature, stable_minutes: float, now: datetime) -> bool:
    """Rule 1 + 2 of the module docstring (the caller already knows the signature is unchanged)."""
    quiet = timedelta(minutes=stable_minutes)
    newest = datetime.fromtimestamp(signature.newest_mtime, tz=now.tzinfo)
    if now - newest >= quiet:
        return True
    return intake.signature_since is not None and now - intake.signature_since >= quiet


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


def claim(intake_id: int, signature: str) -> bool:
    """Take a waiting folder for this worker; True for exactly one of any number of concurrent callers."""
    return progress.claim(FolderIntake.objects.filter(pk=intake_id, signature=signature), stage=FolderIntakeStage.COPY,
                          from_status=FolderIntakeStatus.WAITING, claimed_by=worker_identity())


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe_name(name: str) -> str:
    return _UNSAFE.sub("_", name).strip("._")[:120] or "folder"


def _reserve_destination(name: str) -> Path:
    """Reserve a unique ``datastore/folders/<name>[-k]`` with mkdir (atomic: two workers never share one)."""
    root = settings.DATASTORE_DIR / "folders"
    root.mkdir(parents=True, exist_ok=True)
    base = _safe_name(name)
    for k in range(1, 10_000):
        candidate = root / (base if k == 1 else f"{base}-{k}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise DicomflowError(f"no free name for a copy of '{base}' in {root}")


def _skip_links(directory: str, names: list[str]) -> list[str]:
    return [n for n in names if os.path.islink(os.path.join(directory, n))]


def copy_claimed(intake: FolderIntake, signature: FolderSignature) -> bool:
    """Copy a claimed folder into the datastore; False if it failed or (back to waiting) changed meanwhile."""
    rows = FolderIntake.objects.filter(pk=intake.pk)
    with progress.failure_policy(intake.what, lambda message: progress.fail(rows, message), ref=intake.pk) as outcome:
        destination, after = _copy(intake, signature)
    if outcome.failed:
        return False
    if destination is None:
        progress.finish(rows, status=FolderIntakeStatus.WAITING, stage="", signature=after.text,
                        signature_since=timezone.now(), started_at=None, claimed_by="")
        log.info("watched folder %s changed while copying; waiting again", intake)
        return False
    progress.finish(rows, status=FolderIntakeStatus.PENDING, stage=FolderIntakeStage.IMPORT, copy_path=str(destination),
                    copied_at=timezone.now(), files_copied=signature.files, bytes_copied=signature.bytes)
    log.info("copied watched folder %s to %s", intake, destination)
    return True


def _copy(intake: FolderIntake, signature: FolderSignature) -> tuple[Path | None, FolderSignature]:
    """The copy, in a hidden folder renamed into place (None when the source changed meanwhile), and
    the source's signature after copying."""
    tmp_root = settings.DATASTORE_DIR / "folders" / f".incoming-{uuid.uuid4().hex}"
    tmp_root.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copytree(intake.source_path, tmp_root, symlinks=False, ignore=_skip_links)
        after = folder_signature(intake.source_path)
        if after != signature:
            shutil.rmtree(tmp_root, ignore_errors=True)
            return None, after
        destination = _reserve_destination(intake.folder_name)
        os.rename(tmp_root, destination)  # replaces the empty reserved folder atomically
        return destination, after
    except OSError as exc:
        shutil.rmtree(tmp_root, ignore_errors=True)
        raise StorageError(f"copy failed: {exc.strerror or type(exc).__name__}") from None


def _tracking_row(source: WatchedFolder, name: str, path: str) -> FolderIntake:
    intake, _ = FolderIntake.objects.get_or_create(
        watched_folder=source, folder_name=name, defaults={"source_path": path}
    )
    return intake


def scan_source(source: WatchedFolder, now: datetime | None = None) -> list[int]:
    """One scan of one watched folder; returns the ids of folders this call copied (ready to import)."""
    now = now or timezone.now()
    root = Path(source.path)
    copied: list[int] = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        WatchedFolder.objects.filter(pk=source.pk).update(
            last_scan_at=now, last_scan_error=f"cannot list {root}: {exc.strerror or exc}"
        )
        return copied
    known = {i.folder_name: i for i in FolderIntake.objects.filter(watched_folder=source)}  # one query
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        intake = known.get(entry.name) or _tracking_row(source, entry.name, entry.path)
        if intake.status != FolderIntakeStatus.WAITING:
            continue
        try:
            signature = folder_signature(entry.path)
        except OSError:
            continue  # vanished or unreadable now; seen again next scan
        if signature.text != intake.signature:
            FolderIntake.objects.filter(pk=intake.pk, status=FolderIntakeStatus.WAITING).update(
                signature=signature.text, signature_since=now
            )
            continue
        if not is_stable(intake, signature, source.stable_minutes, now):
            continue
        if claim(intake.pk, signature.text) and copy_claimed(intake, signature):
            copied.append(intake.pk)
    WatchedFolder.objects.filter(pk=source.pk).update(last_scan_at=now, last_scan_error="")
    return copied


def scan_all() -> list[int]:
    """Scan every enabled watched folder; ids of the folders copied by this call."""
    copied: list[int] = []
    for source in WatchedFolder.objects.filter(enabled=True):
        copied += scan_source(source)
    return copied


def import_intake(intake_id: int):
    """Import a copied folder once (the shared claim: pending → running); None if someone else did or it failed."""
    reports = []

    def body(intake: FolderIntake, report: progress.ProgressReporter) -> dict:
        reports.append(import_paths(
            [intake.copy_path], source_kind=SourceKind.WATCHED_FOLDER,
            received_from=f"watched folder {intake.watched_folder.name}/{intake.folder_name}",
            progress=lambda done, total: report(FolderIntakeStage.IMPORT, done, total or 0),
            intake_filter=folder_filter(intake.watched_folder),
        ))
        return {"import_run_id": reports[0].import_run_id}

    intake = progress.run_long_job(FolderIntake, intake_id, body, stage=FolderIntakeStage.IMPORT)
    return reports[0] if intake is not None and intake.status == FolderIntakeStatus.FINISHED else None


def retry(intake_ids) -> list[int]:
    """Administrator override for failed or stuck folders (a worker was lost mid-way).

    With a complete copy in the datastore: back to pending, stage import (returned, for the caller to
    queue the import). Without one: back to waiting with no signature, so the scans take it afresh.
    """
    ids = list(intake_ids)
    stuck = [FolderIntakeStatus.FAILED, FolderIntakeStatus.RUNNING]
    to_import = []
    for intake in FolderIntake.objects.filter(pk__in=ids, status__in=stuck):
        rows = FolderIntake.objects.filter(pk=intake.pk, status=intake.status)
        if intake.copy_path and os.path.isdir(intake.copy_path):
            if progress.reset(rows, stage=FolderIntakeStage.IMPORT):
                to_import.append(intake.pk)
        else:
            progress.reset(rows, status=FolderIntakeStatus.WAITING, signature="", signature_since=None, claimed_by="")
    return to_import



# --- what administrators do from the datastore page (permission-checked) ------------------------------
def _require_folder_permission(actor, verb: str) -> None:
    from dicomflow.errors import PermissionDeniedError

    if not (getattr(actor, "is_authenticated", False) and actor.is_active):
        raise PermissionDeniedError("log in first")
    if not (actor.is_superuser or actor.has_perm(f"intake.{verb}_watchedfolder")):
        raise PermissionDeniedError(f"you may not {verb} watched folders")


def add_watched_folder(actor, *, name: str, path: str, stable_minutes: float | None = None) -> WatchedFolder:
    """A new watched folder (validated: absolute, existing, outside $DICOMFLOW_HOME, unique name)."""
    from django.core.exceptions import ValidationError
    from django.utils.text import slugify

    from dicomflow.errors import InputError

    _require_folder_permission(actor, "add")
    slug = slugify(name or "")[:64]
    if not slug:
        raise InputError("give the watched folder a name (letters, digits, hyphens)")
    if WatchedFolder.objects.filter(name=slug).exists():
        raise InputError(f"a watched folder named '{slug}' exists already")
    folder = WatchedFolder(name=slug, path=(path or "").strip())
    if stable_minutes is not None:
        folder.stable_minutes = stable_minutes
    try:
        folder.full_clean()
    except ValidationError as exc:
        raise InputError("; ".join(" ".join(msgs) for msgs in exc.message_dict.values())) from None
    folder.save()
    log.info("watched folder %s added", slug)
    return folder


def set_watched_folder_enabled(actor, folder_id: int, enabled: bool) -> WatchedFolder:
    """Pause (``enabled=False``) or resume a watched folder; copies already taken are not touched."""
    from dicomflow.errors import NotFoundError

    _require_folder_permission(actor, "change")
    folder = WatchedFolder.objects.filter(pk=folder_id).first()
    if folder is None:
        raise NotFoundError(f"no watched folder #{folder_id}")
    WatchedFolder.objects.filter(pk=folder_id).update(enabled=enabled)
    folder.enabled = enabled
    log.info("watched folder %s %s", folder.name, "resumed" if enabled else "paused")
    return folder
