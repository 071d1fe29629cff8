"""Slice geometry records and oriented boxes (image volumes, dose grids) in patient coordinates.

A :class:`SliceGeometry` is one image plane (one single-frame instance, or one frame of an enhanced
multi-frame instance, read from its functional groups). The catalog's ImageInformation rows carry
the same fields, so the completeness check runs on either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SliceGeometry:
    sop_instance_uid: str
    instance_number: int | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns) as in DICOM
    rows: int | None
    columns: int | None
    slice_thickness: float | None = None
    frame: int | None = None  # 1-based frame number for multi-frame instances

    @property
    def normal(self) -> np.ndarray | None:
        if self.orientation is None:
            return None
        row, col = np.asarray(self.orientation[:3]), np.asarray(self.orientation[3:])
        n = np.cross(row, col)
        norm = np.linalg.norm(n)
        return n / norm if norm > 0 else None


def _floats(value: Any, n: int) -> tuple | None:
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return values if len(values) == n else None


def _number(value: Any, kind: type) -> Any:
    try:
        return kind(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _first(ds: Any, *path: str) -> Any:
    """Walk first items of nested sequences: _first(group, 'PlanePositionSequence', 'ImagePositionPatient')."""
    node = ds
    for keyword in path[:-1]:
        seq = getattr(node, keyword, None)
        if not seq:
            return None
        node = seq[0]
    return getattr(node, path[-1], None)


def slices_from_dataset(ds: Any) -> list[SliceGeometry]:
    """The image planes of one instance; [] when it has no plane geometry at all (RT objects)."""
    sop_uid = str(getattr(ds, "SOPInstanceUID", ""))
    instance_number = _number(getattr(ds, "InstanceNumber", None), int)
    rows = _number(getattr(ds, "Rows", None), int)
    columns = _number(getattr(ds, "Columns", None), int)
    per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    if per_frame:
        shared = (getattr(ds, "SharedFunctionalGroupsSequence", None) or [None])[0]
        out = []
        for index, frame in enumerate(per_frame, start=1):

            def pick(*path: str, frame=frame) -> Any:
                value = _first(frame, *path)
                return value if value is not None or shared is None else _first(shared, *path)

            out.append(
                SliceGeometry(
                    sop_uid,
                    instance_number,
                    _floats(pick("PlanePositionSequence", "ImagePositionPatient"), 3),
                    _floats(pick("PlaneOrientationSequence", "ImageOrientationPatient"), 6),
                    _floats(pick("PixelMeasuresSequence", "PixelSpacing"), 2),
                    rows,
                    columns,
                    _number(pick("PixelMeasuresSequence", "SliceThickness"), float),
                    frame=index,
                )
            )
        return out
    position = _floats(getattr(ds, "ImagePositionPatient", None), 3)
    orientation = _floats(getattr(ds, "ImageOrientationPatient", None), 6)
    if position is None and orientation is None and rows is None:
        return []  # not an image at all
    return [
        SliceGeometry(
            sop_uid,
            instance_number,
            position,
            orientation,
            _floats(getattr(ds, "PixelSpacing", None), 2),
            rows,
            columns,
            _number(getattr(ds, "SliceThickness", None), float),
        )
    ]


@dataclass(frozen=True)
class Box:
    """An oriented box: origin (centre of the first voxel), unit axes, extents (mm) along each axis.

    Points are inside when their coordinates along each axis fall in [-margin, extent + margin];
    the margin is half a voxel, since a voxel covers half a spacing on each side of its centre.
    """

    origin: tuple[float, float, float]
    axes: tuple[tuple[float, float, float], ...]  # row direction, column direction, normal
    extents: tuple[float, float, float]
    margins: tuple[float, float, float]

    def coordinates(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=float) - np.asarray(self.origin)) @ np.asarray(self.axes).T

    def outside(self, points: np.ndarray) -> np.ndarray:
        """Boolean mask of the points outside the box (margins included)."""
        c = self.coordinates(points)
        lo = -np.asarray(self.margins)
        hi = np.asarray(self.extents) + np.asarray(self.margins)
        return np.any((c < lo - 1e-6) | (c > hi + 1e-6), axis=1)


def volume_box(slices: list[SliceGeometry]) -> Box | None:
    """The box covered by a stack of parallel slices (None if geometry is incomplete)."""
    usable = [s for s in slices if s.position and s.orientation and s.pixel_spacing and s.rows and s.columns]
    if not usable:
        return None
    first = usable[0]
    normal = first.normal
    if normal is None:
        return None
    row_dir, col_dir = np.asarray(first.orientation[:3]), np.asarray(first.orientation[3:])
    d = np.array([np.dot(s.position, normal) for s in usable])
    start = usable[int(np.argmin(d))]
    spacing = float(np.median(np.diff(np.sort(d)))) if len(d) > 1 else (first.slice_thickness or 0.0)
    return Box(
        origin=tuple(start.position),
        axes=(tuple(row_dir), tuple(col_dir), tuple(normal)),
        extents=((first.columns - 1) * first.pixel_spacing[1], (first.rows - 1) * first.pixel_spacing[0], float(np.ptp(d))),
        margins=(first.pixel_spacing[1] / 2, first.pixel_spacing[0] / 2, spacing / 2),
    )


def dose_box(ds: Any) -> Box | None:
    """The dose grid of an RTDOSE header: image plane plus Grid Frame Offset Vector."""
    position = _floats(getattr(ds, "ImagePositionPatient", None), 3)
    orientation = _floats(getattr(ds, "ImageOrientationPatient", None), 6)
    spacing = _floats(getattr(ds, "PixelSpacing", None), 2)
    rows = _number(getattr(ds, "Rows", None), int)
    columns = _number(getattr(ds, "Columns", None), int)
    if not (position and orientation and spacing and rows and columns):
        return None
    offsets_raw = getattr(ds, "GridFrameOffsetVector", None)
    try:
        offsets = [float(v) for v in offsets_raw] if offsets_raw is not None else [0.0]
    except (TypeError, ValueError):
        return None
    if not offsets:
        offsets = [0.0]
    axial = np.allclose(orientation, (1, 0, 0, 0, 1, 0), atol=1e-4)
    if offsets[0] != 0 and axial and abs(offsets[0] - position[2]) < 1e-3:
        offsets = [v - position[2] for v in offsets]  # older form: absolute z coordinates
    row_dir, col_dir = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row_dir, col_dir)
    normal = normal / (np.linalg.norm(normal) or 1.0)
    lo, hi = min(offsets), max(offsets)
    step = float(np.median(np.abs(np.diff(sorted(offsets))))) if len(offsets) > 1 else 0.0
    origin = np.asarray(position) + lo * normal
    return Box(
        origin=tuple(origin),
        axes=(tuple(row_dir), tuple(col_dir), tuple(normal)),
        extents=((columns - 1) * spacing[1], (rows - 1) * spacing[0], hi - lo),
        margins=(spacing[1] / 2, spacing[0] / 2, step / 2),
    )
