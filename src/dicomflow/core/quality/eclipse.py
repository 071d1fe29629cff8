"""Varian Eclipse structure templates (XML) → a template's structure list.

An Eclipse structure template export (``<StructureTemplate>`` with ``<Structures>``) lists each
structure with its ID (≤ 16 characters, what Eclipse shows), ``Identification/VolumeType``
(Organ, PTV, External, …) and a colour (``Color`` as ``RGBrrrgggbbb`` or ``#rrggbb``, or
``DVHLineColor`` as a signed 32-bit ARGB integer; missing: a default per type). Each becomes
``{"key", "name", "label", "color", "type"}`` as template ``rois`` take them.

The file comes from outside: it is parsed with ``defusedxml`` (no DTDs, no entities, no external
references: entity bombs and XXE are refused), within a size and count limit, and every value is
checked before it becomes part of a template.
"""

from __future__ import annotations

import re

from dicomflow.core.quality.nomenclature import INTERPRETED_TYPES, MAX_LABEL
from dicomflow.errors import InputError

MAX_XML_BYTES = 2 * 1024 * 1024
MAX_STRUCTURES = 500
# Eclipse VolumeType → RT ROI Interpreted Type
VOLUME_TYPES = {
    "organ": "ORGAN", "external": "EXTERNAL", "ptv": "PTV", "ctv": "CTV", "gtv": "GTV",
    "avoidance": "AVOIDANCE", "control": "CONTROL", "support": "SUPPORT", "marker": "MARKER",
    "cavity": "CAVITY", "bolus": "BOLUS", "irradiated volume": "IRRAD_VOLUME", "irrad_volume": "IRRAD_VOLUME",
    "treated volume": "TREATED_VOLUME", "treated_volume": "TREATED_VOLUME", "fixation": "FIXATION",
    "contrast agent": "CONTRAST_AGENT", "contrast_agent": "CONTRAST_AGENT", "dose region": "DOSE_REGION",
    "dose_region": "DOSE_REGION", "isocenter": "ISOCENTER", "registration": "REGISTRATION",
}
DEFAULT_COLOURS = {"EXTERNAL": (0, 255, 0), "PTV": (255, 0, 0), "CTV": (255, 128, 0), "GTV": (255, 0, 255),
                   "AVOIDANCE": (128, 128, 255), "SUPPORT": (160, 160, 160)}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element, name: str):
    return next((c for c in element if _local(c.tag) == name), None)


def _text(element, *path: str) -> str:
    for name in path:
        element = _child(element, name) if element is not None else None
    return (element.text or "").strip() if element is not None else ""


def _colour(structure, interpreted_type: str, where: str) -> tuple[int, int, int]:
    text = _text(structure, "Color") or structure.get("Color", "")
    match = re.fullmatch(r"RGB(\d{3})(\d{3})(\d{3})", text) or re.fullmatch(r"#([0-9A-Fa-f]{2})([0-9A-Fa-f]{2})([0-9A-Fa-f]{2})", text)
    if match:
        base = 10 if text.startswith("RGB") else 16
        colour = tuple(int(g, base) for g in match.groups())
        if not all(0 <= c <= 255 for c in colour):
            raise InputError(f"{where}: colour {text!r} is out of range")
        return colour
    argb = _text(structure, "DVHLineColor")
    if re.fullmatch(r"-?\d{1,11}", argb):
        value = int(argb) & 0xFFFFFFFF
        return ((value >> 16) & 255, (value >> 8) & 255, value & 255)
    return DEFAULT_COLOURS.get(interpreted_type, (255, 255, 0))


def read_structure_template(data: bytes) -> dict:
    """``{"name": template ID, "site": treatment site, "structures": [...]}`` from Eclipse XML bytes."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import ParseError, fromstring

    if len(data) > MAX_XML_BYTES:
        raise InputError(f"the structure template is larger than {MAX_XML_BYTES // 1024 // 1024} MiB")
    try:
        root = fromstring(data, forbid_dtd=True)
    except DefusedXmlException:
        raise InputError("the structure template declares a DTD or entities, which are refused") from None
    except ParseError as exc:
        raise InputError(f"the structure template is not well-formed XML ({exc})") from None
    if _local(root.tag) != "StructureTemplate":
        raise InputError(f"not an Eclipse structure template (root element <{_local(root.tag)}>)")
    preview = _child(root, "Preview")
    structures_element = _child(root, "Structures")
    if structures_element is None:
        raise InputError("the structure template has no <Structures>")
    items = [s for s in structures_element if _local(s.tag) == "Structure"]
    if not items:
        raise InputError("the structure template lists no structures")
    if len(items) > MAX_STRUCTURES:
        raise InputError(f"the structure template lists more than {MAX_STRUCTURES} structures")
    structures, seen = [], set()
    for index, item in enumerate(items, 1):
        structure_id = (item.get("ID") or "").strip()
        where = f"structure {index} ({structure_id or 'no ID'})"
        if not structure_id or len(structure_id) > 64 or not re.fullmatch(r"[\w.+\-~^ ]+", structure_id):
            raise InputError(f"{where}: the ID must be 1-64 letters, digits or _ . + - ~ ^")
        if structure_id.casefold() in seen:
            raise InputError(f"{where}: the ID appears twice")
        seen.add(structure_id.casefold())
        volume_type = _text(item, "Identification", "VolumeType") or "Organ"
        interpreted = VOLUME_TYPES.get(volume_type.casefold())
        if interpreted is None and volume_type.upper() in INTERPRETED_TYPES:
            interpreted = volume_type.upper()
        if interpreted is None:
            raise InputError(f"{where}: unknown VolumeType {volume_type!r}")
        structures.append({"key": structure_id, "name": structure_id, "observation_label": structure_id[:MAX_LABEL],
                           "color": list(_colour(item, interpreted, where)), "type": interpreted})
    return {"name": (preview.get("ID", "") if preview is not None else "").strip(),
            "site": (preview.get("TreatmentSite", "") if preview is not None else "").strip(),
            "structures": structures}
