"""Compare two RT Structure Sets ROI by ROI (e.g. the automatic result and the clinician's edit).

Both are rasterised onto one grid: the image series they were drawn on, when given (contours
placed by their image references), or else a grid built from the contours themselves (axial
contours on a common set of slice positions; in-plane ``resolution_mm``). ROIs are matched by
name, case-insensitively; ROIs only one set has are listed, not compared. Metrics are those of
:mod:`dicomflow.core.quality.metrics` with the first set as the test and the second as reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicomflow.core.dicom.sop import RT_STRUCTURE_SET
from dicomflow.core.quality.metrics import compare_masks
from dicomflow.core.segmentation.contours import fill_polygon
from dicomflow.core.segmentation.volume import StackGeometry
from dicomflow.errors import DicomReadError, InputError

MAX_GRID_VOXELS = 400_000_000  # a grid bigger than this is a mistake in the contours, not a body


def read_structure_set(path: str | Path) -> Dataset:
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise DicomReadError(f"{Path(path).name}: not a readable DICOM file ({exc.__class__.__name__})") from None
    if str(ds.get("SOPClassUID", "")) != RT_STRUCTURE_SET:
        raise InputError(f"{Path(path).name}: not an RT Structure Set")
    return ds


def _planar_contours(ds: Dataset):
    """(ROI name, points (m, 3)) of every CLOSED_PLANAR contour."""
    from dicomflow.core.segmentation.rtstruct import _points

    names = {int(r.ROINumber): str(r.ROIName) for r in ds.get("StructureSetROISequence", [])}
    for roi in ds.get("ROIContourSequence", []):
        name = names.get(int(roi.ReferencedROINumber), f"ROI {roi.ReferencedROINumber}")
        for contour in roi.get("ContourSequence", []):
            if contour.get("ContourGeometricType") == "CLOSED_PLANAR":
                yield name, _points(contour)


def roi_names(ds: Dataset) -> list[str]:
    return [str(r.ROIName) for r in ds.get("StructureSetROISequence", [])]


def contour_grid(sets: Sequence[Dataset], resolution_mm: float = 1.0) -> tuple[StackGeometry, list[dict]]:
    """A grid covering every contour of ``sets`` and each set's masks on it (name → mask)."""
    contours = [list(_planar_contours(ds)) for ds in sets]
    everything = [points for per_set in contours for _, points in per_set]
    if not everything:
        raise InputError("the structure sets hold no planar contours to compare")
    z_values = []
    for points in everything:
        if np.ptp(points[:, 2]) > 0.01:
            raise InputError("contours are not axial; give the image series (--images) to compare them")
        z_values.append(float(points[0, 2]))
    planes = np.unique(np.round(z_values, 2))
    step = float(np.min(np.diff(planes))) if len(planes) > 1 else 1.0
    index = np.round((planes - planes[0]) / step)
    if np.any(np.abs(planes - planes[0] - index * step) > step / 4):
        raise InputError("contours do not lie on one regular set of slices; give the image series (--images)")
    stacked = np.concatenate(everything)
    margin = 3 * resolution_mm
    x0, y0 = stacked[:, 0].min() - margin, stacked[:, 1].min() - margin
    cols = int(np.ceil((stacked[:, 0].max() + margin - x0) / resolution_mm)) + 1
    rows = int(np.ceil((stacked[:, 1].max() + margin - y0) / resolution_mm)) + 1
    n = int(index[-1]) + 1
    if rows * cols * n > MAX_GRID_VOXELS:
        raise InputError("the contours span too large a volume at this resolution; give the image series (--images)")
    positions = np.array([[x0, y0, planes[0] + k * step] for k in range(n)])
    geometry = StackGeometry(positions=positions, row_dir=np.array([1.0, 0, 0]), col_dir=np.array([0, 1.0, 0]),
                             pixel_spacing=(resolution_mm, resolution_mm), rows=rows, cols=cols)
    masks = []
    for per_set in contours:
        named: dict[str, np.ndarray] = {}
        for name, points in per_set:
            mask = named.setdefault(name, np.zeros(geometry.shape, bool))
            k = int(round((points[0, 2] - planes[0]) / step))
            r, c = geometry.to_pixel(k, points)
            fill_polygon(mask[k], r, c)
        masks.append(named)
    return geometry, masks


def image_grid(sets: Sequence[Dataset], image_paths: Sequence[str | Path]) -> tuple[StackGeometry, list[dict]]:
    """The image series the structure sets reference, and each set's masks on it."""
    from dicomflow.core.segmentation.rtstruct import read_rtstruct_masks
    from dicomflow.core.segmentation.volume import read_image_series

    wanted = {str(s.SeriesInstanceUID) for ds in sets for f in ds.get("ReferencedFrameOfReferenceSequence", [])
              for st in f.get("RTReferencedStudySequence", []) for s in st.get("RTReferencedSeriesSequence", [])}
    chosen = []
    for path in image_paths:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "SOPClassUID"])
        except (InvalidDicomError, OSError, ValueError):
            continue
        if str(header.get("SOPClassUID", "")) == RT_STRUCTURE_SET:
            continue
        if not wanted or str(header.get("SeriesInstanceUID", "")) in wanted:
            chosen.append(path)
    if not chosen:
        raise InputError("no images of the series the structure sets reference were found")
    series = read_image_series(chosen)
    return series.geometry, [read_rtstruct_masks(ds, series) for ds in sets]


def compare_structure_sets(test: Dataset, reference: Dataset, image_paths: Sequence[str | Path] | None = None,
                           tolerance_mm: float = 2.0, resolution_mm: float = 1.0) -> dict:
    """``{"rois": [{"name", "dice", "jaccard", "hd95_mm", "msd_mm", "surface_dice", "apl_mm",
    "volume_a_cc", "volume_b_cc"}], "only_in_a", "only_in_b", "tolerance_mm", "grid"}``."""
    if image_paths:
        geometry, (masks_a, masks_b) = image_grid([test, reference], image_paths)
        grid = "images"
    else:
        geometry, (masks_a, masks_b) = contour_grid([test, reference], resolution_mm)
        grid = "contours"
    spacing = (abs(geometry.slice_spacing), geometry.pixel_spacing[0], geometry.pixel_spacing[1])
    by_name_b = {name.strip().casefold(): name for name in roi_names(reference)}
    rois, matched = [], set()
    for name in roi_names(test):
        other = by_name_b.get(name.strip().casefold())
        if other is None:
            continue
        matched.add(other)
        empty = np.zeros(geometry.shape, bool)
        result = compare_masks(masks_a.get(name, empty), masks_b.get(other, empty), spacing, tolerance_mm).as_dict()
        rois.append({"name": name, "dice": result["dice"], "jaccard": result["jaccard"], "hd95_mm": result["hd95_mm"],
                     "msd_mm": result["msd_mm"], "surface_dice": result["surface_dice"], "apl_mm": result["apl_mm"],
                     "volume_a_cc": result["volume_test_cc"], "volume_b_cc": result["volume_reference_cc"]})
    by_name_a = {n.strip().casefold() for n in roi_names(test)}
    return {"rois": rois,
            "only_in_a": [n for n in roi_names(test) if n.strip().casefold() not in by_name_b],
            "only_in_b": [n for n in roi_names(reference) if n.strip().casefold() not in by_name_a],
            "tolerance_mm": tolerance_mm, "grid": grid}
