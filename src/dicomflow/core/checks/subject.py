"""Patient-level checks: consistency within a study, and sanity against the expected subject.

Consistency: every instance of a study must name the same patient (ID, name, sex, birth date);
a mix means files of two patients were merged. Sanity: the headers are compared with what the
project expects for the subject (sex, birth date or only birth year) and give one of
MATCHES / CONFLICT / INCONSISTENT. A user may override the result; the catalog stores the override
with its reason — this module only computes. Messages never contain the values compared.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Iterable

from dicomflow.core.checks.findings import Code, Finding, Severity


@dataclass(frozen=True)
class PatientHeader:
    """The patient attributes of one instance (from a header or a catalog row)."""

    study_instance_uid: str
    patient_id: str = ""
    patient_name: str = ""
    patient_sex: str = ""
    patient_birth_date: str = ""


def patient_header_from_dataset(ds: Any) -> PatientHeader:
    def text(keyword: str) -> str:
        return str(getattr(ds, keyword, "") or "").strip()

    return PatientHeader(
        text("StudyInstanceUID"),
        text("PatientID"),
        text("PatientName"),
        text("PatientSex").upper(),
        text("PatientBirthDate"),
    )


_CONSISTENCY = [
    ("patient_id", "PatientID", Code.CONSISTENCY_PATIENT_ID, Severity.ERROR),
    ("patient_name", "PatientName", Code.CONSISTENCY_PATIENT_NAME, Severity.WARNING),
    ("patient_sex", "PatientSex", Code.CONSISTENCY_PATIENT_SEX, Severity.ERROR),
    ("patient_birth_date", "PatientBirthDate", Code.CONSISTENCY_PATIENT_BIRTH_DATE, Severity.ERROR),
]


def check_consistency(headers: Iterable[PatientHeader]) -> dict[str, list[Finding]]:
    """Findings per Study Instance UID where instances disagree on who the patient is.

    Name differences are a WARNING (spelling and caret conventions vary between systems);
    ID, sex and birth date differences are ERRORs.
    """
    values: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for h in headers:
        for attr, *_ in _CONSISTENCY:
            values[h.study_instance_uid][attr].add(getattr(h, attr))
    out: dict[str, list[Finding]] = {}
    for study, per_attr in values.items():
        findings = []
        for attr, keyword, code, severity in _CONSISTENCY:
            distinct = per_attr[attr]
            if len(distinct) > 1:
                findings.append(
                    Finding(
                        severity,
                        code,
                        f"Instances of this study carry {len(distinct)} different {keyword} values; "
                        "check whether files of different patients were mixed before using the study.",
                    )
                )
        out[study] = findings
    return out


class SanityStatus(StrEnum):
    MATCHES = "MATCHES"  # nothing contradicts the expected subject
    CONFLICT = "CONFLICT"  # headers agree among themselves but differ from the expected subject
    INCONSISTENT = "INCONSISTENT"  # headers disagree among themselves on a compared attribute


@dataclass(frozen=True)
class ExpectedSubject:
    """What the project knows about the subject; any field may be unknown (None)."""

    sex: str | None = None  # M / F / O
    birth_date: str | None = None  # YYYYMMDD
    birth_year: int | None = None  # when only the year is known


@dataclass
class SanityResult:
    status: SanityStatus
    findings: list[Finding] = field(default_factory=list)
    compared: list[str] = field(default_factory=list)  # attribute keywords actually compared

    def as_dict(self) -> dict:
        return {
            "status": self.status.value,
            "compared": self.compared,
            "findings": [f.as_dict() for f in self.findings],
        }


def check_sanity(headers: Iterable[PatientHeader], expected: ExpectedSubject) -> SanityResult:
    """Compare the headers of one subject's data with the expected subject.

    INCONSISTENT wins over CONFLICT (the data itself is unreliable); a compared attribute that is
    empty in every header cannot confirm anything and gives a SANITY_NOT_VERIFIABLE warning.
    """
    headers = list(headers)
    checks = []
    if expected.sex:
        checks.append(("PatientSex", [h.patient_sex.upper() for h in headers], expected.sex.strip().upper(), Code.SANITY_SEX_CONFLICT))
    if expected.birth_date:
        checks.append(("PatientBirthDate", [h.patient_birth_date for h in headers], expected.birth_date.strip(), Code.SANITY_BIRTH_DATE_CONFLICT))
    elif expected.birth_year is not None:
        checks.append(
            ("PatientBirthDate", [h.patient_birth_date[:4] for h in headers], f"{int(expected.birth_year):04d}", Code.SANITY_BIRTH_DATE_CONFLICT)
        )
    result = SanityResult(SanityStatus.MATCHES)
    inconsistent = conflict = False
    for keyword, observed, want, code in checks:
        result.compared.append(keyword)
        present = {v for v in observed if v}
        if not present:
            result.findings.append(
                Finding(
                    Severity.WARNING,
                    Code.SANITY_NOT_VERIFIABLE,
                    f"{keyword} is empty in every instance; the subject cannot be verified on it.",
                )
            )
        elif len(set(observed)) > 1:
            inconsistent = True
            result.findings.append(
                Finding(
                    Severity.ERROR,
                    Code.SANITY_INCONSISTENT,
                    f"Instances disagree on {keyword} ({len(set(observed))} different values); "
                    "sort out the files before assigning them to the subject.",
                )
            )
        elif want not in present:
            conflict = True
            result.findings.append(
                Finding(
                    Severity.ERROR,
                    code,
                    f"{keyword} in the data differs from the expected subject; check that the data belongs "
                    "to this subject, or override with a reason.",
                )
            )
    if inconsistent:
        result.status = SanityStatus.INCONSISTENT
    elif conflict:
        result.status = SanityStatus.CONFLICT
    return result
