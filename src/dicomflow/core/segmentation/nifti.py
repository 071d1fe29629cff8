"""The NIfTI bridge for external segmenters: DICOM series → NIfTI volume, label NIfTI → RTSTRUCT.

Voxel order: NIfTI index (i, j, k) = (column, row, slice) of the DICOM stack, slices sorted along
the normal, so ``nifti[i, j, k] == dicom_volume[k, j, i]``. Affine: DICOM patient coordinates are
LPS, NIfTI world coordinates RAS, so ``affine = diag(-1, -1, 1, 1) @ A_lps`` where ``A_lps`` maps
(i, j, k) to ImagePositionPatient of slice 0 + i·Δc·row direction + j·Δr·column direction +
k·(slice step). The slice step is the vector between consecutive slice positions, so oblique and
gantry-tilted stacks keep their exact geometry (qform/sform code 1, scanner). A NIfTI volume
needs evenly spaced slices: a stack with missing slices is refused with a clear message.

Label maps coming back are read with their own affine: when it and the shape equal the series'
grid the labels are taken as they are, otherwise they are resampled onto the CT grid
(nearest neighbour, outside → 0), so a tool that reorients to RAS ("canonical") still fits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from dicomflow.core.rules.model import RoiStyle
from dicomflow.core.segmentation.rtstruct import build_rtstruct, write_dataset
from dicomflow.core.segmentation.volume import StackGeometry, load_volume, read_image_series
from dicomflow.errors import InputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_AFFINE_TOLERANCE_MM = 1e-3
UNSTYLED_COLOR = (128, 128, 128)


def slice_step(geometry: StackGeometry) -> np.ndarray:
    """The vector from one slice's position to the next; refuses unevenly spaced stacks."""
    positions = geometry.positions
    if len(positions) == 1:
        return geometry.normal * geometry.slice_spacing
    step = (positions[-1] - positions[0]) / (len(positions) - 1)
    deviation = np.abs(np.diff(positions, axis=0) - step).max()
    if deviation > max(0.01, 0.01 * float(np.linalg.norm(step))):
        raise InputError(
            "the slices are not evenly spaced (missing slices?); a NIfTI volume needs a regular grid"
        )
    return step


def affine_lps(geometry: StackGeometry) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, 0] = geometry.row_dir * geometry.pixel_spacing[1]
    affine[:3, 1] = geometry.col_dir * geometry.pixel_spacing[0]
    affine[:3, 2] = slice_step(geometry)
    affine[:3, 3] = geometry.positions[0]
    return affine


def affine_ras(geometry: StackGeometry) -> np.ndarray:
    """The NIfTI affine of the series: (column, row, slice) index → RAS mm."""
    return LPS_TO_RAS @ affine_lps(geometry)


def array_to_nifti(volume: np.ndarray, geometry: StackGeometry, path: str | Path) -> Path:
    """Save a (slice, row, column) array on the series grid as NIfTI (``.nii`` or ``.nii.gz``)."""
    if volume.shape != geometry.shape:
        raise InputError(f"array shape {volume.shape} is not the series grid {geometry.shape}")
    affine = affine_ras(geometry)
    image = nib.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


def series_to_nifti(paths: Sequence[str | Path], out_path: str | Path) -> Path:
    """Convert one image series to a NIfTI volume of rescaled values (HU for CT)."""
    series = read_image_series(paths)
    volume = load_volume(series)
    rounded = np.rint(volume)
    if np.array_equal(rounded, volume) and rounded.min() >= -32768 and rounded.max() <= 32767:
        volume = rounded.astype(np.int16)
    return array_to_nifti(volume, series.geometry, out_path)


def labels_to_nifti(labels: np.ndarray, geometry: StackGeometry, path: str | Path) -> Path:
    """Save an integer label array (slice, row, column) on the series grid."""
    return array_to_nifti(np.asarray(labels).astype(np.uint16 if labels.max() > 255 else np.uint8), geometry, path)


def nifti_to_labels(path: str | Path, geometry: StackGeometry) -> np.ndarray:
    """An integer label array (slice, row, column) on the series grid from a label NIfTI."""
    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{path}: a label map must be a 3-D volume, this one has {data.ndim} dimensions")
    data = np.rint(data).astype(np.int32)
    expected = (geometry.cols, geometry.rows, geometry.n_slices)
    if data.shape == expected and np.allclose(image.affine, affine_ras(geometry), atol=_AFFINE_TOLERANCE_MM):
        return np.ascontiguousarray(data.transpose(2, 1, 0))
    # Another grid or orientation: sample it at every CT voxel centre (nearest neighbour).
    to_index = np.linalg.inv(image.affine)
    out = np.zeros(geometry.shape, np.int32)
    rr, cc = np.mgrid[0 : geometry.rows, 0 : geometry.cols]
    for k in range(geometry.n_slices):
        lps = geometry.to_patient(k, rr, cc).reshape(-1, 3)
        ras = np.c_[-lps[:, 0], -lps[:, 1], lps[:, 2], np.ones(len(lps))]
        ijk = np.rint((ras @ to_index.T)[:, :3]).astype(np.int64)
        inside = np.all((ijk >= 0) & (ijk < np.asarray(data.shape)), axis=1)
        values = np.zeros(len(lps), np.int32)
        values[inside] = data[ijk[inside, 0], ijk[inside, 1], ijk[inside, 2]]
        out[k] = values.reshape(geometry.rows, geometry.cols)
    return out


def labels_to_roi_masks(labels: np.ndarray, rois: Sequence[RoiStyle]) -> list[tuple[RoiStyle, np.ndarray]]:
    """One mask per styled label value (empty if absent), then unstyled values as ``Label_<n>``."""
    styled = {r.label: r for r in rois if r.label is not None}
    out = [(style, labels == value) for value, style in sorted(styled.items())]
    for value in np.unique(labels):
        if value != 0 and int(value) not in styled:
            style = RoiStyle(f"label_{value}", f"Label_{value}", UNSTYLED_COLOR, "ORGAN", int(value))
            out.append((style, labels == value))
    return out


def nifti_labels_to_rtstruct(
    label_path: str | Path,
    series_paths: Sequence[str | Path],
    out_dir: str | Path,
    rois: Sequence[RoiStyle] | Mapping[int, RoiStyle] = (),
    label: str = "AUTO",
    algorithm: str = "external",
) -> Path:
    """Turn a label NIfTI made on ``series_paths`` into an RTSTRUCT on that series."""
    series = read_image_series(series_paths)
    labels = nifti_to_labels(label_path, series.geometry)
    styles = list(rois.values()) if isinstance(rois, Mapping) else list(rois)
    dataset = build_rtstruct(series, labels_to_roi_masks(labels, styles), label=label, algorithm=algorithm)
    return write_dataset(dataset, out_dir)
