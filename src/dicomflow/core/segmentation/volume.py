"""An image series as a geometry (slice positions, orientation, spacing) plus, when asked, voxels.

Slices are ordered along the slice normal (row direction × column direction), so index k grows
with the normal whatever the file names or Instance Numbers say. Both classic single-frame
series and enhanced multi-frame instances (per-frame Plane Position) are read. Headers are read
first without pixels to validate the stack; pixels are decoded only by :func:`load_volume`, one
file at a time into a preallocated array (processing needs them; nothing else here does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicomflow.errors import DicomReadError, InputError

_POSITION_TOLERANCE_MM = 0.01


@dataclass
class StackGeometry:
    """Where each voxel of a (slice, row, column) array sits in patient coordinates (LPS, mm)."""

    positions: np.ndarray  # (n, 3) ImagePositionPatient of each slice, sorted along the normal
    row_dir: np.ndarray  # direction of increasing column index (first 3 of ImageOrientationPatient)
    col_dir: np.ndarray  # direction of increasing row index (last 3)
    pixel_spacing: tuple[float, float]  # (between rows, between columns), as PixelSpacing
    rows: int
    cols: int

    @property
    def n_slices(self) -> int:
        return len(self.positions)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.n_slices, self.rows, self.cols)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_dir, self.col_dir)

    @property
    def slice_locations(self) -> np.ndarray:
        """Position of each slice along the normal (mm)."""
        return self.positions @ self.normal

    @property
    def slice_spacing(self) -> float:
        """Median distance between neighbouring slices (or 1 mm for a single slice)."""
        if self.n_slices < 2:
            return 1.0
        return float(np.median(np.diff(self.slice_locations)))

    @property
    def voxel_volume_mm3(self) -> float:
        return self.pixel_spacing[0] * self.pixel_spacing[1] * self.slice_spacing

    def to_patient(self, k: int, r, c) -> np.ndarray:
        """Patient coordinates (..., 3) of (possibly fractional) pixel (r, c) on slice k."""
        r = np.asarray(r, float)[..., None]
        c = np.asarray(c, float)[..., None]
        return self.positions[k] + c * self.pixel_spacing[1] * self.row_dir + r * self.pixel_spacing[0] * self.col_dir

    def to_pixel(self, k: int, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of patient points projected on slice k's plane (oblique-safe)."""
        d = np.asarray(points, float) - self.positions[k]
        return d @ self.col_dir / self.pixel_spacing[0], d @ self.row_dir / self.pixel_spacing[1]

    def nearest_slice(self, points: np.ndarray) -> tuple[int, float]:
        """Index of the slice closest to the points' mean along the normal, and that distance."""
        location = float(np.mean(np.asarray(points, float) @ self.normal))
        distances = np.abs(self.slice_locations - location)
        k = int(np.argmin(distances))
        return k, float(distances[k])

    def patient_x(self, k: int) -> np.ndarray:
        """Patient x (LPS: + is the patient's left) of every pixel of slice k, shape (rows, cols)."""
        r = np.arange(self.rows, dtype=float)[:, None] * self.pixel_spacing[0] * self.col_dir[0]
        c = np.arange(self.cols, dtype=float)[None, :] * self.pixel_spacing[1] * self.row_dir[0]
        return self.positions[k, 0] + r + c

    def centroid_x(self, mask: np.ndarray) -> float:
        """Patient x of the centroid of a (slice, row, column) mask, without a full-size x array."""
        total = float(np.count_nonzero(mask))
        k_part = float(mask.sum(axis=(1, 2)) @ self.positions[:, 0]) / total
        r = float(mask.sum(axis=(0, 2)) @ np.arange(self.rows)) / total
        c = float(mask.sum(axis=(0, 1)) @ np.arange(self.cols)) / total
        return k_part + c * self.pixel_spacing[1] * self.row_dir[0] + r * self.pixel_spacing[0] * self.col_dir[0]


@dataclass
class ImageSeries:
    """A series' geometry and what a derived object must reference (no pixels)."""

    geometry: StackGeometry
    header: Dataset  # first slice's header without pixels: patient, study, frame of reference
    sop_class_uid: str
    sop_instance_uids: list[str]  # per slice (the same UID for every frame of a multi-frame)
    frame_numbers: list[int] | None  # per slice, 1-based, for multi-frame instances
    paths: list[Path]
    slope_intercept: list[tuple[float, float]]  # per slice rescale (values → HU for CT)
    _frame_of_file: list[tuple[int, int]]  # per slice: (index into paths, frame index or -1)

    @property
    def series_uid(self) -> str:
        return str(self.header.SeriesInstanceUID)

    @property
    def frame_of_reference_uid(self) -> str:
        return str(self.header.get("FrameOfReferenceUID", ""))

    @property
    def modality(self) -> str:
        return str(self.header.get("Modality", ""))

    def slice_of_reference(self) -> dict[tuple[str, int | None], int]:
        """(SOP instance UID, frame number or None) → slice index, to resolve contour references."""
        frames = self.frame_numbers or [None] * len(self.sop_instance_uids)
        return {(uid, f): k for k, (uid, f) in enumerate(zip(self.sop_instance_uids, frames))}


