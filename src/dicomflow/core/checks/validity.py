"""Validity: required attributes per SOP class (the modules that matter) and well-formed values.

A compact table, not the whole standard: the modules processing relies on (patient, study, series,
frame of reference, image plane/pixel, CT/MR image, enhanced multi-frame, RT structure set / ROI
contour / RT ROI observations, RT general plan, RT dose, RT image) with their Type 1 (present and
non-empty) and Type 2 (present) attributes, nested sequences included. Values are checked on their
raw bytes, so what pydicom would silently coerce is still caught. ``dciodvfy`` is the full oracle;
the tests cross-check both on generated files.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Any, Iterator

from dicomflow.core.checks.findings import Code, Finding, Severity

# (keyword, type, children-for-each-item)
Attr = tuple

PATIENT = ("Patient", [("PatientName", 2), ("PatientID", 2), ("PatientBirthDate", 2), ("PatientSex", 2)])
GENERAL_STUDY = (
    "General Study",
    [
        ("StudyInstanceUID", 1),
        ("StudyDate", 2),
        ("StudyTime", 2),
        ("ReferringPhysicianName", 2),
        ("StudyID", 2),
        ("AccessionNumber", 2),
    ],
)
GENERAL_SERIES = ("General Series", [("Modality", 1), ("SeriesInstanceUID", 1), ("SeriesNumber", 2)])
RT_SERIES = ("RT Series", [("Modality", 1), ("SeriesInstanceUID", 1), ("SeriesNumber", 2), ("OperatorsName", 2)])
FRAME_OF_REFERENCE = ("Frame of Reference", [("FrameOfReferenceUID", 1), ("PositionReferenceIndicator", 2)])
GENERAL_EQUIPMENT = ("General Equipment", [("Manufacturer", 2)])
GENERAL_IMAGE = ("General Image", [("InstanceNumber", 2)])
IMAGE_PLANE = (
    "Image Plane",
    [("PixelSpacing", 1), ("ImageOrientationPatient", 1), ("ImagePositionPatient", 1), ("SliceThickness", 2)],
)
IMAGE_PIXEL = (
    "Image Pixel",
    [
        ("SamplesPerPixel", 1),
        ("PhotometricInterpretation", 1),
        ("Rows", 1),
        ("Columns", 1),
        ("BitsAllocated", 1),
        ("BitsStored", 1),
        ("HighBit", 1),
        ("PixelRepresentation", 1),
    ],
)
CT_IMAGE = (
    "CT Image",
    [("ImageType", 1), ("RescaleIntercept", 1), ("RescaleSlope", 1), ("KVP", 2), ("AcquisitionNumber", 2)],
)
MR_IMAGE = (
    "MR Image",
    [
        ("ImageType", 1),
        ("ScanningSequence", 1),
        ("SequenceVariant", 1),
        ("ScanOptions", 2),
        ("MRAcquisitionType", 2),
        ("EchoTime", 2),
        ("EchoTrainLength", 2),
    ],
)
MULTI_FRAME_FUNCTIONAL_GROUPS = (
    "Multi-frame Functional Groups",
    [("PerFrameFunctionalGroupsSequence", 1), ("NumberOfFrames", 1), ("InstanceNumber", 1)],
)
SOP_COMMON = ("SOP Common", [("SOPClassUID", 1), ("SOPInstanceUID", 1)])
STRUCTURE_SET = (
    "Structure Set",
    [
        ("StructureSetLabel", 1),
        ("StructureSetDate", 2),
        ("StructureSetTime", 2),
        (
            "StructureSetROISequence",
            1,
            [("ROINumber", 1), ("ReferencedFrameOfReferenceUID", 1), ("ROIName", 2), ("ROIGenerationAlgorithm", 2)],
        ),
    ],
)
ROI_CONTOUR = (
    "ROI Contour",
    [
        (
            "ROIContourSequence",
            1,
            [
                ("ReferencedROINumber", 1),
                (
                    "ContourSequence",
                    3,
                    [("ContourGeometricType", 1), ("NumberOfContourPoints", 1), ("ContourData", 1)],
                ),
            ],
        )
    ],
)
RT_ROI_OBSERVATIONS = (
    "RT ROI Observations",
    [
        (
            "RTROIObservationsSequence",
            1,
            [("ObservationNumber", 1), ("ReferencedROINumber", 1), ("RTROIInterpretedType", 2), ("ROIInterpreter", 2)],
        )
    ],
)
RT_GENERAL_PLAN = (
    "RT General Plan",
    [("RTPlanLabel", 1), ("RTPlanDate", 2), ("RTPlanTime", 2), ("RTPlanGeometry", 1)],
)
RT_DOSE = ("RT Dose", [("DoseUnits", 1), ("DoseType", 1), ("DoseSummationType", 1)])
RT_IMAGE = (
    "RT Image",
    [("RTImageLabel", 1), ("ImageType", 1), ("ConversionType", 2), ("RTImagePlane", 1)],
)

_COMMON = [PATIENT, GENERAL_STUDY, SOP_COMMON]
_IMAGE = [*_COMMON, GENERAL_SERIES, FRAME_OF_REFERENCE, GENERAL_EQUIPMENT, GENERAL_IMAGE, IMAGE_PLANE, IMAGE_PIXEL]
_ENHANCED = [*_COMMON, GENERAL_SERIES, FRAME_OF_REFERENCE, GENERAL_EQUIPMENT, IMAGE_PIXEL, MULTI_FRAME_FUNCTIONAL_GROUPS]
_RT = [*_COMMON, RT_SERIES, GENERAL_EQUIPMENT]

#: SOP Class UID → (name, modules)
MODULES_BY_SOP_CLASS: dict[str, tuple[str, list]] = {
    "1.2.840.10008.5.1.4.1.1.2": ("CT Image", [*_IMAGE, CT_IMAGE]),
    "1.2.840.10008.5.1.4.1.1.2.1": ("Enhanced CT Image", _ENHANCED),
    "1.2.840.10008.5.1.4.1.1.4": ("MR Image", [*_IMAGE, MR_IMAGE]),
    "1.2.840.10008.5.1.4.1.1.4.1": ("Enhanced MR Image", _ENHANCED),
    "1.2.840.10008.5.1.4.1.1.128": ("PET Image", _IMAGE),
    "1.2.840.10008.5.1.4.1.1.481.1": ("RT Image", [*_RT, IMAGE_PIXEL, RT_IMAGE]),
    "1.2.840.10008.5.1.4.1.1.481.2": ("RT Dose", [*_RT, FRAME_OF_REFERENCE, IMAGE_PLANE, IMAGE_PIXEL, RT_DOSE]),
    "1.2.840.10008.5.1.4.1.1.481.3": ("RT Structure Set", [*_RT, STRUCTURE_SET, ROI_CONTOUR, RT_ROI_OBSERVATIONS]),
    "1.2.840.10008.5.1.4.1.1.481.5": ("RT Plan", [*_RT, RT_GENERAL_PLAN]),
    "1.2.840.10008.5.1.4.1.1.481.8": ("RT Ion Plan", [*_RT, RT_GENERAL_PLAN]),
    "1.2.840.10008.5.1.4.1.1.66.1": ("Spatial Registration", [*_COMMON, GENERAL_SERIES, FRAME_OF_REFERENCE]),
}

# -- value formats -----------------------------------------------------------------------------

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_DA = re.compile(r"^\d{8}$")
_TM = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?$")
_DT = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$")
_IS = re.compile(r"^[+-]?\d+$")
_DS = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_CS = re.compile(r"^[A-Z0-9 _]*$")


_DS_ONE = r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"
_BULK = {
    "DS": re.compile(rf"^ *({_DS_ONE})? *(\\ *({_DS_ONE})? *)*$"),
    "IS": re.compile(r"^ *([+-]?\d+)? *(\\ *([+-]?\d+)? *)*$"),
}
_MAX_LEN = {"DS": 16, "IS": 12}


def _valid_uid(v: str) -> bool:
    return len(v) <= 64 and bool(_UID.match(v))


def _valid_da(v: str) -> bool:
    if not _DA.match(v):
        return False
    try:
        dt.date(int(v[:4]), int(v[4:6]), int(v[6:8]))
    except ValueError:
        return False
    return True


def _valid_tm(v: str) -> bool:
    m = _TM.match(v)
    if not m or (m.group(3) and not m.group(2)) or (m.group(4) and not m.group(3)):
        return False
    hh, mm, ss = int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)
    return hh < 24 and mm < 60 and ss < 61


def _valid_dt(v: str) -> bool:
    if not _DT.match(v):
        return False
    digits = v.split("+")[0].split("-")[0].split(".")[0]
    try:
        month = int(digits[4:6] or 1)
        day = int(digits[6:8] or 1)
        dt.date(int(digits[:4]), month, day)
    except ValueError:
        return False
    return _valid_tm(digits[8:]) if len(digits) > 8 else True


def _valid_is(v: str) -> bool:
    return len(v) <= 12 and bool(_IS.match(v)) and -(2**31) <= int(v) < 2**31


def _valid_ds(v: str) -> bool:
    return len(v) <= 16 and bool(_DS.match(v))


def _valid_cs(v: str) -> bool:
    return len(v) <= 16 and bool(_CS.match(v))


_FORMATS = {
    "UI": (_valid_uid, Code.VALIDITY_MALFORMED_UID, Severity.ERROR, "a UID (digits and dots, no leading zeros, at most 64 characters)"),
    "DA": (_valid_da, Code.VALIDITY_MALFORMED_DATE, Severity.ERROR, "a date YYYYMMDD"),
    "TM": (_valid_tm, Code.VALIDITY_MALFORMED_TIME, Severity.ERROR, "a time HHMMSS.FFFFFF"),
    "DT": (_valid_dt, Code.VALIDITY_MALFORMED_DATETIME, Severity.ERROR, "a date-time YYYYMMDDHHMMSS.FFFFFF&ZZXX"),
    "IS": (_valid_is, Code.VALIDITY_MALFORMED_INTEGER, Severity.ERROR, "an integer string (at most 12 characters)"),
    "DS": (_valid_ds, Code.VALIDITY_MALFORMED_DECIMAL, Severity.ERROR, "a decimal string (at most 16 characters)"),
    "CS": (_valid_cs, Code.VALIDITY_MALFORMED_CODE_STRING, Severity.WARNING, "a code string (upper case, digits, space, underscore; at most 16 characters)"),
}


# -- dataset access on raw values --------------------------------------------------------------


def _tag_label(tag: Any) -> str:
    from pydicom.datadict import keyword_for_tag

    keyword = keyword_for_tag(tag) or "attribute"
    return f"{keyword} ({tag.group:04X},{tag.element:04X})"


def _element(ds: Any, keyword: str) -> Any | None:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None or tag not in ds:
        return None
    return ds.get_item(tag)


def _vr(elem: Any) -> str | None:
    from pydicom.datadict import dictionary_VR

    vr = getattr(elem, "VR", None)
    if vr:
        return str(vr)
    try:
        return dictionary_VR(elem.tag)
    except KeyError:
        return None


def _strings(elem: Any, vr: str) -> list[str]:
    """The values of a text-like element as the strings that were stored (padding removed)."""
    value = elem.value
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("latin-1").rstrip("\x00 ").strip("\x00")
        parts = text.split("\\") if text else []
    elif value is None or value == "":
        parts = []
    else:
        items = list(value) if (not isinstance(value, str) and hasattr(value, "__iter__")) else [value]
        parts = [getattr(v, "original_string", None) or str(v) for v in items]
    strip = (lambda s: s.rstrip("\x00 ")) if vr == "UI" else (lambda s: s.strip("\x00 ") if vr != "CS" else s.strip())
    return [strip(p) for p in parts]


_TEXT_VRS = {"UI", "DA", "TM", "DT", "IS", "DS", "CS", "LO", "SH", "PN", "ST", "LT", "AE", "AS", "UC", "UT", "UR"}


def _is_empty(ds: Any, elem: Any, keyword: str) -> bool:
    vr = _vr(elem)
    if vr == "SQ":
        return len(getattr(ds, keyword) or []) == 0
    value = elem.value
    if value is None:
        return True
    if isinstance(value, (bytes, bytearray)):
        if vr in _TEXT_VRS:
            return not bytes(value).strip(b"\x00 ")
        return len(value) == 0
    if isinstance(value, str):
        return not value.strip("\x00 ")
    try:
        return len(value) == 0
    except TypeError:
        return False


# -- the checks --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _label(keyword: str) -> str:
    from pydicom.datadict import tag_for_keyword
    from pydicom.tag import Tag

    return _tag_label(Tag(tag_for_keyword(keyword)))


def _required(ds: Any, attrs: list, module: str, where: str = "") -> Iterator[Finding]:
    for attr in attrs:
        keyword, kind = attr[0], attr[1]
        children = attr[2] if len(attr) > 2 else None
        elem = _element(ds, keyword)
        label = _label(keyword)
        if elem is None:
            if kind == 1:
                yield Finding(
                    Severity.ERROR,
                    Code.VALIDITY_MISSING_TYPE1,
                    f"Type 1 attribute {label}{where} of the {module} module is missing; fix the export at the source.",
                )
            elif kind == 2:
                yield Finding(
                    Severity.WARNING,
                    Code.VALIDITY_MISSING_TYPE2,
                    f"Type 2 attribute {label}{where} of the {module} module is missing (it may be empty but must be present).",
                )
            continue
        if kind == 1 and _is_empty(ds, elem, keyword):
            yield Finding(
                Severity.ERROR,
                Code.VALIDITY_EMPTY_TYPE1,
                f"Type 1 attribute {label}{where} of the {module} module is empty; it must have a value.",
            )
        if children:
            for index, item in enumerate(getattr(ds, keyword) or [], start=1):
                yield from _required(item, children, module, f"{where} in {keyword} item {index}")


def _formats(ds: Any, where: str = "") -> Iterator[Finding]:
    for tag in list(ds.keys()):
        if tag.is_private or tag.group in (0x7FE0, 0xFFFE) or tag.element == 0:
            continue
        elem = ds.get_item(tag)
        vr = _vr(elem)
        if vr == "SQ":
            for index, item in enumerate(ds[tag].value or [], start=1):
                yield from _formats(item, f"{where} in {_tag_label(tag).split(' ')[0]} item {index}")
            continue
        rule = _FORMATS.get(vr or "")
        if rule is None:
            continue
        check, code, severity, expected = rule
        raw = elem.value
        if vr in _BULK and isinstance(raw, (bytes, bytearray)) and len(raw) > 256:
            # long numeric arrays (Contour Data, offsets): one regex over the whole raw text
            text = bytes(raw).decode("latin-1").rstrip("\x00 ")
            ok = _BULK[vr].match(text) is not None and max(map(len, text.split("\\"))) <= _MAX_LEN[vr]
        else:
            try:
                values = _strings(elem, vr)
            except Exception:
                values = ["\x00invalid"]
            ok = all(not v or check(v) for v in values)
        if not ok:
            yield Finding(
                severity, code, f"{_tag_label(tag)}{where} is not {expected}; correct the value at the source."
            )


def check_validity(ds: Any) -> list[Finding]:
    """Findings for one instance (a header-only Dataset is enough)."""
    sop_class = str(getattr(ds, "SOPClassUID", "") or "").strip()
    name_modules = MODULES_BY_SOP_CLASS.get(sop_class)
    findings: list[Finding] = []
    if name_modules is None:
        findings.append(
            Finding(
                Severity.INFO,
                Code.VALIDITY_UNKNOWN_SOP_CLASS,
                "The SOP class of this instance is not in the validity table; only common modules were checked.",
            )
        )
        modules = [*_COMMON, GENERAL_SERIES]
    else:
        modules = name_modules[1]
    seen: set[str] = set()
    for module, attrs in modules:
        for finding in _required(ds, attrs, module):
            if finding.message not in seen:
                seen.add(finding.message)
                findings.append(finding)
    if sop_class.endswith(".481.5") or sop_class.endswith(".481.8"):
        findings.extend(_plan_conditions(ds))
    if sop_class.endswith(".481.2"):
        findings.extend(_dose_conditions(ds))
    findings.extend(_formats(ds))
    return findings


def _plan_conditions(ds: Any) -> list[Finding]:
    geometry = str(getattr(ds, "RTPlanGeometry", "") or "").strip().upper()
    if geometry == "PATIENT" and not getattr(ds, "ReferencedStructureSetSequence", None):
        return [
            Finding(
                Severity.ERROR,
                Code.VALIDITY_MISSING_TYPE1,
                "Type 1C attribute ReferencedStructureSetSequence (300C,0060) of the RT General Plan module is "
                "missing although RTPlanGeometry is PATIENT; export the plan with its structure set reference.",
            )
        ]
    return []


def _dose_conditions(ds: Any) -> list[Finding]:
    try:
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    if frames > 1 and "GridFrameOffsetVector" not in ds:
        return [
            Finding(
                Severity.ERROR,
                Code.VALIDITY_MISSING_TYPE1,
                "Type 1C attribute GridFrameOffsetVector (3004,000C) of the RT Dose module is missing although the "
                "dose has several frames; the dose grid cannot be placed.",
            )
        ]
    return []
