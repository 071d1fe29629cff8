"""Which attribute values are identifying, so explanations printed outside the UI can mask them.

An attribute is treated as identifying when any of these holds (for a path: for any segment):
- its tag is listed in DICOM PS3.15 Table E.1-1 (the attributes the Basic Application Level
  Confidentiality Profile acts on: names, IDs, dates, times, UIDs, descriptions, ...), read
  from the de-identification engine's packaged copy (:mod:`dicomflow.core.deid.table`);
- it is in group 0010 (Patient and Patient Study modules: birth date, sex, age, weight...);
- its value representation is PN (a person's name, whoever it belongs to);
- it is a private attribute (its meaning is unknown, so it is assumed identifying).
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.datadict import dictionary_VR
from pydicom.tag import BaseTag

from dicomflow.core.deid.table import rule_for

MASK = "***"


def is_identifying_tag(tag: BaseTag, vr: str | None = None) -> bool:
    """True when values of ``tag`` (with ``vr`` if known) may identify a person."""
    if tag.is_private or tag.group == 0x0010:
        return True
    if vr is None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = None
    return vr == "PN" or rule_for(int(tag)) is not None


def is_identifying_path(tags: Iterable[BaseTag], vrs: Iterable[str] = ()) -> bool:
    """A path is identifying when any segment is, or any element it reached has VR PN."""
    return any(is_identifying_tag(t) for t in tags) or "PN" in set(vrs)
