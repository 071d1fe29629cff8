"""A narrow fast path for the header read of plain single-frame images (CT, MR, PET, ...).

Why: on the import hot path pydicom spends ~5 ms per CT file turning raw elements into Python
values, more than hashing and copying the 0.5 MB file together. Plain image files (Part 10,
little-endian, defined-length top-level elements, default/Latin-1/UTF-8 character set) make up
almost all of what arrives, and for them the ~30 attributes the catalog needs can be read
straight from the bytes.

Anything else — RT objects, enhanced multi-frame, big endian, deflate, other character sets,
missing UIDs, anything odd — returns ``None`` and the caller uses pydicom
(``header.read_header``), which is also this module's test oracle: both must give the same
:class:`InstanceHeader` for the same file.
"""

from __future__ import annotations

import os
import struct

from dicomflow.core.dicom import sop
from dicomflow.core.dicom.header import InstanceHeader

_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_IMPLICIT_LE = "1.2.840.10008.1.2"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_DEFLATED = "1.2.840.10008.1.2.1.99"
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_PLAIN_IMAGE_CLASSES = {
    sop.CT_IMAGE,
    sop.MR_IMAGE,
    sop.PET_IMAGE,
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.20",  # NM
    "1.2.840.10008.5.1.4.1.1.1",  # CR
    "1.2.840.10008.5.1.4.1.1.1.1",  # DX
}
_CHARSETS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
_PIXEL_DATA = 0x7FE00010

# tag -> (field name, kind); kinds: s string, i int (IS), f float (DS), fs floats (DS multi), us uint16
_WANTED: dict[int, tuple[str, str]] = {
    0x00080005: ("charset", "s"),
    0x00080016: ("sop_class_uid", "s"),
    0x00080018: ("sop_instance_uid", "s"),
    0x00080020: ("study_date", "s"),
    0x00080021: ("series_date", "s"),
    0x00080030: ("study_time", "s"),
    0x00080050: ("accession_number", "s"),
    0x00080060: ("modality", "s"),
    0x00081030: ("study_description", "s"),
    0x0008103E: ("series_description", "s"),
    0x00100010: ("patient_name", "s"),
    0x00100020: ("patient_id", "s"),
    0x00100021: ("issuer_of_patient_id", "s"),
    0x00100030: ("patient_birth_date", "s"),
    0x00100040: ("patient_sex", "s"),
    0x00180015: ("body_part_examined", "s"),
    0x00180050: ("slice_thickness", "f"),
    0x0020000D: ("study_instance_uid", "s"),
    0x0020000E: ("series_instance_uid", "s"),
    0x00200010: ("study_id", "s"),
    0x00200011: ("series_number", "i"),
    0x00200013: ("instance_number", "i"),
    0x00200032: ("image_position_patient", "fs"),
    0x00200037: ("image_orientation_patient", "fs"),
    0x00200052: ("frame_of_reference_uid", "s"),
    0x00201041: ("slice_location", "f"),
    0x00280004: ("photometric_interpretation", "s"),
    0x00280008: ("number_of_frames", "i"),
    0x00280010: ("rows", "us"),
    0x00280011: ("columns", "us"),
    0x00280030: ("pixel_spacing", "fs"),
    0x00280100: ("bits_allocated", "us"),
}
_STOP_TAGS = {0x52009229, 0x52009230}  # functional groups: enhanced objects go to pydicom
_HEAD = 64 * 1024


class _Fallback(Exception):
    """Not the simple case: let pydicom read it."""


def _strip(raw: bytes, encoding: str) -> str:
    return raw.decode(encoding).rstrip(" \x00").strip()


def _convert(raw: bytes, kind: str, encoding: str):
    if kind == "us":
        if len(raw) != 2:
            raise _Fallback
        return struct.unpack("<H", raw)[0]
    text = _strip(raw, encoding)
    if kind == "s":
        return text
    if text == "":
        return None
    try:
        if kind == "i":
            return int(text)
        if kind == "f":
            return float(text)
        return [float(v) for v in text.split("\\")]
    except ValueError:
        raise _Fallback from None


