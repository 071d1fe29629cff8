"""Per-instance reference records: the only input the RT graph needs.

An :class:`InstanceRef` holds what one DICOM instance says about itself (series, modality, frame of
reference, approval) and what it points at (series, images, structure sets, plans, frames of
reference). It is built from a header-only pydicom Dataset (:func:`instance_from_dataset`) or, by
the catalog, from its rows — so the graph code never needs files or a database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Iterable


class RefKind(StrEnum):
    """What a reference points at; decides how it is resolved to a series."""

    SERIES = "series"  # a Series Instance UID
    IMAGE = "image"  # an image SOP Instance UID (series known or not)
    STRUCTURE_SET = "structure_set"  # an RTSTRUCT SOP Instance UID
    PLAN = "plan"  # an RTPLAN SOP Instance UID
    INSTANCE = "instance"  # any other referenced SOP Instance UID
    FRAME_OF_REFERENCE = "frame_of_reference"  # a Frame of Reference UID


class ApprovalStatus(StrEnum):
    """Values of Approval Status (300E,0002), ordered from least to most trusted."""

    REJECTED = "REJECTED"
    UNAPPROVED = "UNAPPROVED"
    APPROVED = "APPROVED"


APPROVAL_RANK = {ApprovalStatus.REJECTED: 0, ApprovalStatus.UNAPPROVED: 1, ApprovalStatus.APPROVED: 2}

#: Modalities of objects that are not image volumes living in a frame of reference as slices.
NON_VOLUME_MODALITIES = frozenset(
    {"RTSTRUCT", "RTPLAN", "RTDOSE", "RTIMAGE", "RTRECORD", "RTTREAT", "REG", "SR", "KO", "PR", "SEG", "DOC", "PLAN"}
)


@dataclass(frozen=True)
class Reference:
    """One outgoing reference. ``series_uid`` is set for an image whose series the referrer names."""

    kind: RefKind
    uid: str
    series_uid: str | None = None


@dataclass(frozen=True)
class InstanceRef:
    """What the RT graph needs from one instance (from a header or from a catalog row)."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    modality: str
    frame_of_reference_uid: str | None = None
    references: tuple[Reference, ...] = ()
    approval_status: ApprovalStatus | None = None
    # Review date/time/reviewer are kept apart from the status: the caller decides who sees them.
    review_date: str | None = None
    review_time: str | None = None
    reviewer_name: str | None = None
    path: str | None = field(default=None, compare=False)

    def refs(self, kind: RefKind) -> list[Reference]:
        return [r for r in self.references if r.kind == kind]

    def to_dict(self) -> dict:
        """A JSON-ready form (e.g. for a catalog column); :meth:`from_dict` reverses it."""
        return {
            "sop_instance_uid": self.sop_instance_uid,
            "sop_class_uid": self.sop_class_uid,
            "series_instance_uid": self.series_instance_uid,
            "study_instance_uid": self.study_instance_uid,
            "modality": self.modality,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "references": [[r.kind.value, r.uid, r.series_uid] for r in self.references],
            "approval_status": self.approval_status.value if self.approval_status else None,
            "review_date": self.review_date,
            "review_time": self.review_time,
            "reviewer_name": self.reviewer_name,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "InstanceRef":
        values = dict(data)
        values["references"] = tuple(Reference(RefKind(k), u, s) for k, u, s in values.get("references", ()))
        status = values.get("approval_status")
        values["approval_status"] = ApprovalStatus(status) if status else None
        return cls(**values)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _seq(ds: Any, keyword: str) -> list:
    value = getattr(ds, keyword, None) if ds is not None else None
    return list(value) if value else []


class _Refs:
    """Collects references, de-duplicated by (kind, uid); a known series wins over none."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[RefKind, str], Reference] = {}

    def add(self, kind: RefKind, uid: Any, series_uid: Any = None) -> None:
        uid, series_uid = _text(uid), _text(series_uid)
        if not uid:
            return
        key = (kind, uid)
        old = self._by_key.get(key)
        if old is None or (old.series_uid is None and series_uid):
            self._by_key[key] = Reference(kind, uid, series_uid)

    def add_images(self, items: Iterable, series_uid: Any = None) -> None:
        for item in items:
            self.add(RefKind.IMAGE, getattr(item, "ReferencedSOPInstanceUID", None), series_uid)

    def as_tuple(self) -> tuple[Reference, ...]:
        return tuple(sorted(self._by_key.values(), key=lambda r: (r.kind.value, r.uid)))


def _structure_set_refs(ds: Any, refs: _Refs) -> None:
    for for_item in _seq(ds, "ReferencedFrameOfReferenceSequence"):
        refs.add(RefKind.FRAME_OF_REFERENCE, getattr(for_item, "FrameOfReferenceUID", None))
        for study in _seq(for_item, "RTReferencedStudySequence"):
            for series in _seq(study, "RTReferencedSeriesSequence"):
                series_uid = getattr(series, "SeriesInstanceUID", None)
                refs.add(RefKind.SERIES, series_uid)
                refs.add_images(_seq(series, "ContourImageSequence"), series_uid)
    for roi in _seq(ds, "StructureSetROISequence"):
        refs.add(RefKind.FRAME_OF_REFERENCE, getattr(roi, "ReferencedFrameOfReferenceUID", None))
    for roi_contour in _seq(ds, "ROIContourSequence"):
        for contour in _seq(roi_contour, "ContourSequence"):
            refs.add_images(_seq(contour, "ContourImageSequence"))


def _registration_refs(ds: Any, refs: _Refs) -> None:
    """Spatial (RegistrationSequence) and deformable (DeformableRegistrationSequence) registrations."""
    for item in _seq(ds, "RegistrationSequence"):
        refs.add(RefKind.FRAME_OF_REFERENCE, getattr(item, "FrameOfReferenceUID", None))
        refs.add_images(_seq(item, "ReferencedImageSequence"))
    for item in _seq(ds, "DeformableRegistrationSequence"):
        refs.add(RefKind.FRAME_OF_REFERENCE, getattr(item, "SourceFrameOfReferenceUID", None))
        refs.add_images(_seq(item, "ReferencedImageSequence"))
    studies = [ds, *_seq(ds, "StudiesContainingOtherReferencedInstancesSequence")]
    for study in studies:
        for series in _seq(study, "ReferencedSeriesSequence"):
            series_uid = getattr(series, "SeriesInstanceUID", None)
            refs.add(RefKind.SERIES, series_uid)
            refs.add_images(_seq(series, "ReferencedInstanceSequence"), series_uid)


def instance_from_dataset(ds: Any, path: str | None = None) -> InstanceRef:
    """Build the reference record of one instance from a (header-only) pydicom Dataset.

    Raises ``MissingAttributeError`` when the instance cannot be placed (no SOP Instance UID or no
    Series Instance UID).
    """
    from dicomflow.errors import MissingAttributeError

    sop_uid = _text(getattr(ds, "SOPInstanceUID", None))
    series_uid = _text(getattr(ds, "SeriesInstanceUID", None))
    if not sop_uid or not series_uid:
        missing = "SOPInstanceUID" if not sop_uid else "SeriesInstanceUID"
        where = f" in {path}" if path else ""
        raise MissingAttributeError(f"{missing} is absent or empty{where}; the instance cannot be placed")
    modality = (_text(getattr(ds, "Modality", None)) or "").upper()
    refs = _Refs()
    if modality == "RTSTRUCT":
        _structure_set_refs(ds, refs)
    for item in _seq(ds, "ReferencedStructureSetSequence"):
        refs.add(RefKind.STRUCTURE_SET, getattr(item, "ReferencedSOPInstanceUID", None))
    for item in _seq(ds, "ReferencedRTPlanSequence"):
        refs.add(RefKind.PLAN, getattr(item, "ReferencedSOPInstanceUID", None))
    if modality == "REG":
        _registration_refs(ds, refs)
    frame_of_reference = _text(getattr(ds, "FrameOfReferenceUID", None))
    if modality in {"RTPLAN", "RTDOSE"} and frame_of_reference:
        # Plans without a structure set and doses without a plan are placed through it.
        refs.add(RefKind.FRAME_OF_REFERENCE, frame_of_reference)
    status = _text(getattr(ds, "ApprovalStatus", None))
    try:
        approval = ApprovalStatus(status.upper()) if status else None
    except ValueError:
        approval = None
    return InstanceRef(
        sop_instance_uid=sop_uid,
        sop_class_uid=_text(getattr(ds, "SOPClassUID", None)) or "",
        series_instance_uid=series_uid,
        study_instance_uid=_text(getattr(ds, "StudyInstanceUID", None)) or "",
        modality=modality,
        frame_of_reference_uid=frame_of_reference,
        references=refs.as_tuple(),
        approval_status=approval,
        review_date=_text(getattr(ds, "ReviewDate", None)),
        review_time=_text(getattr(ds, "ReviewTime", None)),
        reviewer_name=_text(getattr(ds, "ReviewerName", None)),
        path=path,
    )
