"""Re-identification for authorised users, with an audit row for every attempt.

A file produced from a project's de-identified data (the copy itself, or a result such as an
RTSTRUCT that references the de-identified CT) is mapped back to the clinical identity and the
original UIDs with the project's reverse map, kept in the file key store next to the project's
key (``dicomflow.core.deid.KeyStore``; the same map ``dicomflow reidentify`` uses). Only members of
that project with the Re-identifier role may do it; refusals are audited too.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from dicomflow.catalog.models import Series
from dicomflow.core.deid import ReidentificationError, ReverseMap, reidentify_dataset
from dicomflow.core.deid.job import iter_files
from dicomflow.deid.models import ReidentificationAudit
from dicomflow.errors import InputError, PermissionDeniedError
from dicomflow.projects.models import Project
from dicomflow.projects.selectors import can_reidentify

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


def _audit(user, project: Project, what: str, purpose: str, allowed: bool, **counts) -> ReidentificationAudit:
    return ReidentificationAudit.objects.create(
        user=user if getattr(user, "is_authenticated", False) else None,
        username=getattr(user, "get_username", lambda: "")() if user is not None else "",
        project=project, what=what[:512], purpose=purpose[:512], allowed=allowed, **counts,
    )


def reverse_map(project: Project) -> ReverseMap:
    from dicomflow.projects.services import key_store

    store = key_store()
    store.project_key(project.key, create=False)  # a project without a key has nothing to map back
    return ReverseMap.from_records(store.load_reverse_records(project.key))


def reidentify_paths(project: Project, user, paths: list[Path | str], dst: Path | str,
                     purpose: str = "", what: str = "") -> ReidentifyReport:
    """Re-identify the DICOM files below ``paths`` into ``dst/<study>/<series>/<sop>.dcm``.

    Raises ``PermissionDeniedError`` (after auditing the refusal) unless ``user`` is a
    Re-identifier of ``project``.
    """
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    files = [f for p in paths for f in iter_files(Path(p))]
    what = what or f"{len(files)} file(s) from {', '.join(str(p) for p in paths)}"
    if not can_reidentify(user, project):
        _audit(user, project, what, purpose, allowed=False, files_in=len(files))
        raise PermissionDeniedError(
            f"re-identification in project '{project.key}' needs the Re-identifier role in that project"
        )
    rmap = reverse_map(project)
    report = ReidentifyReport(files_in=len(files))
    given_uids = []
    dst = Path(dst)
    for path in files:
        try:
            ds = dcmread(path, defer_size=DEFER_SIZE)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            report.failed.append({"path": str(path), "reason": "not a readable DICOM file"})
            continue
        given_uids.append(str(ds.get("SOPInstanceUID", "") or ""))
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
    audit = _audit(user, project, what, purpose, allowed=True, files_in=report.files_in,
                   files_out=report.files_out, values_restored=report.values_restored,
                   sop_instance_uids=given_uids)
    report.audit_id = audit.pk
    return report


def reidentify_series(project: Project, user, series: Series, dst: Path | str, purpose: str = "") -> ReidentifyReport:
    """Re-identify one catalogued series of the project's de-identified copy (its stored files)."""
    if series.project_id != project.pk:
        raise InputError("this series is not part of the project's de-identified copy")
    paths = [Path(settings.STORE_DIR) / p for p in series.instances.values_list("stored_path", flat=True)]
    return reidentify_paths(project, user, paths, dst, purpose,
                            what=f"catalog series #{series.pk} ({len(paths)} instance(s))")
