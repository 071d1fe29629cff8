"""Profile options of a de-identification (PS3.15 E.3), as one picklable, JSON-able value.

A research project stores one ``Options``; workers receive it with the key. Defaults are those of a
new project: Basic Profile + Retain Longitudinal Temporal Information with Modified Dates (keyed
shift) + Clean Descriptors (RT needs ROI names and labels cleaned, not blanked).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from dicomflow.errors import InputError

# DICOM DCM codes for De-identification Method Code Sequence (CID 7050).
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
OPTION_CODES = {
    "clean_graphics": ("113103", "Clean Graphics Option"),
    "clean_structured_content": ("113104", "Clean Structured Content Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "retain_long_full_dates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "retain_long_modified_dates": (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
}
# Option field -> column of the standard's table it switches on.
OPTION_COLUMNS = {
    "retain_safe_private": "rtnSafePrivOpt",
    "retain_uids": "rtnUIDsOpt",
    "retain_device_identity": "rtnDevIdOpt",
    "retain_institution_identity": "rtnInstIdOpt",
    "retain_patient_characteristics": "rtnPatCharsOpt",
    "retain_long_full_dates": "rtnLongFullDatesOpt",
    "retain_long_modified_dates": "rtnLongModifDatesOpt",
    "clean_descriptors": "cleanDescOpt",
    "clean_structured_content": "cleanStructContOpt",
    "clean_graphics": "cleanGraphOpt",
}
_UID_ROOT = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


@dataclass(frozen=True)
class Options:
    """What to keep, clean or change beyond the Basic Profile, and how pseudonyms look."""

    retain_safe_private: bool = False
    retain_uids: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_patient_characteristics: bool = False
    retain_long_full_dates: bool = False
    retain_long_modified_dates: bool = True
    clean_descriptors: bool = True
    clean_structured_content: bool = False
    clean_graphics: bool = False
    # Burned-in annotation (or SC/US without a statement) is quarantined unless this is set.
    allow_burned_in: bool = False
    # New UIDs are "2.25.<int>" (None) or "<uid_root>.<int>", at most 64 characters.
    uid_root: str | None = None
    # Keyed per-subject date shift, in days, inclusive range.
    date_shift_days: tuple[int, int] = (-365, -30)
    # Public tags unknown to the data dictionary: "remove" or "keep".
    unknown_public: str = "remove"
    # Extra safe private attributes: (private creator, group, element low byte), used with
    # retain_safe_private in addition to the built-in list.
    safe_private: tuple[tuple[str, int, int], ...] = field(default_factory=tuple)
    # Prefix of keyed patient pseudonyms (PatientID and PatientName).
    pseudonym_prefix: str = "DF"
    # Cleaned free text (RT labels, descriptors): "clean" drops identifying words, "allowlist"
    # keeps only words of the shipped vocabulary (core/deid/vocabulary.txt) and short numbers.
    free_text: str = "clean"
    # Pixel Data bits above Bits Stored that carry an overlay: "mask" (set to zero, or to the
    # sign extension) or "quarantine" the object.
    overlay_bits: str = "mask"

    def __post_init__(self) -> None:
        if self.retain_long_full_dates and self.retain_long_modified_dates:
            raise InputError(
                "choose one of 'retain_long_full_dates' and 'retain_long_modified_dates', not both"
            )
        lo, hi = self.date_shift_days
        if lo > hi:
            raise InputError("date_shift_days must be (low, high) with low <= high")
        if self.uid_root is not None and (not _UID_ROOT.match(self.uid_root) or len(self.uid_root) > 40):
            raise InputError("uid_root must be a dotted numeric UID root of at most 40 characters")
        if self.unknown_public not in ("remove", "keep"):
            raise InputError("unknown_public must be 'remove' or 'keep'")
        if self.free_text not in ("clean", "allowlist"):
            raise InputError("free_text must be 'clean' or 'allowlist'")
        if self.overlay_bits not in ("mask", "quarantine"):
            raise InputError("overlay_bits must be 'mask' or 'quarantine'")
        if not re.fullmatch(r"[A-Z0-9_]{0,8}", self.pseudonym_prefix):
            raise InputError("pseudonym_prefix must be up to 8 characters A-Z, 0-9 or _")

    @property
    def active_columns(self) -> frozenset[str]:
        """The option columns of PS3.15 Table E.1-1 that apply."""
        return frozenset(col for name, col in OPTION_COLUMNS.items() if getattr(self, name))

    def method_codes(self) -> list[tuple[str, str]]:
        """(code value, meaning) of the profile and every option used, for the Code Sequence."""
        codes = [BASIC_PROFILE_CODE]
        codes += [OPTION_CODES[name] for name in OPTION_CODES if getattr(self, name)]
        return codes

    def method_description(self) -> list[str]:
        """Values of De-identification Method (LO, each at most 64 characters)."""
        return ["dicomflow PS3.15 Basic Profile"] + [
            meaning.removesuffix(" Option")[:64] for code, meaning in self.method_codes()[1:]
        ]

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["date_shift_days"] = list(self.date_shift_days)
        data["safe_private"] = [list(x) for x in self.safe_private]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Options:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown de-identification option(s): {', '.join(sorted(unknown))}")
        values = dict(data)
        if "date_shift_days" in values:
            values["date_shift_days"] = tuple(int(x) for x in values["date_shift_days"])
        if "safe_private" in values:
            values["safe_private"] = tuple((str(c), int(g), int(e)) for c, g, e in values["safe_private"])
        return cls(**values)


DEFAULT_OPTIONS = Options()
