"""Can a header be catalogued? Checked before a file is stored, on every source and every database.

SQLite stores a 65-character UID in a 64-character column without a word; PostgreSQL refuses it
(and any text with NUL) and, before this check, took the whole batch down with it. So the values
that *identify* rows — the UIDs and the Patient ID with its issuer — are checked here, the same
way whatever the database: longer than the catalog column (the DICOM maximum, 64), or holding NUL,
control, non-ASCII characters or a backslash (a multi-valued UID), and the file is ignored with
a reason that names the attribute (never its value). Descriptive text is not worth a refusal:
NUL characters are dropped from it (the catalog truncates it to its columns).

Column widths are the catalog's (``dicomflow.catalog.models``); a test keeps the two in step.
"""

from __future__ import annotations

from dicomflow.core.dicom.header import InstanceHeader

#: (attribute, header field, catalog column width)
UID_FIELDS = (
    ("SOP Instance UID", "sop_instance_uid", 64),
    ("SOP Class UID", "sop_class_uid", 64),
    ("Study Instance UID", "study_instance_uid", 64),
    ("Series Instance UID", "series_instance_uid", 64),
    ("Frame of Reference UID", "frame_of_reference_uid", 64),
    ("Transfer Syntax UID", "transfer_syntax_uid", 64),
)
ID_FIELDS = (
    ("Patient ID", "patient_id", 64),
    ("Issuer of Patient ID", "issuer_of_patient_id", 64),
)
#: UIDs inside the RT detail a row is keyed or joined on
_RT_UIDS = {
    "structure_set": ("referenced_frame_of_reference_uid", "referenced_series_uid"),
    "plan": ("referenced_structure_set_uid",),
    "dose": ("referenced_plan_uid",),
    "rt_image": ("referenced_plan_uid",),
}


def _bad_uid(value: str) -> bool:
    # printable ASCII without backslash; str methods keep this cheap on the hot path
    return not (value.isascii() and value.isprintable()) or "\\" in value


def refusal(header: InstanceHeader) -> str | None:
    """Why ``header`` cannot be catalogued, or None (then its descriptive text is NUL-free)."""
    for name, attr, width in UID_FIELDS:
        value = getattr(header, attr)
        if len(value) > width:
            return f"{name} is {len(value)} characters long; the catalog holds at most {width}"
        if value and _bad_uid(value):
            return f"{name} contains characters no UID may hold (NUL, control, non-ASCII or backslash)"
    for name, attr, width in ID_FIELDS:
        value = getattr(header, attr)
        if len(value) > width:
            return f"{name} is {len(value)} characters long; the catalog holds at most {width}"
        if value and not value.isprintable():
            return f"{name} contains NUL or control characters"
    for part, keys in _RT_UIDS.items():
        detail = getattr(header, part)
        if detail:
            for key in keys:
                value = detail.get(key) or ""
                if len(value) > 64 or (value and _bad_uid(value)):
                    return f"{key.replace('_', ' ')} is not a UID the catalog can hold"
    _drop_nul(header)
    return None


def _drop_nul(header: InstanceHeader) -> None:
    """Descriptive text with NUL (PostgreSQL refuses it): the NULs go, the text stays."""
    fields = vars(header)
    for key, value in fields.items():
        if type(value) is str and "\x00" in value:
            fields[key] = value.replace("\x00", "")
    for part in ("image", "structure_set", "plan", "dose", "rt_image"):
        detail = fields.get(part)
        if detail:
            _clean_dict(detail)


def _clean_dict(detail: dict) -> None:
    for key, value in detail.items():
        if type(value) is str and "\x00" in value:
            detail[key] = value.replace("\x00", "")
        elif type(value) is list:
            for item in value:
                if type(item) is dict:
                    _clean_dict(item)
