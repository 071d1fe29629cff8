"""Run every check over a set of instances and report per series (the ``dicomflow check`` document).

Each instance is reduced to an :class:`InstanceRecord` as soon as its header is read (in a worker
process for large folders): references, patient attributes, slice geometry, its own validity
findings, and for RT objects a structure-set or dose-grid summary. The catalog can build the same
records from its rows, so stored data is checked by the same code.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from dicomflow.core.checks.completeness import check_completeness
from dicomflow.core.checks.findings import Finding, merge
from dicomflow.core.checks.geometry import SliceGeometry, dose_box, slices_from_dataset, volume_box
from dicomflow.core.checks.rtqc import DoseGrid, StructureSetSummary, check_rt, structure_set_summary
from dicomflow.core.checks.subject import (
    ExpectedSubject,
    PatientHeader,
    SanityResult,
    check_consistency,
    check_sanity,
    patient_header_from_dataset,
)
from dicomflow.core.checks.validity import check_validity
from dicomflow.core.rt import InstanceRef, RTGraph, instance_from_dataset, scan


#: Modalities whose series must be slice stacks: without plane geometry they are incomplete.
CROSS_SECTIONAL = frozenset({"CT", "MR", "PT"})


@dataclass(eq=False)
class InstanceRecord:
    ref: InstanceRef
    patient: PatientHeader
    slices: tuple[SliceGeometry, ...] = ()
    validity: tuple[Finding, ...] = ()
    structure_set: StructureSetSummary | None = None
    dose_grid: DoseGrid | None = None


def record_from_dataset(ds: Any, path: str | None = None) -> InstanceRecord:
    """Everything the checks need from one header; validity runs first, on untouched raw values."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        validity = tuple(check_validity(ds))
        ref = instance_from_dataset(ds, path)
        record = InstanceRecord(ref, patient_header_from_dataset(ds), validity=validity)
        if ref.modality == "RTSTRUCT":
            record.structure_set = structure_set_summary(ds)
        elif ref.modality == "RTDOSE":
            box = dose_box(ds)
            if box is not None:
                record.dose_grid = DoseGrid(ref.frame_of_reference_uid, box)
        elif ref.modality not in {"RTPLAN", "RTIMAGE"}:
            record.slices = tuple(slices_from_dataset(ds))
    return record


@dataclass
class SeriesReport:
    uid: str
    modality: str
    complete: bool | None
    missing_slices: list[float] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    study_uid: str = ""
    instances: int = 0

    def as_dict(self) -> dict:
        return {
            "uid": self.uid,
            "modality": self.modality,
            "complete": self.complete,
            "missing_slices": self.missing_slices,
            "findings": [f.as_dict() for f in self.findings],
            "study_uid": self.study_uid,
            "instances": self.instances,
        }


def run_checks(records: Iterable[InstanceRecord]) -> list[SeriesReport]:
    """All checks over the given instances; one report per series, in a stable order."""
    records = list(records)
    graph = RTGraph.from_instances(r.ref for r in records)
    by_series: dict[str, list[InstanceRecord]] = defaultdict(list)
    for r in records:
        by_series[r.ref.series_instance_uid].append(r)
    consistency = check_consistency(r.patient for r in records)

    reports: dict[str, SeriesReport] = {}
    volumes = {}
    for uid, members in by_series.items():
        node = graph.series[uid]
        slices = [s for r in members for s in r.slices]
        report = SeriesReport(uid, node.modality, None, study_uid=node.study_uid, instances=len(members))
        findings: list[Finding] = [f for r in members for f in r.validity]
        if node.is_volume and slices and (
            node.modality in CROSS_SECTIONAL or any(s.position is not None for s in slices)
        ):
            result = check_completeness(slices)
            report.complete = result.complete
            report.missing_slices = result.missing_positions
            findings.extend(result.findings)
            box = volume_box(slices)
            if box is not None:
                volumes[uid] = box
        findings.extend(consistency.get(node.study_uid, []))
        report.findings = findings
        reports[uid] = report

    structure_sets = {
        uid: [r.structure_set for r in members if r.structure_set is not None] for uid, members in by_series.items()
    }
    doses = {uid: [r.dose_grid for r in members if r.dose_grid is not None] for uid, members in by_series.items()}
    for uid, findings in check_rt(graph, [r.ref for r in records], structure_sets, doses, volumes).items():
        reports[uid].findings.extend(findings)
    for report in reports.values():
        report.findings = merge(report.findings)
    order = {"RTSTRUCT": 1, "RTPLAN": 2, "RTDOSE": 3, "RTIMAGE": 3}
    return sorted(reports.values(), key=lambda r: (r.study_uid, order.get(r.modality, 0), r.uid))


def check_path(path: str | os.PathLike, workers: int | None = None) -> tuple[list[SeriesReport], list[str]]:
    """Check every DICOM file below ``path``; returns the reports and the skipped (non-DICOM) paths."""
    result = scan(path, record_from_dataset, workers)
    return run_checks(result.records), result.skipped


def sanity_for(records: Iterable[InstanceRecord], expected: ExpectedSubject) -> SanityResult:
    return check_sanity((r.patient for r in records), expected)
