"""Results: verify what came back, re-identify it, export it, zip it for download.

Verification is on the de-identified result, against what was sent (``job.state``): it must
reference the one de-identified series sent — its instances, its study and its frame of reference —
and nothing else. Re-identification uses the project's reverse map (original patient and UIDs),
then restyles ROIs per the template. Messages name counts and file names, never UIDs or identities.
"""

from __future__ import annotations

import os
import secrets
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from dicomflow.core.deid import ReverseMap, references_of, reidentify_dataset
from dicomflow.core.rules import RoiStyle
from dicomflow.errors import DicomflowError, InputError, ProcessingError

RT_STRUCTURE_SET = "1.2.840.10008.5.1.4.1.1.481.3"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"


def kind_of(path: Path) -> str:
    from dicomflow.processing.models import ResultKind

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except (InvalidDicomError, OSError, EOFError, ValueError):
        return ResultKind.DICOM
    sop_class = str(ds.get("SOPClassUID", ""))
    return {RT_STRUCTURE_SET: ResultKind.RTSTRUCT, SEGMENTATION: ResultKind.SEG}.get(sop_class, ResultKind.DICOM)


def _refs(ds, kind: str) -> set[str]:
    return {uid for k, uid in references_of(ds)["references"] if k == kind}


def verify(path: Path, sent: dict) -> str:
    """Why the result at ``path`` does not belong to the series sent ('' when it does)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError):
        return "not a readable DICOM file"
    series_uid, study_uid = sent["deid_series_uid"], sent["deid_study_uid"]
    instances = set(sent["deid_instances"])
    series = _refs(ds, "series")
    referenced = _refs(ds, "instance") - {study_uid}  # RT Referenced Study items name the study as an "instance"
    problems = []
    if series != {series_uid}:
        other = len(series - {series_uid})
        problems.append(f"references {other} other series" if other else "references no series")
    if not referenced & instances:
        problems.append("references none of the instances sent")
    unknown = referenced - instances
    if unknown:
        problems.append(f"references {len(unknown)} instance(s) that were not sent")
    if str(ds.get("StudyInstanceUID", study_uid)) != study_uid:
        problems.append("belongs to another study")
    frames = _refs(ds, "frame_of_reference") | ({str(ds.FrameOfReferenceUID)} if ds.get("FrameOfReferenceUID") else set())
    expected_for = sent.get("deid_frame_of_reference_uid")
    if expected_for and frames - {expected_for}:
        problems.append("uses another frame of reference")
    return "; ".join(problems)


def _write_atomic(ds, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, target)
    return target


# Patient and General Study attributes a result shares with the study it belongs to.
SHARED_WITH_STUDY = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "StudyDescription", "ReferringPhysicianName", "AccessionNumber", "StudyID",
)


def reidentify(path: Path, out_dir: Path, rmap: ReverseMap, rois: Sequence[RoiStyle],
               original_series_uid: str | None, original_header=None) -> tuple[Path, list[tuple[str, str]]]:
    """Re-identify one verified result into ``out_dir``; returns its path and the ROI renames.

    After the reverse map, the Patient and Study attributes are taken from ``original_header`` (a
    header of the series sent) when given: a processor copies the de-identified, date-shifted
    study attributes but writes its own creation dates unshifted, so shifting the whole object back
    would be wrong — the study's own values are right.
    """
    from dicomflow.core.segmentation import apply_roi_styles

    ds = pydicom.dcmread(path)
    reidentify_dataset(ds, rmap)
    if original_header is not None and str(ds.get("StudyInstanceUID", "")) == str(original_header.StudyInstanceUID):
        for keyword in SHARED_WITH_STUDY:
            if keyword in original_header:
                ds[keyword] = original_header[keyword]
            elif keyword in ds and keyword not in ("StudyInstanceUID",):
                del ds[keyword]
    renamed = apply_roi_styles(ds, list(rois)) if str(ds.get("SOPClassUID", "")) == RT_STRUCTURE_SET and rois else []
    if original_series_uid and original_series_uid not in _refs(ds, "series"):
        raise ProcessingError(f"{path.name}: after re-identification the result does not reference the original "
                              "series (the project's reverse map lacks it)")
    prefix = {RT_STRUCTURE_SET: "RS", SEGMENTATION: "SEG"}.get(str(ds.get("SOPClassUID", "")), "DCM")
    return _write_atomic(ds, out_dir / f"{prefix}.{ds.SOPInstanceUID}.dcm"), renamed


# --- export ------------------------------------------------------------------------------------------------
def describe(destination: dict) -> str:
    kind = destination.get("type", "folder")
    if kind == "folder":
        return f"folder {destination.get('path', '?')}"
    if kind == "dicom":
        if destination.get("node"):
            return f"DICOM node '{destination['node']}'"
        return f"DICOM node {destination.get('ae_title', '?')}@{destination.get('host', '?')}:{destination.get('port', '?')}"
    return f"destination of type '{kind}'"


def export_folder(files: Sequence[Path], folder: str | Path) -> dict[str, str]:
    target = Path(folder)
    try:
        target.mkdir(parents=True, exist_ok=True)
        copied = {}
        for f in files:
            tmp = target / f".{f.name}.{secrets.token_hex(4)}.tmp"
            shutil.copyfile(f, tmp)
            os.replace(tmp, target / f.name)
            copied[str(f)] = str(target / f.name)
        return copied
    except OSError as exc:
        raise ProcessingError(f"cannot write into {target} ({exc.strerror or exc.__class__.__name__})") from None


def export_node(files: Sequence[Path], destination: dict) -> dict[str, str]:
    from dicomflow.export.scu import send_instances
    from dicomflow.export.selectors import destination_node

    report = send_instances(destination_node(destination), files, timeout=float(destination.get("timeout", 30)))
    failed = [f for f in report.files if not f.ok]
    if failed:
        raise ProcessingError(f"{len(failed)} of {len(report.files)} file(s) not stored: {failed[0].reason}")
    return {str(f): describe(destination) for f in files}


def export_to(files: Sequence[Path], destination: dict, *, any_folder: bool = False) -> dict[str, str]:
    """Export ``files`` to one destination. A folder must lie inside an export root of the operator's
    registry unless ``any_folder`` (the folder the command-line operator gave: ``process --out``)."""
    from dicomflow.processing.registry import require_export_folder

    kind = destination.get("type", "folder")
    if kind == "folder":
        if not destination.get("path"):
            raise InputError("a folder destination needs a 'path'")
        folder = destination["path"] if any_folder else require_export_folder(destination["path"])
        return export_folder(files, folder)
    if kind == "dicom":
        return export_node(files, destination)
    raise InputError(f"unknown destination type '{kind}' (use 'folder' or 'dicom')")


def export_with_fallback(files: Sequence[Path], destination: dict, *, any_folder: bool = False) -> dict:
    """Export to a destination; on failure to its ``fallback`` destination when it has one."""
    outcome = {"destination": describe(destination), "ok": False, "reason": "", "paths": {}}
    try:
        outcome["paths"] = export_to(files, destination, any_folder=any_folder)
        outcome["ok"] = True
        return outcome
    except DicomflowError as exc:
        outcome["reason"] = str(exc)
    fallback = destination.get("fallback")
    if fallback:
        outcome |= {"fallback_used": True, "primary_reason": outcome["reason"],
                    "destination": f"{describe(fallback)} (fallback for {describe(destination)})"}
        try:
            outcome["paths"] = export_to(files, fallback)
            outcome["ok"], outcome["reason"] = True, ""
        except DicomflowError as exc:
            outcome["reason"] = f"{outcome['primary_reason']}; fallback: {exc}"
    return outcome


def results_zip(files: Sequence[Path], zip_path: Path) -> Path:
    """A ZIP of result files (names made of UIDs only) for download."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_name(f".{zip_path.name}.{secrets.token_hex(4)}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, arcname=Path(f).name)
    os.replace(tmp, zip_path)
    return zip_path
