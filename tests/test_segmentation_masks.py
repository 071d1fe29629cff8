"""Body and lung masks on hand-built HU volumes: side assignment by patient x, gas pockets, joins."""

import numpy as np
import pytest

from dicomflow.core.segmentation.masks import segment_body_and_lungs
from dicomflow.core.segmentation.volume import StackGeometry
from dicomflow.errors import SegmentationError

N, ROWS, COLS = 12, 60, 80


def geometry(row_dir=(1.0, 0.0, 0.0)):
    """1 mm pixels, 2 mm slices; columns run along ``row_dir`` (patient x, possibly reversed)."""
    row_dir = np.asarray(row_dir, float)
    col_dir = np.array([0.0, 1.0, 0.0])
    normal = np.cross(row_dir, col_dir)
    start = -(COLS - 1) / 2 * row_dir - (ROWS - 1) / 2 * col_dir
    positions = np.array([start + k * 2.0 * normal for k in range(N)])
    return StackGeometry(positions, row_dir, col_dir, (1.0, 1.0), ROWS, COLS)


def ellipse(cr, cc, ar, ac):
    r, c = np.mgrid[0:ROWS, 0:COLS]
    return ((r - cr) / ar) ** 2 + ((c - cc) / ac) ** 2 <= 1


def phantom(gas=False, bridge=False):
    """Air everywhere, a body, a big lung on the image's right half (high column index) and a
    smaller one on the left half; optionally a gas pocket and a bridge joining the lungs."""
    hu = np.full((N, ROWS, COLS), -1000.0)
    body = ellipse(30, 40, 26, 36)
    big, small = ellipse(28, 58, 14, 10), ellipse(28, 22, 12, 8)
    hu[:] = np.where(body, 40.0, -1000.0)
    hu[:, big | small] = -800.0
    if bridge:
        hu[:, 27:30, 22:58] = -800.0
    if gas:
        hu[5, 48:50, 40:42] = -900.0  # 4 voxels of bowel gas
    return hu, body, big, small


@pytest.mark.parametrize("row_dir, big_is_left", [((1.0, 0.0, 0.0), True), ((-1.0, 0.0, 0.0), False)])
def test_lungs_are_named_by_patient_side_not_image_side(row_dir, big_is_left):
    hu, body, big, small = phantom(gas=True)
    masks = segment_body_and_lungs(hu, geometry(row_dir), min_lung_volume_ml=0.01)
    left, right = (big, small) if big_is_left else (small, big)
    assert np.array_equal(masks.body, np.broadcast_to(body, hu.shape))
    assert np.array_equal(masks.lung_left, np.broadcast_to(left, hu.shape))
    assert np.array_equal(masks.lung_right, np.broadcast_to(right, hu.shape))  # gas pocket dropped


def test_joined_lungs_are_cut_at_the_body_midline():
    hu, body, big, small = phantom(bridge=True)
    geo = geometry()
    masks = segment_body_and_lungs(hu, geo)
    air = hu < -400
    midline = 0.5  # body centre: column 40 of 0..79 centred on x = 0
    assert geo.centroid_x(np.broadcast_to(body, hu.shape)) == pytest.approx(midline)
    assert masks.lung_left.any() and masks.lung_right.any()
    for k in range(N):
        x = geo.patient_x(k)
        assert np.array_equal(masks.lung_left[k], air[k] & body & (x > midline))
        assert np.array_equal(masks.lung_right[k], air[k] & body & (x <= midline))


def test_min_volume_drops_small_air_and_empty_input_fails():
    hu, _, _, _ = phantom()
    masks = segment_body_and_lungs(hu, geometry(), min_lung_volume_ml=1000.0)
    assert not masks.lungs.any() and masks.body.any()
    with pytest.raises(SegmentationError, match="no voxel above"):
        segment_body_and_lungs(np.full((2, 8, 8), -1000.0), geometry())
