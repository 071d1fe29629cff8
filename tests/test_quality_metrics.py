"""Comparison metrics against analytic cases and an independent implementation (surface-distance)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dicomflow.core.quality.metrics import compare_masks
from dicomflow.errors import InputError

H = 0.5  # mm per voxel: fine enough for the analytic values


def _spheres(r: float, d: float, spacing=(H, H, H)):
    """Two spheres of radius r (mm) whose centres are d mm apart along x, on one grid."""
    extent = 2 * (r + d + 3)
    shape = tuple(int(extent / s) for s in spacing)
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    cz, cy, cx = (shape[0] * spacing[0] / 2, shape[1] * spacing[1] / 2, shape[2] * spacing[2] / 2 - d / 2)
    a = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= r * r
    b = (x - cx - d) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= r * r
    return a, b


def _analytic_distances(r: float, d: float) -> np.ndarray:
    """Distances from points spread evenly over one sphere to the other sphere's surface: for a
    point at angle θ from the offset, | sqrt(r² + d² - 2rd cosθ) - r |, cosθ uniform on [-1, 1]."""
    t = np.linspace(-1, 1, 400_001)
    return np.abs(np.sqrt(r * r + d * d - 2 * r * d * t) - r)


@pytest.mark.parametrize("r, d", [(15.0, 5.0), (12.0, 3.0)])
def test_offset_spheres_match_the_analytic_values(r, d):
    a, b = _spheres(r, d)
    result = compare_masks(a, b, (H, H, H), tolerance_mm=2.0)
    lens = math.pi * (4 * r + d) * (2 * r - d) ** 2 / 12  # volume of the overlap of two equal spheres
    dice = lens / (4 / 3 * math.pi * r ** 3)
    assert result.dice == pytest.approx(dice, rel=0.02)
    assert result.jaccard == pytest.approx(dice / (2 - dice), rel=0.02)
    distances = _analytic_distances(r, d)
    assert abs(result.hd95_mm - np.percentile(distances, 95)) <= 0.5
    assert abs(result.msd_mm - distances.mean()) <= 0.5
    assert result.surface_dice == pytest.approx(np.mean(distances <= 2.0), abs=0.06)
    assert result.volume_test_cc == pytest.approx(4 / 3 * math.pi * r ** 3 / 1000, rel=0.02)


def test_identical_masks_are_perfect_and_disjoint_ones_are_not():
    a, _ = _spheres(10.0, 0.0)
    same = compare_masks(a, a, (H, H, H))
    assert (same.dice, same.jaccard, same.hd95_mm, same.msd_mm, same.surface_dice, same.apl_mm) == (1.0, 1.0, 0.0, 0.0, 1.0, 0.0)
    far_a, far_b = _spheres(5.0, 20.0)
    apart = compare_masks(far_a, far_b, (H, H, H))
    assert apart.dice == 0.0 and apart.surface_dice == 0.0
    assert apart.hd95_mm > 10.0


def test_added_path_length_is_the_missing_contour():
    """The automatic contour lacks one slice entirely: APL is that slice's whole reference contour."""
    spacing = (2.0, 1.0, 1.0)
    reference = np.zeros((5, 60, 60), bool)
    reference[1:4, 10:50, 10:50] = True  # a 40 × 40 mm square on three slices
    automatic = reference.copy()
    automatic[2] = False
    result = compare_masks(automatic, reference, spacing)
    # the square's edge pixels: 4 × 40 - 4 corners counted once = 156 pixels of 1 mm
    assert result.apl_mm == pytest.approx(156.0)
    assert compare_masks(reference, reference, spacing).apl_mm == 0.0


def test_empty_masks_have_no_surface_distances():
    a, _ = _spheres(5.0, 0.0)
    result = compare_masks(a, np.zeros_like(a), (H, H, H))
    assert result.dice == 0.0 and result.hd95_mm is None and result.as_dict()["msd_mm"] is None


def test_bad_input_is_refused():
    with pytest.raises(InputError, match="one shape"):
        compare_masks(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 3), bool), (1, 1, 1))
    with pytest.raises(InputError, match="spacing"):
        compare_masks(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 2), bool), (1, 0, 1))


def test_agrees_with_an_independent_implementation():
    """DeepMind's surface-distance on an anisotropic grid and shapes that are not spheres. It puts
    the surface on the voxel faces, we on the boundary voxels (as MONAI and medpy do): Dice is
    identical, distances agree within about a voxel's reach."""
    surface_distance = pytest.importorskip("surface_distance")
    spacing = (2.5, 0.9, 0.9)
    shape = (30, 90, 90)
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    a = ((x - 40) / 22) ** 2 + ((y - 40) / 15) ** 2 + ((z - 37) / 25) ** 2 <= 1
    b = ((x - 43) / 20) ** 2 + ((y - 38) / 16) ** 2 + ((z - 35) / 22) ** 2 <= 1
    ours = compare_masks(a, b, spacing, tolerance_mm=3.0)
    distances = surface_distance.compute_surface_distances(a, b, spacing)
    assert ours.dice == pytest.approx(surface_distance.compute_dice_coefficient(a, b), abs=1e-9)
    assert ours.hd95_mm == pytest.approx(surface_distance.compute_robust_hausdorff(distances, 95), abs=1.0)
    theirs_msd = np.mean(surface_distance.compute_average_surface_distance(distances))
    assert ours.msd_mm == pytest.approx(theirs_msd, abs=0.5)
    assert ours.surface_dice == pytest.approx(surface_distance.compute_surface_dice_at_tolerance(distances, 3.0), abs=0.1)
