"""RT quality control across objects: frames of reference, empty ROIs, contours vs image and dose grid.

Works on the RT graph (which series belongs to which) plus small per-object summaries — ROI point
clouds of structure sets and the dose grid boxes — so it runs the same on files and catalog rows.
Findings are keyed by the series they concern (structure set, plan or dose).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from dicomflow.core.checks.findings import Code, Finding, Severity
from dicomflow.core.checks.geometry import Box
from dicomflow.core.rt import InstanceRef, RefKind, RTGraph


@dataclass(frozen=True, eq=False)
class RoiSummary:
    number: int | None
    frame_of_reference_uid: str | None
    contour_count: int
    points: np.ndarray  # (N, 3) float32, patient coordinates (mm)


@dataclass(frozen=True, eq=False)
class StructureSetSummary:
    rois: tuple[RoiSummary, ...]


def structure_set_summary(ds: Any) -> StructureSetSummary:
    """ROIs of an RTSTRUCT with their contour points (no pixel data involved)."""
    declared: dict[int | None, str | None] = {}
    for roi in getattr(ds, "StructureSetROISequence", None) or []:
        number = _int(getattr(roi, "ROINumber", None))
        declared[number] = str(getattr(roi, "ReferencedFrameOfReferenceUID", "") or "") or None
    contours: dict[int | None, list[np.ndarray]] = defaultdict(list)
    for roi_contour in getattr(ds, "ROIContourSequence", None) or []:
        number = _int(getattr(roi_contour, "ReferencedROINumber", None))
        for contour in getattr(roi_contour, "ContourSequence", None) or []:
            pts = _contour_points(contour)
            if pts is not None and len(pts) >= 3:
                    contours[number].append(pts[: len(pts) // 3 * 3].reshape(-1, 3))
    rois = []
    for number in dict.fromkeys([*declared, *contours]):
        parts = contours.get(number, [])
        points = np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.float32)
        rois.append(RoiSummary(number, declared.get(number), len(parts), points))
    return StructureSetSummary(tuple(rois))


def _contour_points(contour: Any) -> np.ndarray | None:
    """Contour Data as floats, parsed from the raw bytes when still raw (pydicom's per-value DS
    objects would cost seconds on a large structure set)."""
    if "ContourData" not in contour:
        return None
    elem = contour.get_item("ContourData")
    value = elem.value
    try:
        if isinstance(value, (bytes, bytearray)):
            text = bytes(value).strip(b"\x00 ")
            return np.array(text.split(b"\\"), dtype=np.float64).astype(np.float32) if text else None
        return np.asarray([float(v) for v in value], dtype=np.float32) if value else None
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, eq=False)
class DoseGrid:
    frame_of_reference_uid: str | None
    box: Box


def _frames(graph: RTGraph, uid: str) -> set[str]:
    return graph.series[uid].frame_of_reference_uids


def _mismatch(kind: str, other: str) -> Finding:
    return Finding(
        Severity.ERROR,
        Code.RTQC_FRAME_OF_REFERENCE_MISMATCH,
        f"The {kind} and the {other} it depends on are in different frames of reference; "
        "they cannot be overlaid without a registration.",
    )


def check_rt(
    graph: RTGraph,
    instances: list[InstanceRef],
    structure_sets: dict[str, list[StructureSetSummary]],
    doses: dict[str, list[DoseGrid]],
    volumes: dict[str, Box],
) -> dict[str, list[Finding]]:
    """RT QC findings per series UID.

    ``structure_sets`` and ``doses`` map series UIDs to their summaries; ``volumes`` maps image
    series UIDs to the box their slices cover.
    """
    out: dict[str, list[Finding]] = defaultdict(list)
    present = {i.sop_instance_uid for i in instances}
    by_series: dict[str, list[InstanceRef]] = defaultdict(list)
    for inst in instances:
        by_series[inst.series_instance_uid].append(inst)

    for uid, node in graph.series.items():
        targets = [graph.series[t] for t in sorted(node.references)]
        if node.modality == "RTSTRUCT":
            out[uid].extend(_structure_set_checks(graph, uid, by_series[uid], present, structure_sets.get(uid, []), volumes))
        elif node.modality == "RTPLAN" and node.frame_of_reference_uids:
            for target in targets:
                if target.frame_of_reference_uids and not (target.frame_of_reference_uids & node.frame_of_reference_uids):
                    out[uid].append(_mismatch("plan", "structure set" if target.modality == "RTSTRUCT" else "image series"))
        elif node.modality == "RTDOSE":
            out[uid].extend(_dose_checks(graph, uid, doses.get(uid, []), structure_sets))
    return {uid: sorted(set(f), key=lambda f: (f.code.value, f.message)) for uid, f in out.items() if f}


def _structure_set_checks(graph, uid, insts, present, summaries, volumes) -> list[Finding]:
    findings = []
    node = graph.series[uid]
    if node.missing_references:
        findings.append(
            Finding(
                Severity.ERROR,
                Code.RTQC_REFERENCED_SERIES_ABSENT,
                f"The structure set references {len(node.missing_references)} image series or instance(s) that are "
                "not present; add the planning images or the contours cannot be checked or used.",
            )
        )
    absent = {
        r.uid
        for inst in insts
        for r in inst.refs(RefKind.IMAGE)
        if r.uid not in present and (r.series_uid is None or r.series_uid in graph.series)
        and (r.series_uid or r.uid) not in node.missing_references
    }
    if absent:
        findings.append(
            Finding(
                Severity.WARNING,
                Code.RTQC_REFERENCED_IMAGES_ABSENT,
                f"The structure set references {len(absent)} image instance(s) that are not present although their "
                "series is; the image series is incomplete or a different version of it was exported.",
            )
        )
    images = [graph.series[t] for t in sorted(node.references) if graph.series[t].is_volume]
    for image in images:
        if image.frame_of_reference_uids and node.frame_of_reference_uids and not (
            image.frame_of_reference_uids & node.frame_of_reference_uids
        ):
            findings.append(_mismatch("structure set", "image series"))
    for summary in summaries:
        for roi in summary.rois:
            label = f"ROI number {roi.number}" if roi.number is not None else "An ROI without number"
            if roi.contour_count == 0 or len(roi.points) == 0:
                findings.append(
                    Finding(Severity.WARNING, Code.RTQC_EMPTY_ROI, f"{label} has no contour; delete it or draw it before use.")
                )
                continue
            for image in images:
                box = volumes.get(image.uid)
                if box is None:
                    continue
                if roi.frame_of_reference_uid and image.frame_of_reference_uids and roi.frame_of_reference_uid not in image.frame_of_reference_uids:
                    continue
                outside = int(box.outside(roi.points).sum())
                if outside:
                    findings.append(
                        Finding(
                            Severity.WARNING,
                            Code.RTQC_CONTOUR_OUTSIDE_IMAGE,
                            f"{label} has {outside} of {len(roi.points)} contour points outside the image volume; "
                            "the contour or the image series is wrong.",
                        )
                    )
    return findings


def _dose_checks(graph, uid, grids, structure_sets) -> list[Finding]:
    findings = []
    node = graph.series[uid]
    related = [graph.series[s] for s in graph.closure(uid) if s != uid]
    for other in related:
        if other.modality in {"RTPLAN", "RTSTRUCT"} or other.is_volume:
            if other.frame_of_reference_uids and node.frame_of_reference_uids and not (
                other.frame_of_reference_uids & node.frame_of_reference_uids
            ):
                kind = {"RTPLAN": "plan", "RTSTRUCT": "structure set"}.get(other.modality, "image series")
                findings.append(_mismatch("dose", kind))
    for other in related:
        if other.modality != "RTSTRUCT":
            continue
        for summary in structure_sets.get(other.uid, []):
            for roi in summary.rois:
                if len(roi.points) == 0:
                    continue
                for grid in grids:
                    if roi.frame_of_reference_uid and grid.frame_of_reference_uid and roi.frame_of_reference_uid != grid.frame_of_reference_uid:
                        continue
                    outside = int(grid.box.outside(roi.points).sum())
                    if outside:
                        findings.append(
                            Finding(
                                Severity.WARNING,
                                Code.RTQC_DOSE_GRID_NOT_COVERING,
                                f"The dose grid does not cover ROI number {roi.number}: {outside} of {len(roi.points)} "
                                "contour points lie outside it; dose statistics for it would be wrong.",
                            )
                        )
    return findings
