"""Retention: working copies are deleted by age, on a schedule, and every deletion is logged.

What counts as a working copy (never the catalogued store itself, which is the archive):

| kind | what | age from | setting (days; 0 keeps for ever) |
| --- | --- | --- | --- |
| ``datastore`` | copies of watched-folder deliveries (``$DICOMFLOW_HOME/datastore/folders/…``) | the intake's end | ``DICOMFLOW_RETAIN_DATASTORE_DAYS`` (30) |
| ``job`` | a processing job's folder (``work/jobs/<id>``: de-identified copy, processor scratch, results) | the job's end | ``DICOMFLOW_RETAIN_JOB_DAYS`` (30) |
| ``upload`` | uploaded bytes: ZIP uploads' files, resumable upload sessions' folders | the upload's end | ``DICOMFLOW_RETAIN_UPLOAD_DAYS`` (7) |
| ``export`` | export and staging scratch folders in ``work/`` (``identified-*``, ``staging-*``, ``import-*``) | last change | ``DICOMFLOW_RETAIN_EXPORT_DAYS`` (7) |

Only jobs, intakes and uploads that are over (finished, failed or cancelled) lose their copies; a
job waiting for quality control keeps its folder. Results of a processing job are catalogued in
the store when it exports, so they stay; only the job's downloadable ZIP of results needs the job
folder. Each deletion is one INFO line in the log (kind, path, size, age — paths are built from
database ids and generated names, never from patient data) and one row of the report; a run is
audited. Beat runs it daily (``retention`` in ``CELERY_BEAT_SCHEDULE``); ``dicomflow retention run
[--dry-run] --json`` runs it by hand.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from dicomflow.progress import ENDED

log = logging.getLogger(__name__)

SCRATCH_PREFIXES = ("identified-", "staging-", "import-")


@dataclass
class Deletion:
    kind: str
    path: str
    bytes: int
    age_days: float
    ref: str = ""


@dataclass
class RetentionReport:
    dry_run: bool
    policy: dict
    deleted: list[Deletion] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return sum(d.bytes for d in self.deleted)

    def as_dict(self) -> dict:
        return {"dry_run": self.dry_run, "policy": self.policy, "deleted": [asdict(d) for d in self.deleted],
                "freed_bytes": self.freed_bytes, "errors": self.errors}


def policy() -> dict:
    """Days each kind is kept (0: for ever), from the settings."""
    return {"datastore": settings.DICOMFLOW_RETAIN_DATASTORE_DAYS, "job": settings.DICOMFLOW_RETAIN_JOB_DAYS,
            "upload": settings.DICOMFLOW_RETAIN_UPLOAD_DAYS, "export": settings.DICOMFLOW_RETAIN_EXPORT_DAYS}


def _size(path: Path) -> int:
    if path.is_file() and not path.is_symlink():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve()) and path.resolve() != root.resolve()
    except OSError:
        return False


class _Run:
    def __init__(self, dry_run: bool, now: datetime):
        self.report = RetentionReport(dry_run=dry_run, policy=policy())
        self.now = now

    def cutoff(self, kind: str) -> datetime | None:
        days = self.report.policy[kind]
        return self.now - timedelta(days=days) if days else None

    def remove(self, kind: str, path: Path, since: datetime | float, ref: str, root: Path) -> bool:
        """Delete ``path`` (a file or folder inside ``root``); True when it is gone."""
        if not path.exists() and not path.is_symlink():
            return True
        if not _inside(path, root):
            self.report.errors.append({"kind": kind, "path": str(path), "reason": f"outside {root}; left alone"})
            return False
        seconds = (self.now.timestamp() - since) if isinstance(since, float) else (self.now - since).total_seconds()
        item = Deletion(kind, str(path), _size(path), round(seconds / 86400, 2), ref)
        if not self.report.dry_run:
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except OSError as exc:
                self.report.errors.append({"kind": kind, "path": str(path), "reason": exc.strerror or str(exc)})
                return False
            log.info("retention: deleted %s %s (%s, %d bytes, %.1f days old)", kind, path, ref, item.bytes,
                     item.age_days)
        self.report.deleted.append(item)
        return True


def _datastore(run: _Run) -> None:
    from dicomflow.intake.models import FolderIntake

    cutoff = run.cutoff("datastore")
    if cutoff is None:
        return
    root = Path(settings.DATASTORE_DIR)
    for intake in FolderIntake.objects.filter(status__in=ENDED, finished_at__lt=cutoff).exclude(copy_path=""):
        if run.remove("datastore", Path(intake.copy_path), intake.finished_at, f"folder intake #{intake.pk}", root) \
                and not run.report.dry_run:
            FolderIntake.objects.filter(pk=intake.pk).update(copy_path="")


def _jobs(run: _Run) -> None:
    from dicomflow.processing.models import Job
    from dicomflow.processing.pipeline import job_dir

    cutoff = run.cutoff("job")
    if cutoff is None:
        return
    root = Path(settings.WORK_DIR) / "jobs"
    for job in Job.objects.filter(status__in=ENDED, finished_at__lt=cutoff).only("pk", "finished_at"):
        folder = job_dir(job)
        if folder.exists():
            run.remove("job", folder, job.finished_at, f"job #{job.pk}", root)


def _uploads(run: _Run) -> None:
    from dicomflow.intake.models import UploadSession, ZipUpload
    from dicomflow.intake.resumable import session_dir

    cutoff = run.cutoff("upload")
    if cutoff is None:
        return
    media = Path(settings.MEDIA_ROOT)
    for upload in ZipUpload.objects.filter(status__in=ENDED, finished_at__lt=cutoff).exclude(file=""):
        path = Path(upload.file.path)
        if run.remove("upload", path, upload.finished_at, f"ZIP upload #{upload.pk}", media) and not run.report.dry_run:
            ZipUpload.objects.filter(pk=upload.pk).update(file="")
    for session in UploadSession.objects.filter(status__in=ENDED, updated_at__lt=cutoff):
        folder = session_dir(session)
        if folder.exists():
            run.remove("upload", folder, session.finished_at or session.updated_at, f"upload session {session.pk}",
                       media)


def _scratch(run: _Run) -> None:
    cutoff = run.cutoff("export")
    if cutoff is None:
        return
    root = Path(settings.WORK_DIR)
    limit = cutoff.timestamp()
    for entry in sorted(root.iterdir()) if root.exists() else []:
        if not entry.name.startswith(SCRATCH_PREFIXES):
            continue
        try:
            newest = max([entry.lstat().st_mtime] + [os.lstat(os.path.join(r, n)).st_mtime
                                                      for r, ds, fs in os.walk(entry) for n in ds + fs])
        except OSError:
            continue
        if newest < limit:
            run.remove("export", entry, float(newest), "scratch folder", root)


def apply_retention(dry_run: bool = False, now: datetime | None = None) -> RetentionReport:
    """Delete the working copies older than the policy allows (``dry_run``: only list them)."""
    run = _Run(dry_run, now or timezone.now())
    started = time.monotonic()
    for step in (_datastore, _jobs, _uploads, _scratch):
        step(run)
    report = run.report
    log.info("retention%s: %d item(s), %d bytes %s in %.1f s; %d error(s)", " (dry run)" if dry_run else "",
             len(report.deleted), report.freed_bytes, "to free" if dry_run else "freed", time.monotonic() - started,
             len(report.errors))
    return report


def run_retention(actor, dry_run: bool = False, now: datetime | None = None) -> RetentionReport:
    """The operator's (or the scheduler's) retention run: staff and the CLI operator only; audited."""
    from dicomflow.accounts.actors import is_operator
    from dicomflow.accounts.audit import denied, record
    from dicomflow.accounts.models import AuditAction
    from dicomflow.errors import PermissionDeniedError

    if actor is not None and not is_operator(actor) and not getattr(actor, "is_superuser", False):
        denied(actor, AuditAction.RETENTION, detail="retention run refused: administrators only")
        raise PermissionDeniedError("only administrators may run the retention")
    report = apply_retention(dry_run=dry_run, now=now)
    if actor is not None:
        record(actor, AuditAction.RETENTION, obj="working copies",
               detail=f"{'dry run: ' if dry_run else ''}{len(report.deleted)} item(s), {report.freed_bytes} bytes; "
                      f"{len(report.errors)} error(s)")
    return report
