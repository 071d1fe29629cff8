"""Derived structures computed on result masks: margins, boolean combinations, crops.

A template lists them after its structures, e.g. a PTV as the CTV plus 5 mm cropped 3 mm inside
the body::

    "derived": [
      {"name": "PTV", "color": [255, 0, 0], "type": "PTV",
       "expression": {"op": "crop", "of": {"op": "margin", "of": "CTV", "mm": 5},
                      "to": "Body", "inside_mm": 3}}
    ]

Expressions (JSON): a string names a structure (the processor's ROI key or name, or an earlier
derived structure); ``{"op": "margin", "of": X, "mm": 5}`` (negative: contract) or with
``"mm": {"right", "left", "anterior", "posterior", "superior", "inferior"}`` (anisotropic, each ≥ 0,
missing = 0); ``{"op": "union"|"intersection", "of": [X, Y, ...]}``; ``{"op": "subtract", "of": X,
"minus": Y}``; ``{"op": "crop", "of": X, "to": Y, "inside_mm": 0}`` (X kept only within Y
contracted by ``inside_mm``).

Margins are exact in mm on the image grid: a uniform or per-axis symmetric margin is an ellipsoid
from one Euclidean distance transform with scaled sampling; an asymmetric one is a dilation by
the ellipsoid whose half-axes differ per direction (each octant its own). Patient directions
(LPS: +x left, +y posterior, +z superior) are mapped onto the image axes, which must be aligned
with the patient axes (axial, coronal or sagittal stacks; oblique stacks are refused).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import ndimage

from dicomflow.core.rules.derived import margins as _margins
from dicomflow.core.segmentation.volume import StackGeometry
from dicomflow.errors import SegmentationError

# patient axis (LPS) and sign of each direction: +x is left, +y posterior, +z superior
_PATIENT = {"right": (0, -1), "left": (0, 1), "anterior": (1, -1), "posterior": (1, 1),
            "inferior": (2, -1), "superior": (2, 1)}


def _image_axes(geometry: StackGeometry) -> dict[int, tuple[int, int]]:
    """Patient axis → (image axis (0 slice, 1 row, 2 column), sign of the image axis along it)."""
    axes = {}
    for image_axis, direction in ((0, geometry.normal), (1, geometry.col_dir), (2, geometry.row_dir)):
        direction = np.asarray(direction, float)
        patient_axis = int(np.argmax(np.abs(direction)))
        if abs(direction[patient_axis]) < 0.999:
            raise SegmentationError("margins need an image stack aligned with the patient axes (this one is oblique)")
        axes[patient_axis] = (image_axis, 1 if direction[patient_axis] > 0 else -1)
    if len(axes) != 3:
        raise SegmentationError("the image stack's axes are not orthogonal; margins cannot be placed")
    return axes


def _per_image_axis(margins: dict[str, float], geometry: StackGeometry) -> list[tuple[float, float]]:
    """(margin towards lower index, towards higher index) in mm for each image axis."""
    axes = _image_axes(geometry)
    out = [(0.0, 0.0)] * 3
    for direction, mm in margins.items():
        patient_axis, patient_sign = _PATIENT[direction]
        image_axis, image_sign = axes[patient_axis]
        low, high = out[image_axis]
        if patient_sign * image_sign > 0:
            high = mm
        else:
            low = mm
        out[image_axis] = (low, high)
    return out


def _spacing(geometry: StackGeometry) -> tuple[float, float, float]:
    return (abs(geometry.slice_spacing), float(geometry.pixel_spacing[0]), float(geometry.pixel_spacing[1]))


# Measured between voxel centres a margin comes out short: a mask's outermost centres lie inside
# the surface its voxels cover (a 5 mm PTV on 0.8 × 1.5 mm voxels ~3 % too small). Growing each
# half-axis by this share of the voxel size along it brings margins on 0.5-3 mm grids within
# ±2.5 % of the analytic volume (tests/test_quality_derived.py). Contraction needs no correction.
SURFACE_CORRECTION = 0.35


def _expand_symmetric(mask: np.ndarray, half_axes: tuple[float, float, float], spacing,
                      correction: float = SURFACE_CORRECTION) -> np.ndarray:
    """Dilation by the ellipsoid with ``half_axes`` (mm; zero allowed on some axes)."""
    if not mask.any() or all(h == 0 for h in half_axes):
        return mask.copy()
    half_axes = [h + correction * s if h > 0 else 0.0 for h, s in zip(half_axes, spacing)]
    pad = [int(np.ceil(h / s)) + 1 for h, s in zip(half_axes, spacing)]
    padded = np.pad(mask, [(p, p) for p in pad])
    # axes with no margin: the distance along them must count as infinite, so scale them huge
    sampling = [s / h if h > 0 else 1e6 for s, h in zip(spacing, half_axes)]
    grown = ndimage.distance_transform_edt(~padded, sampling=sampling) <= 1.0 + 1e-9
    return grown[tuple(slice(p, p + n) for p, n in zip(pad, mask.shape))]


def _ellipsoid_element(per_axis: list[tuple[float, float]], spacing) -> np.ndarray:
    """Centred structuring element of the offsets a voxel grows into: in each octant the ellipsoid
    with that octant's half-axes (mm), on the voxel grid."""
    reach = [int(np.floor(max(low, high) / s + 1e-9)) for (low, high), s in zip(per_axis, spacing)]
    grids = np.meshgrid(*[np.arange(-m, m + 1) * s for m, s in zip(reach, spacing)], indexing="ij")
    total = np.zeros(grids[0].shape)
    inside = np.ones(grids[0].shape, bool)
    for axis, grid in enumerate(grids):
        low, high = per_axis[axis]
        half = np.where(grid < 0, low, high)
        inside &= (grid == 0) | (half > 0)
        total += np.where(grid == 0, 0.0, (grid / np.where(half > 0, half, 1.0)) ** 2)
    return inside & (total <= 1.0 + 1e-9)


