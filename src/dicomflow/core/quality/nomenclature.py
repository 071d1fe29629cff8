"""Structure names and types as radiotherapy expects them.

Names follow AAPM TG-263 (standardized nomenclature for radiation therapy): the nomenclature is
the one the ``tg263`` package ships (709 structures with its target, PRV and derived name rules),
so templates are checked against the published list, not against a list typed in here. RT ROI
Interpreted Types are the defined terms of DICOM PS3.3 C.8.8.8.
"""

from __future__ import annotations

from functools import lru_cache

# PS3.3 C.8.8.8 RT ROI Observations: RT ROI Interpreted Type (3006,00A4) defined terms
INTERPRETED_TYPES = (
    "EXTERNAL", "PTV", "CTV", "GTV", "TREATED_VOLUME", "IRRAD_VOLUME", "OAR", "BOLUS", "AVOIDANCE",
    "ORGAN", "MARKER", "REGISTRATION", "ISOCENTER", "CONTRAST_AGENT", "CAVITY", "BRACHY_CHANNEL",
    "BRACHY_ACCESSORY", "BRACHY_SRC_APP", "BRACHY_CHNL_SHLD", "SUPPORT", "FIXATION", "DOSE_REGION",
    "CONTROL", "DOSE_MEASUREMENT",
)
MAX_LABEL = 16  # ROI Observation Label (3006,0085) is SH: 16 characters


@lru_cache(maxsize=4096)
def is_tg263_name(name: str) -> bool:
    """True when ``name`` is a TG-263 structure name (anatomic, target, PRV or derived form)."""
    from tg263.structures import is_structure_name_allowed  # 0.3 s of regex compilation: only when asked

    return bool(name) and is_structure_name_allowed(name)


def tg263_entry(name: str) -> dict | None:
    """The TG-263 entry a name matches: primary name, target type, category, FMA id; or None."""
    from tg263.exceptions import StructureNameNotAllowedException
    from tg263.structures import find_structure

    try:
        entry = find_structure(name)
    except StructureNameNotAllowedException:
        return None
    return {"primary_name": entry.primary_name.strip(), "target_type": entry.target_type,
            "major_category": entry.major_category, "fma_id": entry.fmaid, "description": entry.description}


def structure_problems(name: str, label: str | None, interpreted_type: str) -> list[str]:
    """What is wrong with one structure of a template (empty list: nothing)."""
    problems = []
    if not is_tg263_name(name):
        problems.append(f"'{name}' is not a TG-263 structure name")
    if label is not None and not 0 < len(label) <= MAX_LABEL:
        problems.append(f"label of '{name}' must be 1 to {MAX_LABEL} characters")
    if interpreted_type not in INTERPRETED_TYPES:
        problems.append(f"type of '{name}' must be an RT ROI Interpreted Type ({', '.join(INTERPRETED_TYPES)})")
    return problems
