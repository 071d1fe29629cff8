"""Re-identification for authorised users, and the download of identifying data, audited.

A file produced from a project's de-identified data (the copy itself, or a result such as an
RTSTRUCT that references the de-identified CT) is mapped back to the clinical identity and the
original UIDs with the project's reverse map, kept in the file key store next to the project's
key (``dicomflow.core.deid.KeyStore``; the same map ``dicomflow reidentify`` uses). Only members of
that project with the Re-identifier role may do it. Every attempt, refused ones too, leaves one
entry in the audit log (``accounts.AuditEntry``): REIDENTIFY for re-identification to a folder,
SERIES_DOWNLOAD for a re-identified series downloaded as a ZIP.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from dicomflow.accounts import audit
from dicomflow.accounts.models import AuditAction
from dicomflow.catalog.models import Series
from dicomflow.core.deid import ReidentificationError, ReverseMap, reidentify_dataset
from dicomflow.core.deid.job import iter_files
from dicomflow.errors import InputError, NotFoundError, PermissionDeniedError
from dicomflow.projects.models import Capability, Project
from dicomflow.projects.selectors import require

DEFER_SIZE = 64 * 1024  # large values (Pixel Data) stay on disk and are copied when written


@dataclass
class ReidentifyReport:
    files_in: int = 0
    files_out: int = 0
    values_restored: int = 0
    failed: list[dict] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    audit_id: int | None = None

    def as_dict(self) -> dict:
        return {"files_in": self.files_in, "files_out": self.files_out, "failed": self.failed,
                "audit": self.audit_id}


def _check(user, project: Project, action: AuditAction, obj: str) -> None:
    """The Re-identifier role in this very project, or one DENIED audit entry and the refusal."""
    try:
        require(user, project, Capability.REIDENTIFY)
    except (NotFoundError, PermissionDeniedError):
        audit.denied(user, action, project=project, obj=obj, detail="needs the Re-identifier role in the project")
        raise PermissionDeniedError(
            f"re-identification in project '{project.key}' needs the Re-identifier role in that project"
        ) from None


def reverse_map(project: Project) -> ReverseMap:
    from dicomflow.projects.services import key_store

    store = key_store()
    store.project_key(project.key, create=False)  # a project without a key has nothing to map back
    return ReverseMap.from_records(store.load_reverse_records(project.key))


def reidentify_paths(user, project: Project, paths: list[Path | str], dst: Path | str,
                     purpose: str = "", what: str = "") -> ReidentifyReport:
    """Re-identify the DICOM files below ``paths`` into ``dst/<study>/<series>/<sop>.dcm``; one REIDENTIFY
    audit entry (``report.audit_id``).

    Raises ``PermissionDeniedError`` (after auditing the refusal) unless ``user`` is a
    Re-identifier of ``project``. ``what`` names the input without identities (default: a count).
    """
    files = [f for p in paths for f in iter_files(Path(p))]
    what = what or f"{len(files)} file(s)"
    _check(user, project, AuditAction.REIDENTIFY, what)
    report = _reidentify_files(project, files, Path(dst))
    entry = audit.record(user, AuditAction.REIDENTIFY, project=project, obj=what[:200],
                         detail=_counts(report) + (f"; purpose: {purpose}" if purpose else ""))
    report.audit_id = entry.pk
    return report


def _counts(report: ReidentifyReport) -> str:
    return (f"{report.files_out} of {report.files_in} file(s) re-identified, {report.values_restored} value(s) "
            f"restored, {len(report.failed)} failed")


def _reidentify_files(project: Project, files: list[Path], dst: Path) -> ReidentifyReport:
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    rmap = reverse_map(project)
    report = ReidentifyReport(files_in=len(files))
    for path in files:
        try:
            ds = dcmread(path, defer_size=DEFER_SIZE)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            report.failed.append({"path": str(path), "reason": "not a readable DICOM file"})
            continue
        try:
            report.values_restored += reidentify_dataset(ds, rmap)
        except ReidentificationError as exc:  # wrong project, ambiguous map: this file only
            report.failed.append({"path": str(path), "reason": str(exc)})
            continue
        parts = [str(ds.get(k, "") or "") for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
        if not all(parts):
            report.failed.append({"path": str(path), "reason": "Study, Series or SOP Instance UID missing"})
            continue
        target = dst.joinpath(*parts[:2], parts[2] + ".dcm")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, target)
        report.outputs.append(target)
        report.files_out += 1
    return report


def _series_files(project: Project, series: Series) -> list[Path]:
    if series.project_id != project.pk:
        raise InputError("this series is not part of the project's de-identified copy")
    return [Path(settings.STORE_DIR) / p for p in series.instances.values_list("stored_path", flat=True)]


def reidentify_series(user, project: Project, series: Series, dst: Path | str, purpose: str = "") -> ReidentifyReport:
    """Re-identify one catalogued series of the project's de-identified copy (its stored files)."""
    paths = _series_files(project, series)
    return reidentify_paths(user, project, paths, dst, purpose,
                            what=f"series #{series.pk} ({len(paths)} instance(s))")


def download_identified_series(user, project: Project, series: Series) -> Path:
    """Download identifying data: the project copy's series re-identified, as a ZIP file (members
    ``<SOP Instance UID>.dcm``). REIDENTIFY capability; one SERIES_DOWNLOAD audit entry (refusals too).

    The caller sends the file and deletes it (it lies in a private temporary folder under WORK_DIR).
    """
    obj = f"series #{series.pk}"
    _check(user, project, AuditAction.SERIES_DOWNLOAD, obj)
    paths = _series_files(project, series)
    Path(settings.WORK_DIR).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="identified-", dir=settings.WORK_DIR))
    try:
        report = _reidentify_files(project, paths, work / "files")
        archive = work / "series.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
            for path in report.outputs:
                zf.write(path, path.name)
        shutil.rmtree(work / "files", ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    audit.record(user, AuditAction.SERIES_DOWNLOAD, project=project, obj=obj,
                 detail="re-identified series as ZIP: " + _counts(report))
    return archive