def apply_margin(mask: np.ndarray, geometry: StackGeometry, mm) -> np.ndarray:
    """``mask`` grown (or, with a negative uniform margin, shrunk) by ``mm`` (see module doc)."""
    margins = _margins(mm, "margin")
    spacing = _spacing(geometry)
    values = set(margins.values())
    if len(values) == 1 and next(iter(values)) < 0:  # contraction: the complement grows
        size = -next(iter(values))
        return mask & ~_expand_symmetric(~mask, (size, size, size), spacing, correction=0.0)
    per_axis = _per_image_axis(margins, geometry)
    if all(low == high for low, high in per_axis):
        return _expand_symmetric(mask, tuple(low for low, _ in per_axis), spacing)
    if not mask.any():
        return mask.copy()
    element = _ellipsoid_element(per_axis, spacing)
    pad = [n // 2 + 1 for n in element.shape]
    padded = np.pad(mask, [(p, p) for p in pad])
    # a voxel grows into exactly the offsets the (centred) element holds
    grown = ndimage.binary_dilation(padded, structure=element)
    return grown[tuple(slice(p, p + n) for p, n in zip(pad, mask.shape))]


def evaluate(expression: Any, masks: Mapping[str, np.ndarray], geometry: StackGeometry) -> np.ndarray:
    """The mask an expression describes, from named ``masks`` on ``geometry``'s grid."""
    if isinstance(expression, str):
        if expression not in masks:
            raise SegmentationError(f"derived structure needs '{expression}', which the result does not contain")
        return masks[expression]
    op = expression["op"]
    if op == "margin":
        return apply_margin(evaluate(expression["of"], masks, geometry), geometry, expression["mm"])
    if op in ("union", "intersection"):
        parts = [evaluate(p, masks, geometry) for p in expression["of"]]
        combine = np.logical_or if op == "union" else np.logical_and
        return combine.reduce(parts)
    if op == "subtract":
        return evaluate(expression["of"], masks, geometry) & ~evaluate(expression["minus"], masks, geometry)
    if op == "crop":
        within = evaluate(expression["to"], masks, geometry)
        inside = float(expression.get("inside_mm", 0) or 0)
        if inside > 0:
            within = apply_margin(within, geometry, -inside)
        return evaluate(expression["of"], masks, geometry) & within
    raise SegmentationError(f"unknown derived-structure operation '{op}'")


def derive_all(definitions, masks: Mapping[str, np.ndarray], geometry: StackGeometry) -> dict[str, np.ndarray]:
    """Every derived structure in order (a later one may use an earlier one); name → mask."""
    available = dict(masks)
    derived = {}
    for definition in definitions:
        mask = evaluate(definition["expression"], available, geometry)
        available[definition["name"]] = mask
        derived[definition["name"]] = mask
    return derived


def add_derived_structures(rtstruct_path, image_paths, template) -> list[str]:
    """Compute ``template.derived`` on a result structure set (masks on its image series) and write
    them into the file as further ROIs, atomically. Returns the names added ([] when none)."""
    import os

    import pydicom

    from dicomflow.core.rules.model import RoiStyle
    from dicomflow.core.segmentation.rtstruct import _style_for, append_rois, read_rtstruct_masks
    from dicomflow.core.segmentation.volume import read_image_series

    if not template.derived:
        return []
    ds = pydicom.dcmread(rtstruct_path)
    series = read_image_series(image_paths)
    masks = {}
    for name, mask in read_rtstruct_masks(ds, series).items():
        masks[name] = mask
        style = _style_for(name, list(template.rois))
        if style is not None:  # the template's key and name both name this ROI
            masks.setdefault(style.key, mask)
            masks.setdefault(style.name, mask)
    derived = derive_all(template.derived, masks, series.geometry)
    styles = [RoiStyle.from_dict({"key": d["name"], **{k: v for k, v in d.items() if k != "expression"}})
              for d in template.derived]
    added = append_rois(ds, series, [(style, derived[style.name]) for style in styles])
    tmp = f"{rtstruct_path}.derived.tmp"
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, rtstruct_path)
    return added
