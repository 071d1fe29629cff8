"""Masks ↔ contours: exact round trips, the fast polygon fill agrees with scikit-image."""

import numpy as np
import pytest
from scipy import ndimage
from skimage import draw

from dicomflow.core.segmentation.contours import contours_to_mask, mask_to_contours, polygon_mask
from dicomflow.core.segmentation.masks import fill_holes_per_slice
from dicomflow.core.segmentation.volume import StackGeometry
from dicomflow.testing import synth


def geometry(shape, orientation=synth.AXIAL):
    n, rows, cols = shape
    geo = synth.make_geometry(n, rows, cols, pixel_spacing=(0.9, 1.3), slice_thickness=2.0, orientation=orientation)
    positions = np.array([geo.position(k) for k in range(n)])
    return StackGeometry(positions, geo.row_dir, geo.col_dir, geo.pixel_spacing, rows, cols)


def blobs(shape, seed):
    """Random smooth shapes with holes and islands inside holes."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma=(0, 3, 3))
    return field > 0.02


def test_polygon_fill_matches_skimage_on_random_polygons():
    rng = np.random.default_rng(2024)
    for _ in range(300):  # convex, concave and self-intersecting, partly outside the image
        height, width = (int(v) for v in rng.integers(4, 50, 2))
        n = int(rng.integers(3, 25))
        rows, cols = rng.uniform(-4, height + 4, n), rng.uniform(-4, width + 4, n)
        expected = np.zeros((height, width), bool)
        rr, cc = draw.polygon(rows, cols, (height, width))
        expected[rr, cc] = True
        assert np.array_equal(polygon_mask(rows, cols, (height, width)), expected)


@pytest.mark.parametrize("orientation", [synth.AXIAL, synth.oblique_orientation(30), synth.SAGITTAL])
def test_mask_contours_mask_round_trip_is_exact_with_holes(orientation):
    mask = blobs((6, 40, 50), seed=3)
    assert (ndimage.label(~mask[0])[1]) > 1  # the test shapes do have holes
    geo = geometry(mask.shape, orientation)
    contours = mask_to_contours(mask, geo)
    for k, points in contours:  # every point lies on its slice's plane
        assert np.allclose((points - geo.positions[k]) @ geo.normal, 0, atol=1e-6)
    assert np.array_equal(contours_to_mask(contours, geo), mask)


def test_simplified_contours_stay_close():
    mask = blobs((4, 64, 64), seed=7)
    geo = geometry(mask.shape)
    exact = mask_to_contours(mask, geo)
    simple = mask_to_contours(mask, geo, tolerance_px=0.45)
    assert sum(len(p) for _, p in simple) < sum(len(p) for _, p in exact)
    back = contours_to_mask(simple, geo)
    assert (back ^ mask).sum() / mask.sum() < 0.02


def test_hole_filling_matches_scipy_per_slice():
    mask = blobs((5, 50, 60), seed=11)
    expected = np.stack([ndimage.binary_fill_holes(m) for m in mask])
    assert not np.array_equal(expected, mask)
    assert np.array_equal(fill_holes_per_slice(mask), expected)