def _floats(value, count: int, what: str, path: Path) -> np.ndarray:
    try:
        array = np.asarray([float(v) for v in value], float)
    except (TypeError, ValueError):
        array = np.zeros(0)
    if array.shape != (count,):
        raise InputError(f"{path}: {what} is missing or malformed")
    return array


def _first(ds: Dataset, keyword: str) -> Dataset | None:
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _functional(ds: Dataset, frame: Dataset | None, group: str, keyword: str):
    """An attribute from a per-frame group, else the shared group, else the top level."""
    for container in (frame, _first(ds, "SharedFunctionalGroupsSequence")):
        item = _first(container, group) if container is not None else None
        if item is not None and keyword in item:
            return item.get(keyword)
    return ds.get(keyword)


def _rescale(value_slope, value_intercept) -> tuple[float, float]:
    slope = float(value_slope) if value_slope not in (None, "") else 1.0
    intercept = float(value_intercept) if value_intercept not in (None, "") else 0.0
    return slope, intercept


def read_image_series(paths: Sequence[str | Path]) -> ImageSeries:
    """Geometry and references of one image series from its files (headers only, no pixels)."""
    if not paths:
        raise InputError("no image files given")
    slices = []  # (position, SOP instance UID, frame number, file index, frame index, rescale)
    orientation = spacing = size = None
    header = None
    series_uid = sop_class = None
    multiframe = False
    for index, raw_path in enumerate(paths):
        path = Path(raw_path)
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError) as exc:
            raise DicomReadError(f"{path}: cannot read DICOM header ({type(exc).__name__})") from None
        if header is None:
            header, series_uid, sop_class = ds, ds.get("SeriesInstanceUID"), ds.get("SOPClassUID")
        if ds.get("SeriesInstanceUID") != series_uid:
            raise InputError(f"{path}: belongs to another series than {paths[0]}; give one series at a time")
        if "Rows" not in ds or "Columns" not in ds:
            raise InputError(f"{path}: not an image (no Rows/Columns); give the files of one image series")
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        frames = range(n_frames) if per_frame else [-1]
        multiframe = multiframe or bool(per_frame)
        for f in frames:
            frame = per_frame[f] if per_frame else None
            iop = _floats(_functional(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient"), 6,
                          "ImageOrientationPatient", path)
            ipp = _floats(_functional(ds, frame, "PlanePositionSequence", "ImagePositionPatient"), 3,
                          "ImagePositionPatient", path)
            ps = _floats(_functional(ds, frame, "PixelMeasuresSequence", "PixelSpacing"), 2, "PixelSpacing", path)
            rescale = _rescale(
                _functional(ds, frame, "PixelValueTransformationSequence", "RescaleSlope"),
                _functional(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept"),
            )
            if orientation is None:
                orientation, spacing, size = iop, ps, (int(ds.Rows), int(ds.Columns))
            elif not (np.allclose(iop, orientation, atol=1e-4) and np.allclose(ps, spacing, atol=1e-4)
                      and size == (int(ds.Rows), int(ds.Columns))):
                raise InputError(f"{path}: orientation, pixel spacing or size differs from the rest of the series")
            slices.append((ipp, str(ds.SOPInstanceUID), f + 1 if f >= 0 else None, index, f, rescale))
    row_dir = orientation[:3] / np.linalg.norm(orientation[:3])  # stored cosines are rounded
    col_dir = orientation[3:] / np.linalg.norm(orientation[3:])
    normal = np.cross(row_dir, col_dir)
    slices.sort(key=lambda s: float(s[0] @ normal))
    positions = np.array([s[0] for s in slices])
    if len(positions) > 1 and np.min(np.diff(positions @ normal)) < _POSITION_TOLERANCE_MM:
        raise InputError("two slices of the series share one position; it is not a single stack")
    geometry = StackGeometry(positions, row_dir, col_dir, (float(spacing[0]), float(spacing[1])), *size)
    return ImageSeries(
        geometry=geometry,
        header=header,
        sop_class_uid=str(sop_class),
        sop_instance_uids=[s[1] for s in slices],
        frame_numbers=[s[2] for s in slices] if multiframe else None,
        paths=[Path(p) for p in paths],
        slope_intercept=[s[5] for s in slices],
        _frame_of_file=[(s[3], s[4]) for s in slices],
    )


def load_volume(series: ImageSeries, dtype=np.float32) -> np.ndarray:
    """Rescaled voxel values (HU for CT) as a (slice, row, column) array, decoded file by file."""
    volume = np.empty(series.geometry.shape, dtype)
    wanted: dict[int, list[tuple[int, int]]] = {}
    for k, (file_index, frame) in enumerate(series._frame_of_file):
        wanted.setdefault(file_index, []).append((k, frame))
    for file_index, targets in wanted.items():
        path = series.paths[file_index]
        try:
            pixels = pydicom.dcmread(path).pixel_array
        except Exception as exc:  # decoders raise many types; report the file, not the details
            raise DicomReadError(f"{path}: cannot decode pixel data ({type(exc).__name__})") from None
        for k, frame in targets:
            plane = pixels[frame] if pixels.ndim == 3 else pixels
            slope, intercept = series.slope_intercept[k]
            volume[k] = plane * slope + intercept
        del pixels
    return volume
