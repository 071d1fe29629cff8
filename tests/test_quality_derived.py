"""Derived structures on masks: margins in mm (uniform, anisotropic, contraction), booleans, crop,
and written into a structure set after the processor returned."""

from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest

from dicomflow.core.rules.model import Template
from dicomflow.core.segmentation.derived import add_derived_structures, apply_margin, derive_all
from dicomflow.core.segmentation.volume import StackGeometry
from dicomflow.errors import RuleDefinitionError, SegmentationError


def _geometry(n=80, spacing=1.0, slice_spacing=1.0, row_dir=(1.0, 0, 0), col_dir=(0, 1.0, 0)):
    normal = np.cross(row_dir, col_dir)
    positions = np.array([k * slice_spacing * normal for k in range(n)], float)
    return StackGeometry(positions=positions, row_dir=np.array(row_dir, float), col_dir=np.array(col_dir, float),
                         pixel_spacing=(spacing, spacing), rows=n, cols=n)


def _sphere(geometry, radius, centre=None):
    n = geometry.shape
    spacing = (abs(geometry.slice_spacing), *geometry.pixel_spacing)
    grids = np.meshgrid(*[np.arange(k) * s for k, s in zip(n, spacing)], indexing="ij")
    centre = centre or [k * s / 2 for k, s in zip(n, spacing)]
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius ** 2


def test_ptv_is_ctv_plus_5_mm_within_3_percent():
    geometry = _geometry(n=70, spacing=0.8, slice_spacing=1.5)  # anisotropic, as a planning CT
    ctv = _sphere(geometry, 15.0)
    ptv = derive_all([{"name": "PTV", "expression": {"op": "margin", "of": "CTV", "mm": 5}}], {"CTV": ctv}, geometry)["PTV"]
    voxel = 0.8 * 0.8 * 1.5
    assert ptv.sum() * voxel == pytest.approx(4 / 3 * math.pi * 20.0 ** 3, rel=0.03)
    assert not (ctv & ~ptv).any()  # the CTV lies inside its PTV


def test_contraction_is_the_inverse_margin():
    geometry = _geometry(n=60)
    body = _sphere(geometry, 25.0)
    inner = apply_margin(body, geometry, -5)
    assert inner.sum() == pytest.approx(4 / 3 * math.pi * 20.0 ** 3, rel=0.03)


def test_anisotropic_margins_go_the_patient_directions():
    geometry = _geometry(n=40)
    box = np.zeros(geometry.shape, bool)
    box[15:25, 15:25, 15:25] = True  # slice k ~ z (superior +), row ~ y (posterior +), col ~ x (left +)
    grown = apply_margin(box, geometry, {"left": 5, "superior": 3, "anterior": 2})
    k, r, c = np.nonzero(grown)
    assert (k.min(), k.max()) == (15, 27)  # 3 mm superior only
    assert (r.min(), r.max()) == (13, 24)  # 2 mm anterior (towards lower y) only
    assert (c.min(), c.max()) == (15, 29)  # 5 mm to the patient's left only


def test_feet_first_or_flipped_stacks_keep_the_directions_right():
    """Rows running anterior (col_dir -y): 'posterior' must still grow towards +y."""
    geometry = _geometry(n=40, col_dir=(0, -1.0, 0), row_dir=(1.0, 0, 0))
    box = np.zeros(geometry.shape, bool)
    box[15:25, 15:25, 15:25] = True
    grown = apply_margin(box, geometry, {"posterior": 4})
    _, r, _ = np.nonzero(grown)
    assert (r.min(), r.max()) == (11, 24)  # +y is towards lower row indices here


def test_boolean_operations_and_crop():
    geometry = _geometry(n=60)
    ctv = _sphere(geometry, 12.0)
    body = _sphere(geometry, 20.0, centre=[30, 30, 40])
    lung = _sphere(geometry, 8.0, centre=[30, 30, 18])
    out = derive_all([
        {"name": "PTV", "expression": {"op": "crop", "of": {"op": "margin", "of": "CTV", "mm": 5}, "to": "Body", "inside_mm": 3}},
        {"name": "Both", "expression": {"op": "union", "of": ["CTV", "Lung"]}},
        {"name": "Overlap", "expression": {"op": "intersection", "of": ["PTV", "Lung"]}},
        {"name": "Lung-PTV", "expression": {"op": "subtract", "of": "Lung", "minus": "PTV"}},
    ], {"CTV": ctv, "Body": body, "Lung": lung}, geometry)
    allowed = apply_margin(body, geometry, -3)
    assert out["PTV"].any() and not (out["PTV"] & ~allowed).any()
    assert (out["Both"] == (ctv | lung)).all()
    assert (out["Overlap"] == (out["PTV"] & lung)).all()
    assert not (out["Lung-PTV"] & out["PTV"]).any() and (out["Lung-PTV"] | out["Overlap"]).sum() == lung.sum()


