"""Data checks before anything is used: completeness, validity, consistency, sanity, RT QC.

Every check returns :class:`Finding` objects (severity, stable code, actionable message without
identifying values). :func:`check_path` runs them all on a folder (headers only);
:func:`run_checks` runs them on :class:`InstanceRecord` objects, which the catalog can build too.
"""

from dicomflow.core.checks.completeness import CompletenessResult, check_completeness
from dicomflow.core.checks.findings import Code, Finding, Severity, merge
from dicomflow.core.checks.geometry import Box, SliceGeometry, dose_box, slices_from_dataset, volume_box
from dicomflow.core.checks.rtqc import DoseGrid, RoiSummary, StructureSetSummary, check_rt, structure_set_summary
from dicomflow.core.checks.runner import (
    InstanceRecord,
    SeriesReport,
    check_path,
    record_from_dataset,
    run_checks,
    sanity_for,
)
from dicomflow.core.checks.subject import (
    ExpectedSubject,
    PatientHeader,
    SanityResult,
    SanityStatus,
    check_consistency,
    check_sanity,
    patient_header_from_dataset,
)
from dicomflow.core.checks.validity import MODULES_BY_SOP_CLASS, check_validity

__all__ = [
    "MODULES_BY_SOP_CLASS",
    "Box",
    "Code",
    "CompletenessResult",
    "DoseGrid",
    "ExpectedSubject",
    "Finding",
    "InstanceRecord",
    "PatientHeader",
    "RoiSummary",
    "SanityResult",
    "SanityStatus",
    "SeriesReport",
    "Severity",
    "SliceGeometry",
    "StructureSetSummary",
    "check_completeness",
    "check_consistency",
    "check_path",
    "check_rt",
    "check_sanity",
    "check_validity",
    "dose_box",
    "merge",
    "patient_header_from_dataset",
    "record_from_dataset",
    "run_checks",
    "sanity_for",
    "slices_from_dataset",
    "structure_set_summary",
    "volume_box",
]
