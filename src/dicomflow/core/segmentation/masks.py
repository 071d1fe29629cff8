"""Classical CT segmentation of the body outline and the lungs: thresholds, connected components
and per-slice hole filling (numpy / scipy.ndimage), no learned model.

- body: the largest 3-D connected component above ``body_threshold_hu`` (about -500 HU separates
  tissue from air), holes filled slice by slice (so lungs and bowel gas are inside the body);
- lungs: voxels below ``lung_threshold_hu`` inside the body. Air outside the patient never reaches
  them because the body is filled per slice. Connected components smaller than
  ``min_lung_volume_ml`` or than a tenth of the largest one (bowel gas, noise) are dropped; holes
  (vessels) are filled per slice;
- left / right: the patient's left is +x in DICOM patient coordinates (LPS). With two or more
  components, each is assigned by its centroid's x against the midpoint of the two largest
  (lungs need not be symmetric about the body's centre); one component (lungs joined through
  the trachea) is cut voxel by voxel at the body's centroid x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from dicomflow.core.segmentation.volume import StackGeometry
from dicomflow.errors import SegmentationError


@dataclass
class BodyLungMasks:
    body: np.ndarray
    lung_left: np.ndarray
    lung_right: np.ndarray

    @property
    def lungs(self) -> np.ndarray:
        return self.lung_left | self.lung_right


_IN_PLANE = np.zeros((3, 3, 3), bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill every hole of every slice: background not connected in-plane to the slice's border.

    One labelling of the whole stack with an in-plane structuring element replaces a
    ``binary_fill_holes`` call per slice (iterative dilations, seconds on 512 × 512 slices).
    """
    labels, count = ndimage.label(~mask, structure=_IN_PLANE)
    border = np.concatenate(
        [labels[:, 0, :].ravel(), labels[:, -1, :].ravel(), labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]
    )
    is_outside = np.zeros(count + 1, bool)
    is_outside[border] = True
    is_outside[0] = False  # label 0 is the mask itself
    return ~is_outside[labels]


def segment_body(hu: np.ndarray, threshold_hu: float = -500.0) -> np.ndarray:
    labels, count = ndimage.label(hu > threshold_hu)
    if count == 0:
        raise SegmentationError(f"no voxel above {threshold_hu} HU: the series holds no body to segment")
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return fill_holes_per_slice(labels == int(np.argmax(sizes)))


def segment_lungs(
    hu: np.ndarray,
    body: np.ndarray,
    geometry: StackGeometry,
    threshold_hu: float = -400.0,
    min_volume_ml: float = 5.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) lung masks; both empty when no air region inside the body is large enough."""
    labels, count = ndimage.label((hu < threshold_hu) & body)
    empty = np.zeros_like(body)
    if count == 0:
        return empty, empty.copy()
    voxel_ml = geometry.voxel_volume_mm3 / 1000.0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep_from = max(min_volume_ml / voxel_ml, 0.1 * sizes.max())
    kept = [int(i) for i in np.argsort(sizes)[::-1] if sizes[i] >= keep_from and i != 0]
    if not kept:
        return empty, empty.copy()
    left, right = empty.copy(), empty.copy()
    if len(kept) == 1:
        component = labels == kept[0]
        midline = geometry.centroid_x(body)
        for k in range(component.shape[0]):
            x = geometry.patient_x(k)
            left[k] = component[k] & (x > midline)
            right[k] = component[k] & (x <= midline)
    else:
        centroids = {i: geometry.centroid_x(labels == i) for i in kept}
        midline = (centroids[kept[0]] + centroids[kept[1]]) / 2
        for i in kept:
            target = left if centroids[i] > midline else right
            target |= labels == i
    return fill_holes_per_slice(left), fill_holes_per_slice(right)


def segment_body_and_lungs(
    hu: np.ndarray,
    geometry: StackGeometry,
    body_threshold_hu: float = -500.0,
    lung_threshold_hu: float = -400.0,
    min_lung_volume_ml: float = 5.0,
) -> BodyLungMasks:
    body = segment_body(hu, body_threshold_hu)
    left, right = segment_lungs(hu, body, geometry, lung_threshold_hu, min_lung_volume_ml)
    return BodyLungMasks(body, left, right)
