"""DICOMweb writes: STOW-RS into the one import service, and the audit of WADO-RS retrieves.

STOW-RS (:func:`store`): the caller's upload right is checked first (the clinical pool's upload
permission at ``/dicomweb/``; UPLOAD in the project at ``/dicomweb/projects/<key>/``). The body is
streamed into one file per part under ``$DICOMFLOW_HOME/work`` (never held in memory whole; the
upload size and file-count limits apply), then imported with
:func:`dicomflow.intake.services.import_paths` like every other source: dedupe, conflicts, ignored
files with their reasons, archive limits, one ImportRun (source ``dicomweb``). A store into a
project then stages the imported studies into the project (its de-identified copy), as an upload
into a project does. The answer is the PS3.18 Store Instances Response: the stored instances in
ReferencedSOPSequence, the refused ones in FailedSOPSequence with a FailureReason and, in
ErrorComment (0000,0902), the import's reason in words.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from dicomflow.accounts import audit
from dicomflow.accounts.models import AuditAction
from dicomflow.catalog.models import Instance, Study
from dicomflow.dicomweb import multipart
from dicomflow.dicomweb.selectors import Target, element
from dicomflow.errors import DicomflowError, InputError, PermissionDeniedError, UnsupportedMediaTypeError
from dicomflow.intake.models import SourceKind
from dicomflow.projects import selectors as visibility
from dicomflow.projects.models import Capability

DICOM = "application/dicom"
# Failure Reason (0008,1197) values (PS3.4 Annex GG / PS3.18 Table 10.5.3-2)
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
CANNOT_UNDERSTAND = 0xC000
DOES_NOT_MATCH = 0xA900
SOP_CLASS_NOT_SUPPORTED = 0x0122


@dataclass
class Failure:
    sop_class_uid: str
    sop_instance_uid: str
    reason: int
    comment: str


@dataclass
class StowResult:
    """What a STOW-RS request stored and refused, and the import behind it."""

    stored: list[tuple[str, str, str]] = field(default_factory=list)  # (class, instance, retrieve URL)
    failed: list[Failure] = field(default_factory=list)
    study_url: str = ""
    import_run_id: int | None = None
    project_studies: list[str] = field(default_factory=list)

    @property
    def status(self) -> int:
        """200 all stored, 202 some refused, 409 none stored (PS3.18 §10.5.3)."""
        if not self.failed:
            return 200
        return 202 if self.stored else 409

    def document(self) -> dict:
        doc: dict = {}
        if self.study_url:
            doc.update([element("RetrieveURL", self.study_url)])
        if self.stored:
            doc.update([element("ReferencedSOPSequence", *[
                dict([element("ReferencedSOPClassUID", c), element("ReferencedSOPInstanceUID", i)]
                     + ([element("RetrieveURL", url)] if url else []))
                for c, i, url in self.stored])])
        if self.failed:
            doc.update([element("FailedSOPSequence", *[
                dict([element("ReferencedSOPClassUID", f.sop_class_uid),
                      element("ReferencedSOPInstanceUID", f.sop_instance_uid),
                      element("FailureReason", f.reason),
                      ("00000902", {"vr": "LO", "Value": [f.comment[:64]]})])
                for f in self.failed])])
        return doc


def check_store_allowed(actor, project_key: str | None):
    """The project (per-project root) or None (the clinical pool), once the actor's right is checked."""
    if project_key is not None:
        return visibility.project_for(actor, project_key, Capability.UPLOAD)
    if not visibility.can_upload(actor):
        raise PermissionDeniedError("you may not store instances (ask for the 'add upload session' permission)")
    return None


