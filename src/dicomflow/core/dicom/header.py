"""Read what the catalog needs from a DICOM file, stopping before the pixel data.

``read_header`` returns an :class:`InstanceHeader`: plain data (picklable, no pydicom objects),
so worker processes can hand it to the process that writes the catalog. Pixel data is never
read: its declared length is compared with the file size instead, which is how truncated files
are recognised without decoding them.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:  # pydicom is imported where it is used: plain images never need it (fastheader)
    from pydicom.dataset import Dataset

from dicomflow.core.dicom import sop
from dicomflow.errors import DicomReadError, MissingAttributeError, NotDicomError

PIXEL_DATA_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


class DicomdirError(NotDicomError):
    """The file is a DICOMDIR (a media index), not an instance to catalogue."""


@dataclass
class InstanceHeader:
    """Catalog fields of one instance. Strings are '' when absent; numbers None."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str = ""
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_date: str = ""
    study_time: str = ""
    study_id: str = ""
    accession_number: str = ""
    study_description: str = ""
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""
    series_date: str = ""
    body_part_examined: str = ""
    frame_of_reference_uid: str = ""
    instance_number: int | None = None
    image: dict[str, Any] | None = None
    structure_set: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    dose: dict[str, Any] | None = None
    rt_image: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _str(ds: Dataset, keyword: str) -> str:
    from pydicom.multival import MultiValue  # loaded already: a Dataset exists

    value = ds.get(keyword)
    if value is None or value == "":
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _float(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _floats(ds: Dataset, keyword: str) -> list[float] | None:
    from pydicom.multival import MultiValue

    value = ds.get(keyword)
    if value in (None, ""):
        return None
    try:
        return [float(v) for v in (value if isinstance(value, (list, MultiValue)) else [value])]
    except (TypeError, ValueError):
        return None


def _first(ds: Dataset, keyword: str) -> Dataset | None:
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _image_info(ds: Dataset) -> dict[str, Any] | None:
    if "Rows" not in ds:
        return None
    position = _floats(ds, "ImagePositionPatient")
    orientation = _floats(ds, "ImageOrientationPatient")
    spacing = _floats(ds, "PixelSpacing")
    thickness = _float(ds, "SliceThickness")
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    if shared is not None:  # enhanced multi-frame: geometry lives in the functional groups
        measures = _first(shared, "PixelMeasuresSequence")
        if measures is not None:
            spacing = spacing or _floats(measures, "PixelSpacing")
            thickness = thickness if thickness is not None else _float(measures, "SliceThickness")
        plane = _first(shared, "PlaneOrientationSequence")
        if plane is not None:
            orientation = orientation or _floats(plane, "ImageOrientationPatient")
    per_frame = _first(ds, "PerFrameFunctionalGroupsSequence")
    if per_frame is not None and position is None:
        plane_position = _first(per_frame, "PlanePositionSequence")
        if plane_position is not None:
            position = _floats(plane_position, "ImagePositionPatient")
    return {
        "rows": _int(ds, "Rows"),
        "columns": _int(ds, "Columns"),
        "number_of_frames": _int(ds, "NumberOfFrames") or 1,
        "bits_allocated": _int(ds, "BitsAllocated"),
        "photometric_interpretation": _str(ds, "PhotometricInterpretation"),
        "pixel_spacing": spacing,
        "slice_thickness": thickness,
        "image_position_patient": position,
        "image_orientation_patient": orientation,
        "slice_location": _float(ds, "SliceLocation"),
    }


def _color(value: Any) -> str:
    try:
        r, g, b = (max(0, min(255, int(v))) for v in value)
    except (TypeError, ValueError):
        return ""
    return f"#{r:02x}{g:02x}{b:02x}"


def _structure_set_info(ds: Dataset) -> dict[str, Any]:
    ref_for = ""
    ref_series = ""
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        ref_for = ref_for or _str(frame, "FrameOfReferenceUID")
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                ref_series = ref_series or _str(series, "SeriesInstanceUID")
    contours = {int(c.get("ReferencedROINumber", -1)): c for c in ds.get("ROIContourSequence", [])}
    observations = {int(o.get("ReferencedROINumber", -1)): o for o in ds.get("RTROIObservationsSequence", [])}
    rois = []
    for roi in ds.get("StructureSetROISequence", []):
        number = _int(roi, "ROINumber")
        contour = contours.get(number)
        obs = observations.get(number)
        rois.append(
            {
                "number": number if number is not None else 0,
                "name": _str(roi, "ROIName"),
                "interpreted_type": _str(obs, "RTROIInterpretedType") if obs is not None else "",
                "color": _color(contour.get("ROIDisplayColor")) if contour is not None else "",
                "contour_count": len(contour.get("ContourSequence", [])) if contour is not None else 0,
                "referenced_frame_of_reference_uid": _str(roi, "ReferencedFrameOfReferenceUID"),
            }
        )
    return {
        "label": _str(ds, "StructureSetLabel"),
        "name": _str(ds, "StructureSetName"),
        "structure_set_date": _str(ds, "StructureSetDate"),
        "approval_status": _str(ds, "ApprovalStatus"),
        "referenced_frame_of_reference_uid": ref_for,
        "referenced_series_uid": ref_series,
        "rois": rois,
    }


def _plan_info(ds: Dataset) -> dict[str, Any]:
    ref_ss = _first(ds, "ReferencedStructureSetSequence")
    fraction_group = _first(ds, "FractionGroupSequence")
    beams = ds.get("BeamSequence") or ds.get("IonBeamSequence") or []
    return {
        "label": _str(ds, "RTPlanLabel"),
        "name": _str(ds, "RTPlanName"),
        "approval_status": _str(ds, "ApprovalStatus"),
        "review_date": _str(ds, "ReviewDate"),
        "reviewer_name": _str(ds, "ReviewerName"),
        "referenced_structure_set_uid": _str(ref_ss, "ReferencedSOPInstanceUID") if ref_ss is not None else "",
        "fractions_planned": _int(fraction_group, "NumberOfFractionsPlanned") if fraction_group is not None else None,
        "beam_count": len(beams),
    }


def _referenced_plan_uid(ds: Dataset) -> str:
    ref = _first(ds, "ReferencedRTPlanSequence")
    return _str(ref, "ReferencedSOPInstanceUID") if ref is not None else ""


def check_pixel_data_complete(fp: BinaryIO, ds: Dataset, file_size: int) -> None:
    """Raise DicomReadError if the pixel data element claims more bytes than the file holds.

    ``fp`` is positioned where ``dcmread(stop_before_pixels=True)`` stopped: at the pixel data tag,
    or at the end of the file when there is none.
    """
    start = fp.tell()
    if start >= file_size:
        return
    head = fp.read(12)
    if len(head) < 8:
        raise DicomReadError("file is truncated (pixel data element header cut off)")
    little = ds.is_little_endian if ds.is_little_endian is not None else True
    implicit = ds.is_implicit_VR if ds.is_implicit_VR is not None else False
    order = "<" if little else ">"
    group, elem = struct.unpack(order + "HH", head[:4])
    if (group << 16 | elem) not in PIXEL_DATA_TAGS:
        return  # stopped on something else (e.g. trailing padding); nothing to verify
    if implicit:
        (length,) = struct.unpack(order + "L", head[4:8])
        value_start = start + 8
    else:
        if len(head) < 12:
            raise DicomReadError("file is truncated (pixel data element header cut off)")
        (length,) = struct.unpack(order + "L", head[8:12])
        value_start = start + 12
    if length == 0xFFFFFFFF:  # encapsulated: must end with a sequence delimiter
        fp.seek(max(file_size - 4096, value_start))
        tail = fp.read()
        if _SEQ_DELIMITER not in tail:
            raise DicomReadError("file is truncated (encapsulated pixel data has no end delimiter)")
        return
    if value_start + length > file_size:
        raise DicomReadError(
            f"file is truncated (pixel data declares {length} bytes, {file_size - value_start} present)"
        )


def _check_elements_complete(ds: Dataset, file_size: int) -> None:
    """pydicom accepts a short read of an element's value silently; we do not."""
    meta = getattr(ds, "file_meta", None)
    group_length = meta.get("FileMetaInformationGroupLength") if meta is not None else None
    if group_length is not None and getattr(ds, "preamble", None) is not None:
        if 128 + 4 + 12 + int(group_length) > file_size:
            raise DicomReadError("file is truncated (inside the file meta information)")
    for elem in ds._dict.values():
        tell = getattr(elem, "value_tell", None)
        length = getattr(elem, "length", None)
        if tell is None or length in (None, 0xFFFFFFFF):
            continue
        if tell + length > file_size:
            raise DicomReadError(f"file is truncated (element {elem.tag} is cut off)")


def read_header(path: str | os.PathLike) -> InstanceHeader:
    """Read one file's header. Raises NotDicomError, DicomdirError, DicomReadError, MissingAttributeError.

    Plain image files take a byte-level fast path (``fastheader``); everything else, and every
    error case, is read by pydicom.
    """
    from dicomflow.core.dicom.fastheader import read_plain_image_header

    fast = read_plain_image_header(path)
    if fast is not None:
        return fast
    return read_header_pydicom(path)


def read_header_bytes(data: bytes) -> InstanceHeader:
    """``read_header`` for a file already in memory (the import reads small files once)."""
    from dicomflow.core.dicom.fastheader import parse_plain_image_header

    fast = parse_plain_image_header(data, len(data))
    if fast is not None:
        return fast
    return _read_pydicom(io.BytesIO(data), len(data))


def read_header_pydicom(path: str | os.PathLike) -> InstanceHeader:
    """The reference reader (pydicom): every file, every error; the fast path's test oracle."""
    try:
        file_size = os.path.getsize(path)
        with open(path, "rb") as fp:
            return _read_pydicom(fp, file_size)
    except PermissionError as exc:
        raise DicomReadError(f"unreadable ({exc.strerror})") from None
    except OSError as exc:
        raise DicomReadError(f"unreadable ({exc.strerror or exc})") from None


def _read_pydicom(fp: BinaryIO, file_size: int) -> InstanceHeader:
    import pydicom
    from pydicom.errors import InvalidDicomError

    if file_size == 0:
        raise NotDicomError("empty file")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                ds = pydicom.dcmread(fp, stop_before_pixels=True)
            except InvalidDicomError:
                fp.seek(0)
                if not _looks_like_bare_dataset(fp.read(8)):
                    raise NotDicomError("not a DICOM file (no DICM preamble and no dataset start)") from None
                fp.seek(0)
                ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
            if any("End of file" in str(w.message) for w in caught):
                raise DicomReadError("file is truncated (ends inside a sequence)")
            _check_elements_complete(ds, file_size)
            check_pixel_data_complete(fp, ds, file_size)
            return header_from_dataset(ds)
    except (NotDicomError, DicomReadError, MissingAttributeError):
        raise
    except (EOFError, struct.error) as exc:
        raise DicomReadError(f"file is truncated ({exc.__class__.__name__})") from None
    except OSError as exc:
        raise DicomReadError(f"unreadable ({exc.strerror or exc})") from None
    except Exception as exc:  # pydicom raises many types on malformed input
        raise DicomReadError(f"malformed DICOM ({exc.__class__.__name__})") from None


def _looks_like_bare_dataset(head: bytes) -> bool:
    """A Part 10 file without preamble, or a raw dataset, starts with a group 0002 or 0008 tag."""
    if len(head) < 8:
        return False
    group, element = struct.unpack("<HH", head[:4])
    return group in (0x0002, 0x0008) and element < 0x0100


def header_from_dataset(ds: Dataset) -> InstanceHeader:
    meta = getattr(ds, "file_meta", None)
    media_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    if media_class == sop.MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        raise DicomdirError("DICOMDIR (a media index, not an instance)")
    sop_class = _str(ds, "SOPClassUID") or media_class
    sop_instance = _str(ds, "SOPInstanceUID") or (str(meta.get("MediaStorageSOPInstanceUID", "")) if meta else "")
    for value, name in (
        (sop_class, "SOP Class UID"),
        (sop_instance, "SOP Instance UID"),
        (_str(ds, "StudyInstanceUID"), "Study Instance UID"),
        (_str(ds, "SeriesInstanceUID"), "Series Instance UID"),
    ):
        if not value:
            raise MissingAttributeError(f"missing {name}")
    header = InstanceHeader(
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        study_instance_uid=_str(ds, "StudyInstanceUID"),
        series_instance_uid=_str(ds, "SeriesInstanceUID"),
        transfer_syntax_uid=str(meta.get("TransferSyntaxUID", "")) if meta is not None else "",
        patient_id=_str(ds, "PatientID"),
        issuer_of_patient_id=_str(ds, "IssuerOfPatientID"),
        patient_name=_str(ds, "PatientName"),
        patient_birth_date=_str(ds, "PatientBirthDate"),
        patient_sex=_str(ds, "PatientSex"),
        study_date=_str(ds, "StudyDate"),
        study_time=_str(ds, "StudyTime"),
        study_id=_str(ds, "StudyID"),
        accession_number=_str(ds, "AccessionNumber"),
        study_description=_str(ds, "StudyDescription"),
        modality=_str(ds, "Modality"),
        series_number=_int(ds, "SeriesNumber"),
        series_description=_str(ds, "SeriesDescription"),
        series_date=_str(ds, "SeriesDate"),
        body_part_examined=_str(ds, "BodyPartExamined"),
        frame_of_reference_uid=_str(ds, "FrameOfReferenceUID"),
        instance_number=_int(ds, "InstanceNumber"),
    )
    if sop_class == sop.RT_STRUCTURE_SET:
        header.structure_set = _structure_set_info(ds)
    elif sop_class in sop.RT_PLAN_CLASSES:
        header.plan = _plan_info(ds)
    elif sop_class == sop.RT_DOSE:
        header.dose = {
            "dose_type": _str(ds, "DoseType"),
            "dose_summation_type": _str(ds, "DoseSummationType"),
            "dose_units": _str(ds, "DoseUnits"),
            "referenced_plan_uid": _referenced_plan_uid(ds),
        }
    elif sop_class == sop.RT_IMAGE:
        header.rt_image = {
            "label": _str(ds, "RTImageLabel"),
            "referenced_plan_uid": _referenced_plan_uid(ds),
            "referenced_beam_number": _int(ds, "ReferencedBeamNumber"),
        }
    if sop_class != sop.RT_DOSE:
        header.image = _image_info(ds)
    return header
