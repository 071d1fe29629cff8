"""RT QC: empty ROIs, contours outside the image, dose grid coverage, frames of reference, absent images."""

from __future__ import annotations

import pydicom
import pytest

from dicomflow.core.checks import Code, check_path
from dicomflow.testing import synth

SMALL = dict(n_slices=10, rows=32, cols=32)


def findings_by_series(path):
    reports, _ = check_path(path)
    return {r.uid: r.findings for r in reports}


def rtqc_codes(findings):
    return {f.code for f in findings if f.code.startswith("RTQC")}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    out = tmp_path_factory.mktemp("good")
    return out, synth.write_rt_study(out, with_mr=False, **SMALL)


def test_clean_study_has_no_rt_findings(good):
    out, info = good
    found = findings_by_series(out)
    assert {uid: rtqc_codes(f) for uid, f in found.items() if rtqc_codes(f)} == {}


def test_empty_roi(tmp_path):
    ct = synth.write_image_series(tmp_path / "ct", **SMALL)
    rois = (*synth.DEFAULT_ROIS[:2], synth.ROISpec("Empty", "ORGAN", (1, 2, 3), None))
    rs = synth.write_rtstruct(tmp_path / "rs", ct, rois=rois)
    findings = [f for f in findings_by_series(tmp_path)[rs.series_uid] if f.code == Code.RTQC_EMPTY_ROI]
    assert len(findings) == 1 and "ROI number 3" in findings[0].message
    assert "Empty" not in findings[0].message  # ROI names are not echoed


def test_contour_outside_image_volume(tmp_path):
    ct = synth.write_image_series(tmp_path / "ct", orientation=synth.oblique_orientation(15), **SMALL)
    shifted = synth.ROISpec("Far", "ORGAN", (1, 2, 3), (0.0, 0.0, 0.2, 0.2), offset_mm=(0.0, 400.0, 0.0))
    rs = synth.write_rtstruct(tmp_path / "rs", ct, rois=(synth.DEFAULT_ROIS[0], shifted))
    findings = [f for f in findings_by_series(tmp_path)[rs.series_uid] if f.code == Code.RTQC_CONTOUR_OUTSIDE_IMAGE]
    assert len(findings) == 1 and "ROI number 2" in findings[0].message


def test_dose_grid_not_covering_structures(tmp_path):
    ct = synth.write_image_series(tmp_path / "ct", **SMALL)
    rs = synth.write_rtstruct(tmp_path / "rs", ct)
    plan = synth.write_rtplan(tmp_path / "plan", rs)
    covering = synth.write_rtdose(tmp_path / "dose1", plan)
    shifted = synth.write_rtdose(tmp_path / "dose2", plan, shift_mm=(150.0, 0.0, 0.0), seed="other")
    found = findings_by_series(tmp_path)
    assert Code.RTQC_DOSE_GRID_NOT_COVERING not in rtqc_codes(found[covering.series_uid])
    assert Code.RTQC_DOSE_GRID_NOT_COVERING in rtqc_codes(found[shifted.series_uid])


def test_frame_of_reference_mismatch(tmp_path):
    ct = synth.write_image_series(tmp_path / "ct", **SMALL)
    rs = synth.write_rtstruct(tmp_path / "rs", ct)
    plan = synth.write_rtplan(tmp_path / "plan", rs)

    def other_frame(ds):
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.2.1125.9999"

    dose = synth.write_rtdose(tmp_path / "dose", plan, decorate=other_frame)
    found = findings_by_series(tmp_path)
    mismatch = [f for f in found[dose.series_uid] if f.code == Code.RTQC_FRAME_OF_REFERENCE_MISMATCH]
    assert mismatch and mismatch[0].severity == "ERROR"
    assert Code.RTQC_FRAME_OF_REFERENCE_MISMATCH not in rtqc_codes(found[plan.series_uid])


def test_plan_frame_of_reference_mismatch(tmp_path):
    ct = synth.write_image_series(tmp_path / "ct", **SMALL)
    rs = synth.write_rtstruct(tmp_path / "rs", ct)
    plan = synth.write_rtplan(tmp_path / "plan", rs, decorate=lambda ds: setattr(ds, "FrameOfReferenceUID", "1.2.3.4"))
    assert Code.RTQC_FRAME_OF_REFERENCE_MISMATCH in rtqc_codes(findings_by_series(tmp_path)[plan.series_uid])


def test_structure_set_referencing_absent_images(good, tmp_path):
    out, info = good
    ct = synth.write_image_series(tmp_path / "ct", **SMALL)
    rs = synth.write_rtstruct(tmp_path / "rs", ct)
    assert Code.RTQC_REFERENCED_IMAGES_ABSENT not in rtqc_codes(findings_by_series(tmp_path)[rs.series_uid])
    ct.paths[4].unlink()
    found = findings_by_series(tmp_path)
    absent = [f for f in found[rs.series_uid] if f.code == Code.RTQC_REFERENCED_IMAGES_ABSENT]
    assert absent and "1 image instance" in absent[0].message


def test_structure_set_whose_series_is_absent(tmp_path):
    info = synth.write_rt_study(tmp_path, with_mr=False, absent_ct_structure_set=True, **SMALL)
    found = findings_by_series(tmp_path)
    assert Code.RTQC_REFERENCED_SERIES_ABSENT in rtqc_codes(found[info.orphan_rtstruct.series_uid])
    assert Code.RTQC_REFERENCED_IMAGES_ABSENT not in rtqc_codes(found[info.orphan_rtstruct.series_uid])
    assert Code.RTQC_REFERENCED_SERIES_ABSENT not in rtqc_codes(found[info.rtstruct.series_uid])


def test_dose_grid_with_absolute_frame_offsets(tmp_path):
    """Older doses give Grid Frame Offset Vector as absolute z; the grid must still be placed."""
    ct = synth.write_image_series(tmp_path / "ct", **SMALL)
    rs = synth.write_rtstruct(tmp_path / "rs", ct)
    plan = synth.write_rtplan(tmp_path / "plan", rs)
    dose = synth.write_rtdose(tmp_path / "dose", plan)
    ds = pydicom.dcmread(dose.path)
    z0 = float(ds.ImagePositionPatient[2])
    ds.GridFrameOffsetVector = [f"{z0 + float(v):.4f}" for v in ds.GridFrameOffsetVector]
    ds.save_as(dose.path)
    assert Code.RTQC_DOSE_GRID_NOT_COVERING not in rtqc_codes(findings_by_series(tmp_path)[dose.series_uid])