def _uids(path: Path) -> tuple[str, str, str]:
    """(SOP Class UID, SOP Instance UID, Study Instance UID) of a part, '' where unreadable."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                             specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"])
        return (str(ds.get("SOPClassUID", "") or ""), str(ds.get("SOPInstanceUID", "") or ""),
                str(ds.get("StudyInstanceUID", "") or ""))
    except Exception:  # noqa: BLE001  not DICOM: the import says why
        return "", "", ""


def store(actor, stream, content_type: str, *, project=None, study_uid: str | None = None,
          base_url: str = "", content_length: int | None = None) -> StowResult:
    """Receive a STOW-RS body (``stream``) and import its instances; see the module docstring.

    ``project``: the checked project (per-project root) or None; ``study_uid``: the study named in
    the URL (instances of another study are refused); ``base_url``: the root for RetrieveURLs.
    """
    from dicomflow.intake.services import import_paths

    media_type, params = multipart.parse_media_type(content_type)
    if media_type != "multipart/related":
        raise UnsupportedMediaTypeError("send STOW-RS bodies as multipart/related; type=\"application/dicom\"")
    part_type = multipart.parse_media_type(params.get("type", ""))[0]
    if part_type and part_type != DICOM:
        raise UnsupportedMediaTypeError(f"only type=\"{DICOM}\" parts are accepted (no DICOM JSON/XML with bulk data)")
    max_bytes = settings.DICOMFLOW_UPLOAD_MAX_BYTES
    if content_length is not None and content_length > max_bytes:
        raise multipart.BodyTooLargeError(f"the request body of {content_length} bytes exceeds {max_bytes} bytes, "
                                          "the most this server accepts in one request")
    work = Path(settings.WORK_DIR) / f"stow-{uuid.uuid4().hex}"
    result = StowResult()
    try:
        parts = multipart.read_parts(stream, params.get("boundary", ""), work, max_bytes=max_bytes,
                                     max_parts=settings.DICOMFLOW_UPLOAD_MAX_FILES, default_type=params.get("type", DICOM))
        to_import: dict[str, tuple[str, str]] = {}
        for part in parts:
            sop_class, sop_uid, part_study = _uids(part.path)
            if multipart.parse_media_type(part.content_type)[0] != DICOM:
                result.failed.append(Failure(sop_class, sop_uid, SOP_CLASS_NOT_SUPPORTED,
                                             f"part {part.index}: media type is not {DICOM}"))
            elif study_uid is not None and part_study and part_study != study_uid:
                result.failed.append(Failure(sop_class, sop_uid, DOES_NOT_MATCH,
                                             f"part {part.index}: not of the study named in the URL"))
            else:
                to_import[str(part.path)] = (sop_class, sop_uid)
        if not to_import:
            return result
        source = "STOW-RS" + (f" into project {project.key}" if project is not None else "")
        report = import_paths(list(to_import), source_kind=SourceKind.DICOMWEB, received_from=source, workers=1)
        result.import_run_id = report.import_run_id
        refused: dict[str, tuple[int, str]] = {}
        for entry in report.conflicts:
            refused.setdefault(entry["path"].partition("!")[0], (DUPLICATE_SOP_INSTANCE, entry["reason"]))
        for entry in report.ignored:
            refused.setdefault(entry["path"].partition("!")[0], (CANNOT_UNDERSTAND, entry["reason"]))
        names = {str(p.path): p.index for p in parts}
        stored_uids = []
        for path, (sop_class, sop_uid) in to_import.items():
            if path in refused:
                reason, why = refused[path]
                result.failed.append(Failure(sop_class, sop_uid, reason, f"part {names[path]}: {why}"))
            else:
                stored_uids.append((sop_class, sop_uid))
        catalogued = _where(sorted({u for _, u in stored_uids if u}))
        studies = set()
        for sop_class, sop_uid in stored_uids:
            where = catalogued.get(sop_uid)
            if where is None:  # a ZIP part: its members are catalogued under their own UIDs
                continue
            studies.add(where[0])
            url = "" if project is not None else f"{base_url}studies/{where[0]}/series/{where[1]}/instances/{sop_uid}"
            result.stored.append((sop_class, sop_uid, url))
        if project is not None:
            result.project_studies = _stage(actor, project, report.study_ids)
            if len(result.project_studies) == 1:
                result.study_url = f"{base_url}studies/{result.project_studies[0]}"
        elif len(studies) == 1:
            result.study_url = f"{base_url}studies/{studies.pop()}"
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _where(sop_uids: list[str], batch: int = 500) -> dict[str, tuple[str, str]]:
    """SOP Instance UID → (Study, Series Instance UID) of catalogued instances, in bounded queries."""
    found: dict[str, tuple[str, str]] = {}
    for start in range(0, len(sop_uids), batch):
        rows = Instance.objects.filter(sop_instance_uid__in=sop_uids[start:start + batch]).values_list(
            "sop_instance_uid", "series__study__study_instance_uid", "series__series_instance_uid")
        found.update((sop, (study, series)) for sop, study, series in rows)
    return found


def _stage(actor, project, study_ids) -> list[str]:
    """Stage the stored studies into ``project`` (its de-identified copy); the copies' UIDs."""
    from dicomflow.projects import services as project_services
    from dicomflow.projects.models import StagingStatus

    copies: set[str] = set()
    for study in Study.objects.filter(pk__in=study_ids, project__isnull=True).order_by("pk"):
        job = project_services.stage_upload(actor, project, study)
        if job.status != StagingStatus.FINISHED:
            raise InputError(f"the instances were stored, but staging them into project '{project.key}' failed "
                             f"(staging job #{job.pk}): {job.error}")
        copies |= set(visibility.copies_of(study, project).values_list("study__study_instance_uid", flat=True))
    return sorted(copies)


def audit_retrieve(actor, target: Target, what: str) -> None:
    """One audit entry per WADO-RS retrieve: clinical data are identifying, copies are pseudonymized."""
    kind = "clinical data (identifying)" if target.clinical else "pseudonymized copy"
    project = next(iter(target.projects)) if len(target.projects) == 1 and not target.clinical else ""
    audit.record(actor, AuditAction.WADO_RETRIEVE, project=project, obj=target.obj,
                 detail=f"DICOMweb {what} of {len(target.files)} instance(s), {kind}")


__all__ = ["DicomflowError", "StowResult", "audit_retrieve", "check_store_allowed", "store"]
