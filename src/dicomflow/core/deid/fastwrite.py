"""Serialise a de-identified dataset quickly: untouched elements are copied as the bytes read.

pydicom's writer costs ~30 µs per element even for elements it only copies; most elements of an
image header are untouched by de-identification, so here a raw element is emitted as header +
the value bytes read from the source, and pydicom writes only the elements the engine changed.
The result is byte-identical to ``pydicom.dcmwrite`` (a test checks it). Anything unusual (big
endian, deflate, ambiguous VRs, undefined lengths) falls back to pydicom entirely.
"""

from __future__ import annotations

import struct

from pydicom.dataelem import RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import UID

# Explicit VR little endian: these VRs have a 2-byte reserved field and a 4-byte length.
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OW", "OV", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"})
PREAMBLE = b"\x00" * 128 + b"DICM"


# Text VRs whose value pydicom keeps as the string read or set (no number formatting involved).
STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"})


def _ascii_string(value, vr: str) -> bytes | None:
    """The encoded value of a plain-ASCII string element, or None to let pydicom do it."""
    if value is None:
        text = ""
    elif isinstance(value, str):
        text = value
    elif isinstance(value, (list, tuple)) or hasattr(value, "append"):
        text = "\\".join("" if v is None else str(v) for v in value)
    else:
        text = str(value)
    if not text.isascii():
        return None
    data = text.encode("ascii")
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    if len(data) > 0xFFFF and vr not in LONG_VRS:
        return None
    return data


class Unsupported(Exception):
    """The dataset needs pydicom's full writer."""


def encode(ds) -> bytes:
    """Preamble, file meta and data set (Pixel Data excluded by the caller) as bytes."""
    ts = UID(ds.file_meta.TransferSyntaxUID)
    if not ts.is_little_endian or ts.is_deflated:
        raise Unsupported(ts)
    implicit = ts.is_implicit_VR
    meta = _encode_meta(ds.file_meta)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, implicit
    encodings = ds._character_set
    write = body.write
    for tag in sorted(ds._dict, key=int):
        raw = ds._dict[tag]  # as stored: raw, deferred or converted
        if (
            isinstance(raw, RawDataElement)
            and raw.value is not None
            and raw.length != 0xFFFFFFFF
            and raw.is_implicit_VR == implicit
            and raw.is_little_endian
        ):
            value = raw.value
            group, element = tag >> 16, tag & 0xFFFF
            if implicit:
                write(struct.pack("<HHI", group, element, len(value)))
            elif raw.VR in LONG_VRS:
                write(struct.pack("<HH2s2xI", group, element, raw.VR.encode("ascii"), len(value)))
            elif raw.VR and len(value) <= 0xFFFF:
                write(struct.pack("<HH2sH", group, element, raw.VR.encode("ascii"), len(value)))
            else:
                raise Unsupported(tag)
            write(value)
        else:
            elem = ds.get_item(tag)
            vr = elem.VR or ""
            if " or " in vr:
                raise Unsupported(tag)
            data = _ascii_string(elem.value, vr) if vr in STRING_VRS else None
            if data is None:
                write_data_element(body, elem, encodings)
                continue
            group, element = tag >> 16, tag & 0xFFFF
            if implicit:
                write(struct.pack("<HHI", group, element, len(data)))
            elif vr in LONG_VRS:
                write(struct.pack("<HH2s2xI", group, element, vr.encode("ascii"), len(data)))
            else:
                write(struct.pack("<HH2sH", group, element, vr.encode("ascii"), len(data)))
            write(data)
    return PREAMBLE + meta + body.getvalue()


def _encode_meta(file_meta) -> bytes:
    """File Meta Information (explicit VR little endian) with its group length, like pydicom."""
    if 0x00020001 not in file_meta:
        file_meta.add_new(0x00020001, "OB", b"\x00\x01")
    parts = []
    for tag in sorted(file_meta.keys(), key=int):
        if tag == 0x00020000:
            continue
        elem = file_meta[tag]
        vr = elem.VR
        data = elem.value if isinstance(elem.value, bytes) else _ascii_string(elem.value, vr)
        if data is None or (vr not in STRING_VRS and vr != "OB"):
            raise Unsupported(tag)
        if vr in LONG_VRS:
            parts.append(struct.pack("<HH2s2xI", 2, tag & 0xFFFF, vr.encode("ascii"), len(data)))
        else:
            parts.append(struct.pack("<HH2sH", 2, tag & 0xFFFF, vr.encode("ascii"), len(data)))
        parts.append(data)
    group = b"".join(parts)
    return struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(group)) + group
