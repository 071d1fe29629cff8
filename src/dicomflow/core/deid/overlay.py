"""Overlays hidden in unused Pixel Data bits (bits above Bits Stored), PS3.5 8.1.2 / retired 60xx.

Old equipment stored overlay bitmaps (annotations, sometimes names) in the high bits of the pixel
words. Removing the 60xx attributes leaves such a bitmap in Pixel Data, so the bits outside
Bits Stored are checked in native (uncompressed) data: unsigned pixels must have them zero,
signed pixels must carry the sign extension of High Bit. When they do not, they are masked —
pixel values are unchanged, only the unused bits are cleared — or, with ``overlay_bits:
"quarantine"``, the object is withheld. Encapsulated (compressed) data declaring an embedded
overlay cannot be checked and is withheld.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.uid import UID

PIXEL_DATA = 0x7FE00010
NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}


class OverlayBits(Exception):
    """Bits above Bits Stored carry data; ``masked`` is the Pixel Data with them cleared."""

    def __init__(self, message: str, masked: bytes | None):
        super().__init__(message)
        self.masked = masked


def embedded_overlay(ds) -> bool:
    """True when the object declares an overlay without its own Overlay Data (so in Pixel Data)."""
    groups = {tag >> 16 for tag in ds._dict if 0x6000 <= tag >> 16 <= 0x601E and not (tag >> 16) & 1}
    return any((g << 16 | 0x3000) not in ds._dict and (g << 16 | 0x0010) in ds._dict for g in groups)


def _int(ds, tag: int) -> int | None:
    try:
        value = ds[tag].value
        return int(value[0] if isinstance(value, (list, tuple)) else value)
    except Exception:
        return None


def overlay_mask(ds, fh, declared: bool) -> bytes | None:
    """None when Pixel Data has no data above Bits Stored; raises ``OverlayBits`` otherwise."""
    if PIXEL_DATA not in ds._dict:
        return None
    allocated, stored = _int(ds, 0x00280100), _int(ds, 0x00280101)
    high, signed = _int(ds, 0x00280102), _int(ds, 0x00280103)
    ts = str(ds.file_meta.get("TransferSyntaxUID", "")) if getattr(ds, "file_meta", None) is not None else ""
    if ts not in NATIVE:
        if declared:
            raise OverlayBits("embedded overlay in compressed Pixel Data (cannot be masked)", None)
        return None
    if allocated not in (16, 32) or stored is None or stored >= allocated or stored < 1:
        return None
    high = stored - 1 if high is None or high >= allocated or high < stored - 1 else high
    raw = ds._dict[PIXEL_DATA]
    if isinstance(raw, RawDataElement) and raw.value is None:
        fh.seek(raw.value_tell)
        data = fh.read(raw.length)
    else:
        data = ds.get_item(PIXEL_DATA).value if isinstance(raw, RawDataElement) else raw.value
    if not isinstance(data, (bytes, bytearray)) or not data:
        return None
    order = ">" if UID(ts) == "1.2.840.10008.1.2.2" else "<"
    dtype = np.dtype(f"{order}u{allocated // 8}")
    usable = len(data) - len(data) % dtype.itemsize
    words = np.frombuffer(data, dtype, usable // dtype.itemsize)
    low = high - stored + 1
    valid = ((1 << stored) - 1) << low
    full = (1 << allocated) - 1
    if signed == 1 and low == 0:
        value = words & valid
        negative = (value >> (stored - 1)) & 1
        expected = np.where(negative == 1, value | (full ^ valid), value).astype(dtype)
    else:
        expected = (words & valid).astype(dtype)
    if np.array_equal(expected, words):
        return None
    masked = expected.tobytes() + bytes(data[usable:])
    raise OverlayBits("Pixel Data bits above Bits Stored carry data (an overlay)", masked)