def test_oblique_stacks_and_missing_structures_are_refused():
    c, s = math.cos(0.3), math.sin(0.3)
    oblique = _geometry(n=10, col_dir=(0, c, s))
    with pytest.raises(SegmentationError, match="oblique"):
        apply_margin(np.ones(oblique.shape, bool), oblique, {"left": 3, "superior": 1})
    with pytest.raises(SegmentationError, match="does not contain"):
        derive_all([{"name": "PTV", "expression": {"op": "margin", "of": "CTV", "mm": 5}}], {}, _geometry(n=5))


@pytest.mark.parametrize("derived, message", [
    ([{"name": "PTV", "color": [1, 2, 3], "expression": {"op": "margin", "of": "GTV", "mm": 5}}], "unknown structure 'GTV'"),
    ([{"name": "PTV", "color": [1, 2, 3], "expression": {"op": "margin", "of": "CTV", "mm": 500}}], "at most"),
    ([{"name": "PTV", "color": [1, 2, 3], "expression": {"op": "margin", "of": "CTV", "mm": {"up": 3}}}], "right, left"),
    ([{"name": "PTV", "color": [1, 2, 3], "expression": {"op": "union", "of": ["CTV"]}}], "at least two"),
    ([{"name": "PTV", "color": [1, 2, 3], "expression": {"op": "exec", "of": "CTV"}}], "'op' one of"),
    ([{"name": "CTV", "color": [1, 2, 3], "expression": "CTV"}], "name of another structure"),
    ([{"name": "PTV", "expression": "CTV"}], "color"),
])
def test_bad_definitions_are_refused_when_the_template_loads(derived, message):
    with pytest.raises(RuleDefinitionError, match=message):
        Template.from_dict({"name": "t", "processor": "builtin.ct_body_lungs", "derived": derived,
                            "rois": [{"key": "ctv", "name": "CTV", "color": [0, 0, 255], "type": "CTV"}]})


def test_derived_structures_are_written_into_the_result(tmp_path):
    from dicomflow.core.segmentation.rtstruct import build_rtstruct, read_rtstruct_masks, write_dataset
    from dicomflow.core.segmentation.volume import read_image_series
    from dicomflow.core.rules.model import RoiStyle
    from dicomflow.testing import synth

    info = synth.write_image_series(tmp_path / "ct", n_slices=30, rows=64, cols=64, pixel_spacing=(2.0, 2.0),
                                    slice_thickness=2.0, seed="derived")
    series = read_image_series(info.paths)
    ctv = _sphere(series.geometry, 12.0)
    path = write_dataset(build_rtstruct(series, [(RoiStyle("ctv", "CTV", (0, 0, 255), "CTV"), ctv)]), tmp_path / "out")
    template = Template.from_dict({
        "name": "t", "processor": "external.command",
        "rois": [{"key": "ctv", "name": "CTV", "color": [0, 0, 255], "type": "CTV"}],
        "derived": [{"name": "PTV", "color": [255, 0, 0], "type": "PTV", "observation_label": "PTV 5mm",
                     "expression": {"op": "margin", "of": "ctv", "mm": 5}}]})
    assert add_derived_structures(path, info.paths, template) == ["PTV"]
    ds = pydicom.dcmread(path)
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["CTV", "PTV"]
    [observation] = [o for o in ds.RTROIObservationsSequence if o.ReferencedROINumber == 2]
    assert (observation.RTROIInterpretedType, observation.ROIObservationLabel) == ("PTV", "PTV 5mm")
    masks = read_rtstruct_masks(ds, series)
    volume = masks["PTV"].sum() * series.geometry.voxel_volume_mm3
    assert volume == pytest.approx(4 / 3 * math.pi * 17.0 ** 3, rel=0.05)  # through contours and back
