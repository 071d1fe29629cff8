"""Which attribute values are identifying, so explanations printed outside the UI can mask them.

An attribute is treated as identifying when any of these holds (for a path: for any segment):
- its tag is listed in DICOM PS3.15 Table E.1-1 (the attributes the Basic Application Level
  Confidentiality Profile acts on: names, IDs, dates, UIDs, descriptions, ...). The table is read
  at run time from ``$DICOMFLOW_STANDARD_DIR/ps3.15-table-e.1-1.json`` or, when that variable is
  unset, from the project's ``shared/standard`` folder;
- it is in group 0010 (the Patient module and Patient Study module live there: birth date, sex,
  age, weight, comments...);
- its value representation is PN (a person's name, whoever it belongs to);
- it is a private attribute (its meaning is unknown, so it is assumed identifying).
If the table cannot be found, every attribute whose VR is not a code or a number is masked
instead: masking too much is safe, too little is not.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from pydicom.datadict import dictionary_VR
from pydicom.tag import BaseTag

TABLE_NAME = "ps3.15-table-e.1-1.json"
MASK = "***"
_SAFE_VRS_WITHOUT_TABLE = {"CS", "IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "AT", "SQ"}
_SAFE_TAGS_WITHOUT_TABLE = {0x00080016, 0x00020010, 0x00020002}  # SOP class, transfer syntax


def _table_path() -> Path | None:
    configured = os.environ.get("DICOMFLOW_STANDARD_DIR")
    if configured:
        path = Path(configured) / TABLE_NAME
        return path if path.is_file() else None
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "standard" / TABLE_NAME
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=1)
def _table() -> tuple[frozenset[int], tuple[re.Pattern[str], ...]] | None:
    """(exact tags, patterns for repeating groups like 50xxxxxx) or None when unavailable."""
    path = _table_path()
    if path is None:
        return None
    exact: set[int] = set()
    patterns: list[re.Pattern[str]] = []
    for entry in json.loads(path.read_text()):
        tag_id = entry["id"].lower()
        if not re.fullmatch(r"[0-9a-fx]{8}", tag_id):
            continue  # e.g. the private-attributes row; private tags are handled by rule
        if "x" in tag_id:
            patterns.append(re.compile("^" + tag_id.replace("x", "[0-9a-f]") + "$"))
        else:
            exact.add(int(tag_id, 16))
    return frozenset(exact), tuple(patterns)


def table_available() -> bool:
    return _table() is not None


def is_identifying_tag(tag: BaseTag, vr: str | None = None) -> bool:
    """True when values of ``tag`` (with ``vr`` if known) may identify a person."""
    if tag.is_private or tag.group == 0x0010:
        return True
    if vr is None:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = None
    if vr == "PN":
        return True
    table = _table()
    if table is None:
        return int(tag) not in _SAFE_TAGS_WITHOUT_TABLE and vr not in _SAFE_VRS_WITHOUT_TABLE
    exact, patterns = table
    if int(tag) in exact:
        return True
    text = f"{int(tag):08x}"
    return any(p.match(text) for p in patterns)


def is_identifying_path(tags: Iterable[BaseTag], vrs: Iterable[str] = ()) -> bool:
    """A path is identifying when any segment is, or any element it reached has VR PN."""
    return any(is_identifying_tag(t) for t in tags) or "PN" in set(vrs)
