"""Restyling a received structure set per the template: names, colours, interpreted types."""

import pydicom

from dicomflow.core.rules import RoiStyle, builtin_templates
from dicomflow.core.segmentation import apply_roi_styles
from dicomflow.testing import synth


def test_template_styles_rename_recolour_and_retype(tmp_path):
    ct = synth.write_image_series(None, n_slices=6, rows=16, cols=16)
    rs = synth.write_rtstruct(tmp_path, ct)  # ROIs: BODY, Lung_L, Lung_R, PTV
    ds = pydicom.dcmread(rs.path)
    styles = list(builtin_templates()["ct-body-lungs"].rois) + [RoiStyle("gtv", "GTV_1", (1, 2, 3), "GTV", 7)]
    ds.StructureSetROISequence[3].ROIName = "label_7"  # what the NIfTI bridge calls an unstyled label
    changed = apply_roi_styles(ds, styles)
    assert changed == [("BODY", "Body"), ("Lung_L", "Lung_L"), ("Lung_R", "Lung_R"), ("label_7", "GTV_1")]
    by_number = {r.ROINumber: r.ROIName for r in ds.StructureSetROISequence}
    colours = {by_number[c.ReferencedROINumber]: tuple(c.ROIDisplayColor) for c in ds.ROIContourSequence}
    types = {by_number[o.ReferencedROINumber]: o.RTROIInterpretedType for o in ds.RTROIObservationsSequence}
    assert colours == {"Body": (0, 200, 0), "Lung_L": (0, 128, 255), "Lung_R": (255, 160, 0), "GTV_1": (1, 2, 3)}
    assert types == {"Body": "EXTERNAL", "Lung_L": "ORGAN", "Lung_R": "ORGAN", "GTV_1": "GTV"}
    # contours are untouched
    assert len(ds.ROIContourSequence[0].ContourSequence) == 6


def test_unmatched_rois_are_left_alone(tmp_path):
    ct = synth.write_image_series(None, n_slices=4, rows=16, cols=16)
    ds = pydicom.dcmread(synth.write_rtstruct(tmp_path, ct).path)
    before = [(r.ROIName, tuple(c.ROIDisplayColor)) for r, c in zip(ds.StructureSetROISequence, ds.ROIContourSequence)]
    assert apply_roi_styles(ds, [RoiStyle("heart", "Heart", (255, 0, 0))]) == []
    after = [(r.ROIName, tuple(c.ROIDisplayColor)) for r, c in zip(ds.StructureSetROISequence, ds.ROIContourSequence)]
    assert after == before
