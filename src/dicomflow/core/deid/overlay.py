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

import mmap

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.uid import UID

PIXEL_DATA = 0x7FE00010
NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}


_ALLOWED_HIGH = {bits: bytes(range(1 << (bits - 8))) for bits in range(8, 16)}


class OverlayBits(Exception):
    """Bits above Bits Stored carry data; ``masked`` is the Pixel Data with them cleared."""

    def __init__(self, message: str, masked: bytes | None):
        super().__init__(message)
        self.masked = masked


def embedded_overlay(ds) -> bool:
    """True when the object has overlay attributes (60xx): their bitmap may sit in Pixel Data."""
    for tag in ds._dict:
        if 0x6000 <= tag >> 16 <= 0x601E:
            return True
        if tag >> 16 > 0x601E:
            return False
    return False


def _int(ds, tag: int) -> int | None:
    raw = ds._dict.get(tag)
    if isinstance(raw, RawDataElement) and raw.value is not None and len(raw.value) == 2 and raw.is_little_endian:
        return int.from_bytes(raw.value, "little")  # US as read: no conversion
    try:
        value = ds[tag].value
        return int(value[0] if isinstance(value, (list, tuple)) else value)
    except Exception:
        return None


def overlay_mask(ds, fh, declared: bool) -> bytes | None:
    """None when Pixel Data has no data above Bits Stored; raises ``OverlayBits`` otherwise.

    Checked when the object has overlay attributes (``declared``): the pixel words of every
    image are not read for nothing (a bitmap in unused bits without any 60xx attribute is not
    recognised — documented limit).
    """
    if not declared or PIXEL_DATA not in ds._dict:
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
        if allocated == 16 and high == stored - 1 and signed != 1 and ts != "1.2.840.10008.1.2.2":
            # Fast path (most CT/MR): the largest word must fit in Bits Stored; read in place.
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                if raw.value_tell + raw.length <= len(mm):
                    words = np.frombuffer(mm, "<u2", raw.length // 2, raw.value_tell)
                    fits = int(words.max(initial=0)) >> stored == 0
                    del words
                    if fits:
                        return None
        fh.seek(raw.value_tell)
        data = fh.read(raw.length)
    else:
        data = ds.get_item(PIXEL_DATA).value if isinstance(raw, RawDataElement) else raw.value
    if not isinstance(data, (bytes, bytearray)) or not data:
        return None
    order = ">" if UID(ts) == "1.2.840.10008.1.2.2" else "<"
    low = high - stored + 1
    if allocated == 16 and low == 0 and signed != 1 and stored >= 8:
        # Fast path (most CT/MR): the high byte of every word must stay below 2**(stored-8).
        high_bytes = data[1::2] if order == "<" else data[0::2]
        if not bytes(high_bytes).translate(None, _ALLOWED_HIGH[stored]):
            return None
    dtype = np.dtype(f"{order}u{allocated // 8}")
    usable = len(data) - len(data) % dtype.itemsize
    words = np.frombuffer(data, dtype, usable // dtype.itemsize)
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
