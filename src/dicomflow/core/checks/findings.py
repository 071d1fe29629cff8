"""Findings: what every check returns — a severity, a stable code and a message a user can act on.

Codes are stable strings (scripts and stored results rely on them); messages never contain
identifying values (names, IDs, dates, UIDs), only attribute keywords/tags, counts and positions.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Iterable


class Severity(StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class Code(StrEnum):
    # completeness
    COMPLETENESS_NO_GEOMETRY = "COMPLETENESS_NO_GEOMETRY"
    COMPLETENESS_MISSING_SLICES = "COMPLETENESS_MISSING_SLICES"
    COMPLETENESS_DUPLICATE_POSITIONS = "COMPLETENESS_DUPLICATE_POSITIONS"
    COMPLETENESS_INCONSISTENT_SPACING = "COMPLETENESS_INCONSISTENT_SPACING"
    COMPLETENESS_INCONSISTENT_ORIENTATION = "COMPLETENESS_INCONSISTENT_ORIENTATION"
    COMPLETENESS_INCONSISTENT_PIXEL_SPACING = "COMPLETENESS_INCONSISTENT_PIXEL_SPACING"
    COMPLETENESS_INCONSISTENT_MATRIX = "COMPLETENESS_INCONSISTENT_MATRIX"
    COMPLETENESS_SINGLE_SLICE = "COMPLETENESS_SINGLE_SLICE"
    COMPLETENESS_INSTANCE_NUMBER_GAP = "COMPLETENESS_INSTANCE_NUMBER_GAP"
    # validity
    VALIDITY_MISSING_TYPE1 = "VALIDITY_MISSING_TYPE1"
    VALIDITY_EMPTY_TYPE1 = "VALIDITY_EMPTY_TYPE1"
    VALIDITY_MISSING_TYPE2 = "VALIDITY_MISSING_TYPE2"
    VALIDITY_MALFORMED_UID = "VALIDITY_MALFORMED_UID"
    VALIDITY_MALFORMED_DATE = "VALIDITY_MALFORMED_DATE"
    VALIDITY_MALFORMED_TIME = "VALIDITY_MALFORMED_TIME"
    VALIDITY_MALFORMED_DATETIME = "VALIDITY_MALFORMED_DATETIME"
    VALIDITY_MALFORMED_INTEGER = "VALIDITY_MALFORMED_INTEGER"
    VALIDITY_MALFORMED_DECIMAL = "VALIDITY_MALFORMED_DECIMAL"
    VALIDITY_MALFORMED_CODE_STRING = "VALIDITY_MALFORMED_CODE_STRING"
    VALIDITY_UNKNOWN_SOP_CLASS = "VALIDITY_UNKNOWN_SOP_CLASS"
    # consistency
    CONSISTENCY_PATIENT_ID = "CONSISTENCY_PATIENT_ID"
    CONSISTENCY_PATIENT_NAME = "CONSISTENCY_PATIENT_NAME"
    CONSISTENCY_PATIENT_SEX = "CONSISTENCY_PATIENT_SEX"
    CONSISTENCY_PATIENT_BIRTH_DATE = "CONSISTENCY_PATIENT_BIRTH_DATE"
    # sanity
    SANITY_SEX_CONFLICT = "SANITY_SEX_CONFLICT"
    SANITY_BIRTH_DATE_CONFLICT = "SANITY_BIRTH_DATE_CONFLICT"
    SANITY_INCONSISTENT = "SANITY_INCONSISTENT"
    SANITY_NOT_VERIFIABLE = "SANITY_NOT_VERIFIABLE"
    # RT QC
    RTQC_EMPTY_ROI = "RTQC_EMPTY_ROI"
    RTQC_CONTOUR_OUTSIDE_IMAGE = "RTQC_CONTOUR_OUTSIDE_IMAGE"
    RTQC_REFERENCED_IMAGES_ABSENT = "RTQC_REFERENCED_IMAGES_ABSENT"
    RTQC_REFERENCED_SERIES_ABSENT = "RTQC_REFERENCED_SERIES_ABSENT"
    RTQC_FRAME_OF_REFERENCE_MISMATCH = "RTQC_FRAME_OF_REFERENCE_MISMATCH"
    RTQC_DOSE_GRID_NOT_COVERING = "RTQC_DOSE_GRID_NOT_COVERING"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: Code
    message: str

    def as_dict(self) -> dict:
        return {"severity": self.severity.value, "code": self.code.value, "message": self.message}

    @classmethod
    def from_dict(cls, data: dict) -> "Finding":
        return cls(Severity(data["severity"]), Code(data["code"]), data["message"])


_SEVERITY_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


def merge(findings: Iterable[Finding]) -> list[Finding]:
    """Collapse repeats (the same finding from many instances) into one with a count, worst first."""
    counts = Counter(findings)
    merged = [
        f if n == 1 else Finding(f.severity, f.code, f"{f.message} ({n} instances)") for f, n in counts.items()
    ]
    return sorted(merged, key=lambda f: (_SEVERITY_ORDER[f.severity], f.code.value, f.message))


def worst(findings: Iterable[Finding]) -> Severity | None:
    ranked = sorted((f.severity for f in findings), key=_SEVERITY_ORDER.__getitem__)
    return ranked[0] if ranked else None