def _read_meta(buf: bytes) -> tuple[int, str, str]:
    """Parse the file meta group; return (offset of the dataset, transfer syntax, media SOP class)."""
    pos = 132
    syntax = media_class = ""
    end = len(buf)
    while pos + 8 <= end:
        group, elem = struct.unpack_from("<HH", buf, pos)
        if group != 0x0002:
            return pos, syntax, media_class
        vr = buf[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<L", buf, pos + 8)
            value_at = pos + 12
        else:
            (length,) = struct.unpack_from("<H", buf, pos + 6)
            value_at = pos + 8
        if length == 0xFFFFFFFF or value_at + length > end:
            raise _Fallback
        value = buf[value_at : value_at + length]
        if elem == 0x0010:
            syntax = value.decode("ascii", "replace").rstrip(" \x00")
        elif elem == 0x0002:
            media_class = value.decode("ascii", "replace").rstrip(" \x00")
        pos = value_at + length
    raise _Fallback


def read_plain_image_header(path: str | os.PathLike) -> InstanceHeader | None:
    """The header of a plain image file, or None when pydicom must read it."""
    try:
        file_size = os.path.getsize(path)
        with open(path, "rb") as fh:
            buf = fh.read(_HEAD)
    except OSError:
        return None
    return parse_plain_image_header(buf, file_size)


def parse_plain_image_header(buf: bytes, file_size: int) -> InstanceHeader | None:
    """Like :func:`read_plain_image_header` for the first bytes (or all) of a file of ``file_size``."""
    try:
        return _parse(buf, file_size)
    except (_Fallback, struct.error, UnicodeDecodeError):
        return None


def _parse(buf: bytes, file_size: int) -> InstanceHeader | None:
    if len(buf) < 144 or buf[128:132] != b"DICM":
        return None
    pos, syntax, media_class = _read_meta(buf)
    if syntax in (_BIG_ENDIAN, _DEFLATED) or not syntax.startswith("1.2.840.10008.1.2"):
        return None
    implicit = syntax == _IMPLICIT_LE
    values: dict[str, object] = {}
    raw_values: dict[int, bytes] = {}
    end = len(buf)
    reached_pixels = False
    while pos + 8 <= end:
        group, elem = struct.unpack_from("<HH", buf, pos)
        tag = group << 16 | elem
        if tag == _PIXEL_DATA:
            reached_pixels = True
            break
        if tag in _STOP_TAGS or group == 0xFFFE or tag > _PIXEL_DATA:
            return None
        if implicit:
            (length,) = struct.unpack_from("<L", buf, pos + 4)
            value_at = pos + 8
        else:
            vr = buf[pos + 4 : pos + 6]
            if vr in _LONG_VRS:
                (length,) = struct.unpack_from("<L", buf, pos + 8)
                value_at = pos + 12
            else:
                (length,) = struct.unpack_from("<H", buf, pos + 6)
                value_at = pos + 8
        if length == 0xFFFFFFFF:
            return None  # undefined-length sequence: pydicom knows how to walk it
        if value_at + length > end:
            return None  # beyond what we read (or truncated): let pydicom decide
        if tag in _WANTED:
            raw_values[tag] = buf[value_at : value_at + length]
        pos = value_at + length
    if not reached_pixels:
        return None
    encoding = _CHARSETS.get(_strip(raw_values.get(0x00080005, b""), "ascii"))
    if encoding is None:
        return None
    for tag, raw in raw_values.items():
        name, kind = _WANTED[tag]
        values[name] = _convert(raw, kind, encoding)
    sop_class = values.get("sop_class_uid") or media_class
    if sop_class not in _PLAIN_IMAGE_CLASSES:
        return None
    for required in ("sop_instance_uid", "study_instance_uid", "series_instance_uid"):
        if not values.get(required):
            return None
    _check_pixel_length(buf, pos, implicit, file_size)
    image_keys = (
        "rows", "columns", "bits_allocated", "photometric_interpretation", "pixel_spacing",
        "slice_thickness", "image_position_patient", "image_orientation_patient", "slice_location",
    )
    image = {k: values.get(k) for k in image_keys} if "rows" in values else None
    if image is not None:
        image["number_of_frames"] = values.get("number_of_frames") or 1
        image["photometric_interpretation"] = image["photometric_interpretation"] or ""
        image = {k: image[k] for k in _IMAGE_ORDER}
    text = {k: values.get(k) or "" for k in _TEXT_FIELDS}
    return InstanceHeader(
        sop_class_uid=sop_class,
        transfer_syntax_uid=syntax,
        series_number=values.get("series_number"),
        instance_number=values.get("instance_number"),
        image=image,
        **text,
    )


_IMAGE_ORDER = (
    "rows", "columns", "number_of_frames", "bits_allocated", "photometric_interpretation", "pixel_spacing",
    "slice_thickness", "image_position_patient", "image_orientation_patient", "slice_location",
)
_TEXT_FIELDS = (
    "sop_instance_uid", "study_instance_uid", "series_instance_uid", "patient_id", "issuer_of_patient_id",
    "patient_name", "patient_birth_date", "patient_sex", "study_date", "study_time", "study_id",
    "accession_number", "study_description", "modality", "series_description", "series_date",
    "body_part_examined", "frame_of_reference_uid",
)


def _check_pixel_length(buf: bytes, pos: int, implicit: bool, file_size: int) -> None:
    if implicit:
        (length,) = struct.unpack_from("<L", buf, pos + 4)
        value_at = pos + 8
    else:
        (length,) = struct.unpack_from("<L", buf, pos + 8)
        value_at = pos + 12
    if length == 0xFFFFFFFF:
        raise _Fallback  # encapsulated: the full reader checks the delimiter
    if value_at + length > file_size:
        raise _Fallback  # truncated: the full reader says so, with the same message as always
