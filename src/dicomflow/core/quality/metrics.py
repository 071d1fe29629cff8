"""Overlap and surface metrics between two masks on one voxel grid, in millimetres.

What clinicians use to judge an autosegmentation against the contours they finally approved:
- **Dice** and **Jaccard**: volume overlap;
- **HD95**: the 95th percentile Hausdorff distance, taken as the larger of the two directed 95th
  percentiles (the "robust Hausdorff" of Nikolov et al. 2018, what ``surface-distance`` computes);
- **MSD**: mean surface distance, the average of all distances in both directions;
- **surface Dice** at a tolerance τ: the share of both surfaces lying within τ of the other;
- **APL**, added path length (Vaassen et al. 2020): the length, summed over slices, of the reference
  contour that is farther than a tolerance from the automatic contour — what a person had to draw.

Surfaces are the mask's boundary voxels (6-connected erosion), each weighted by the area of its
faces that touch the outside; distances come from Euclidean distance transforms with the voxel
spacing as sampling, computed on the bounding box of both masks
only (a 512² CT never needs a full-volume transform). Pure numpy/scipy; ``spacing`` is
(slice, row, column) in mm, as ``StackGeometry`` gives it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from dicomflow.errors import InputError

_SIX = ndimage.generate_binary_structure(3, 1)
_FOUR = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class Comparison:
    """Metrics of a test mask (e.g. automatic) against a reference (e.g. the clinician's)."""

    dice: float
    jaccard: float
    hd95_mm: float | None  # None when either surface is empty
    msd_mm: float | None
    surface_dice: float | None
    apl_mm: float
    volume_test_cc: float
    volume_reference_cc: float

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def _crop(test: np.ndarray, reference: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
    either = test | reference
    if not either.any():
        return test[:0, :0, :0], reference[:0, :0, :0]
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(either.any(axis=other))
        box.append(slice(max(int(hit[0]) - pad, 0), int(hit[-1]) + pad + 1))
    box = tuple(box)
    return test[box], reference[box]


def _boundary(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=_SIX, border_value=0)


def _padded(mask: np.ndarray, pad: int) -> np.ndarray:
    return np.pad(mask, pad, mode="constant", constant_values=False)


def _face_areas(mask: np.ndarray, spacing) -> np.ndarray:
    """Per voxel, the area (mm²) of its faces that touch the outside: the surface each boundary
    voxel stands for, so that anisotropic grids do not over-count their thick-slice faces."""
    areas = np.zeros(mask.shape)
    face = (spacing[1] * spacing[2], spacing[0] * spacing[2], spacing[0] * spacing[1])
    for axis in range(3):
        for shift in (1, -1):
            neighbour = np.roll(mask, shift, axis=axis)  # the mask is padded: rolling wraps only False
            areas += (mask & ~neighbour) * face[axis]
    return areas


def surface_distances(test: np.ndarray, reference: np.ndarray, spacing):
    """Distances (mm) from each test surface voxel to the reference surface and the other way,
    each with the surface area its voxel stands for: (d_test, w_test, d_reference, w_reference)."""
    test_surface, reference_surface = _boundary(test), _boundary(reference)
    if not test_surface.any() or not reference_surface.any():
        return np.empty(0), np.empty(0), np.empty(0), np.empty(0)
    to_reference = ndimage.distance_transform_edt(~reference_surface, sampling=spacing)
    to_test = ndimage.distance_transform_edt(~test_surface, sampling=spacing)
    return (to_reference[test_surface], _face_areas(test, spacing)[test_surface],
            to_test[reference_surface], _face_areas(reference, spacing)[reference_surface])


def _weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    index = int(np.searchsorted(cumulative, q / 100.0 * cumulative[-1]))
    return float(values[order][min(index, len(values) - 1)])


def added_path_length(test: np.ndarray, reference: np.ndarray, spacing, tolerance_mm: float | None = None) -> float:
    """Length (mm) of the reference contours, slice by slice, farther than ``tolerance_mm`` from the
    test contours on the same slice (default tolerance: one in-plane pixel)."""
    pixel = float(np.mean(spacing[1:]))
    tolerance = pixel if tolerance_mm is None else float(tolerance_mm)
    added = 0
    for k in np.flatnonzero(reference.any(axis=(1, 2))):
        ref_edge = reference[k] & ~ndimage.binary_erosion(reference[k], structure=_FOUR, border_value=0)
        test_slice = test[k]
        if not test_slice.any():
            added += int(ref_edge.sum())
            continue
        test_edge = test_slice & ~ndimage.binary_erosion(test_slice, structure=_FOUR, border_value=0)
        distance = ndimage.distance_transform_edt(~test_edge, sampling=spacing[1:])
        added += int(np.count_nonzero(distance[ref_edge] > tolerance))
    return added * pixel


def compare_masks(test: np.ndarray, reference: np.ndarray, spacing, tolerance_mm: float = 2.0,
                  apl_tolerance_mm: float | None = None) -> Comparison:
    """Every metric of ``test`` against ``reference`` (boolean masks of one shape; spacing in mm)."""
    test = np.asarray(test, bool)
    reference = np.asarray(reference, bool)
    if test.shape != reference.shape or test.ndim != 3:
        raise InputError(f"masks to compare must be 3-D and of one shape, not {test.shape} and {reference.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(s > 0 for s in spacing):
        raise InputError(f"voxel spacing must be three positive numbers (mm), not {spacing}")
    voxel_cc = spacing[0] * spacing[1] * spacing[2] / 1000.0
    n_test, n_reference = int(test.sum()), int(reference.sum())
    overlap = int(np.count_nonzero(test & reference))
    union = n_test + n_reference - overlap
    dice = 1.0 if n_test + n_reference == 0 else 2.0 * overlap / (n_test + n_reference)
    jaccard = 1.0 if union == 0 else overlap / union
    test_c, reference_c = _crop(test, reference, pad=1)
    # pad so a surface on the crop's edge is still a surface and distances are not cut off
    test_c, reference_c = _padded(test_c, 1), _padded(reference_c, 1)
    d_test, w_test, d_reference, w_reference = surface_distances(test_c, reference_c, spacing)
    if d_test.size and d_reference.size:
        hd95 = max(_weighted_percentile(d_test, w_test, 95), _weighted_percentile(d_reference, w_reference, 95))
        area = w_test.sum() + w_reference.sum()
        msd = float(((d_test * w_test).sum() + (d_reference * w_reference).sum()) / area)
        surface_dice = float((w_test[d_test <= tolerance_mm].sum() + w_reference[d_reference <= tolerance_mm].sum()) / area)
    else:
        hd95 = msd = surface_dice = None
    apl = added_path_length(test_c, reference_c, spacing, apl_tolerance_mm)
    return Comparison(dice=dice, jaccard=jaccard, hd95_mm=hd95, msd_mm=msd, surface_dice=surface_dice,
                      apl_mm=apl, volume_test_cc=n_test * voxel_cc, volume_reference_cc=n_reference * voxel_cc)
