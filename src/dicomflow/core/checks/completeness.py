"""Completeness of an image stack: ordered along the slice normal, no gaps, no duplicates, one geometry.

Slices are placed by the projection of Image Position (Patient) on the normal of Image Orientation
(Patient) — so oblique stacks work like axial ones — and never by Instance Number or Slice Location
(instance-number gaps are only an INFO hint). The nominal spacing is the median of the steps no
larger than 1.5× the smallest one, so a few missing slices do not distort it; a step that is a
multiple k ≥ 2 of it means k−1 missing slices, whose positions (mm along the normal) are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dicomflow.core.checks.findings import Code, Finding, Severity
from dicomflow.core.checks.geometry import SliceGeometry

#: Positions closer than this (mm) are the same position.
DUPLICATE_TOLERANCE_MM = 0.01
#: A step may deviate this much (relative to the spacing, with an absolute floor) and still be regular.
SPACING_TOLERANCE = 0.02
SPACING_TOLERANCE_MM = 0.02
ORIENTATION_TOLERANCE = 1e-3
PIXEL_SPACING_TOLERANCE_MM = 1e-3


@dataclass
class CompletenessResult:
    complete: bool
    missing_positions: list[float] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    spacing: float | None = None
    slice_count: int = 0


def _fmt(values: list[float], limit: int = 10) -> str:
    shown = ", ".join(f"{v:.2f}" for v in values[:limit])
    return shown + (f", … ({len(values)} in all)" if len(values) > limit else "")


def _geometry_consistency(slices: list[SliceGeometry]) -> list[Finding]:
    findings = []
    orientations = np.array([s.orientation for s in slices], dtype=float)
    if np.any(np.abs(orientations - orientations[0]) > ORIENTATION_TOLERANCE):
        n = len({tuple(np.round(o, 3)) for o in orientations})
        findings.append(
            Finding(
                Severity.ERROR,
                Code.COMPLETENESS_INCONSISTENT_ORIENTATION,
                f"Slices have {n} different ImageOrientationPatient values; the series is not one stack "
                "(split it or remove localizer/other-plane images before use).",
            )
        )
    spacings = {s.pixel_spacing for s in slices if s.pixel_spacing}
    if len(spacings) > 1 and np.ptp(np.array(sorted(spacings)), axis=0).max() > PIXEL_SPACING_TOLERANCE_MM:
        findings.append(
            Finding(
                Severity.ERROR,
                Code.COMPLETENESS_INCONSISTENT_PIXEL_SPACING,
                f"Slices have {len(spacings)} different PixelSpacing values; they cannot be stacked into one volume.",
            )
        )
    matrices = {(s.rows, s.columns) for s in slices}
    if len(matrices) > 1:
        findings.append(
            Finding(
                Severity.ERROR,
                Code.COMPLETENESS_INCONSISTENT_MATRIX,
                f"Slices have {len(matrices)} different matrix sizes (Rows x Columns); they cannot be stacked into one volume.",
            )
        )
    return findings


def _instance_number_hint(slices: list[SliceGeometry], order: np.ndarray) -> list[Finding]:
    if any(s.frame is not None for s in slices):
        return []  # frames of one instance share its number
    numbers = [slices[i].instance_number for i in order]
    if None in numbers:
        return []
    steps = np.abs(np.diff(numbers))
    if len(steps) and np.any(steps > 1):
        return [
            Finding(
                Severity.INFO,
                Code.COMPLETENESS_INSTANCE_NUMBER_GAP,
                f"InstanceNumber jumps {int(np.sum(steps > 1))} time(s) along the stack; this is only a hint "
                "(numbering may be sparse), slice positions decide completeness.",
            )
        ]
    return []


def check_completeness(slices: list[SliceGeometry]) -> CompletenessResult:
    """Check one image series given the geometry of all its slices (or frames)."""
    if not slices:
        return CompletenessResult(
            False,
            findings=[Finding(Severity.ERROR, Code.COMPLETENESS_NO_GEOMETRY, "The series has no image planes to stack.")],
        )
    placed = [s for s in slices if s.position is not None and s.orientation is not None and s.normal is not None]
    if len(placed) < len(slices):
        return CompletenessResult(False, findings=[_no_geometry(len(slices) - len(placed))], slice_count=len(slices))
    findings = _geometry_consistency(placed)
    stackable = not any(f.code == Code.COMPLETENESS_INCONSISTENT_ORIENTATION for f in findings)
    result = CompletenessResult(not findings, findings=findings, slice_count=len(placed))
    if len(placed) == 1:
        findings.append(
            Finding(Severity.INFO, Code.COMPLETENESS_SINGLE_SLICE, "The series has a single slice; gaps cannot be judged.")
        )
        return result
    if not stackable:
        return result

    normal = placed[0].normal
    d = np.array([np.dot(s.position, normal) for s in placed])
    order = np.argsort(d, kind="stable")
    d_sorted = d[order]
    steps = np.diff(d_sorted)

    duplicates = int(np.sum(steps < DUPLICATE_TOLERANCE_MM))
    if duplicates:
        result.complete = False
        findings.append(
            Finding(
                Severity.ERROR,
                Code.COMPLETENESS_DUPLICATE_POSITIONS,
                f"{duplicates} slice(s) share their position with another slice "
                f"(e.g. at {_fmt(sorted({round(float(d_sorted[i]), 3) for i in np.nonzero(steps < DUPLICATE_TOLERANCE_MM)[0]}), 3)} mm "
                "along the normal); remove duplicates or split repeated acquisitions.",
            )
        )
    positive = steps[steps >= DUPLICATE_TOLERANCE_MM]
    if len(positive) == 0:
        return result
    regular = positive[positive <= 1.5 * positive.min()]
    spacing = float(np.median(regular))
    result.spacing = spacing
    tolerance = max(SPACING_TOLERANCE * spacing, SPACING_TOLERANCE_MM)

    missing: list[float] = []
    irregular = 0
    for start, step in zip(d_sorted[:-1], steps):
        if step < DUPLICATE_TOLERANCE_MM:
            continue
        k = int(round(step / spacing))
        if k >= 2:
            missing.extend(float(start + j * step / k) for j in range(1, k))
            if abs(step - k * spacing) > tolerance:
                irregular += 1
        elif abs(step - spacing) > tolerance:
            irregular += 1
    if missing:
        result.complete = False
        result.missing_positions = [round(m, 3) for m in missing]
        findings.append(
            Finding(
                Severity.ERROR,
                Code.COMPLETENESS_MISSING_SLICES,
                f"{len(missing)} slice(s) missing at {_fmt(result.missing_positions)} mm along the slice normal "
                f"(spacing {spacing:.2f} mm); re-export the series from the source.",
            )
        )
    if irregular:
        result.complete = False
        findings.append(
            Finding(
                Severity.WARNING,
                Code.COMPLETENESS_INCONSISTENT_SPACING,
                f"{irregular} step(s) between slices differ from the spacing of {spacing:.2f} mm by more than "
                f"{tolerance:.2f} mm; resample before processing that assumes regular slices.",
            )
        )
    findings.extend(_instance_number_hint(placed, order))
    return result


def _no_geometry(count: int) -> Finding:
    return Finding(
        Severity.ERROR,
        Code.COMPLETENESS_NO_GEOMETRY,
        f"{count} slice(s) lack ImagePositionPatient or ImageOrientationPatient; the stack cannot be ordered.",
    )
