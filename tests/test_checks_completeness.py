"""Completeness: missing slices with their positions, duplicates, spacing, geometry; oblique and
enhanced multi-frame series; the ``dicomflow check`` contract."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pydicom
import pytest

from dicomflow.core.checks import Code, SliceGeometry, check_completeness, check_path, slices_from_dataset
from dicomflow.testing import synth

SMALL = dict(rows=32, cols=32)


def report_for(path, series_uid):
    reports, _ = check_path(path)
    return next(r for r in reports if r.uid == series_uid)


def codes(findings):
    return {f.code for f in findings}


@pytest.mark.parametrize("multiframe", [False, True])
@pytest.mark.parametrize("orientation", [synth.AXIAL, synth.oblique_orientation(25.0)], ids=["axial", "oblique"])
def test_intact_series_is_complete(tmp_path, orientation, multiframe):
    info = synth.write_image_series(tmp_path, n_slices=10, orientation=orientation, multiframe=multiframe, **SMALL)
    report = report_for(tmp_path, info.series_uid)
    assert report.complete is True
    assert report.missing_slices == []
    assert not [f for f in report.findings if f.code.startswith("COMPLETENESS") and f.severity != "INFO"]


@pytest.mark.parametrize("multiframe", [False, True])
@pytest.mark.parametrize("orientation", [synth.AXIAL, synth.oblique_orientation(25.0)], ids=["axial", "oblique"])
def test_removed_slice_is_reported_with_its_position(tmp_path, orientation, multiframe):
    info = synth.write_image_series(
        tmp_path, n_slices=10, orientation=orientation, multiframe=multiframe, skip_slices=[4], **SMALL
    )
    report = report_for(tmp_path, info.series_uid)
    assert report.complete is False
    assert report.missing_slices == pytest.approx(info.skipped_locations, abs=0.01)
    assert Code.COMPLETENESS_MISSING_SLICES in codes(report.findings)


def test_several_gaps_of_different_widths(tmp_path):
    info = synth.write_image_series(tmp_path, n_slices=16, skip_slices=[2, 7, 8, 9], **SMALL)
    report = report_for(tmp_path, info.series_uid)
    assert report.missing_slices == pytest.approx(sorted(info.skipped_locations), abs=0.01)
    assert Code.COMPLETENESS_INCONSISTENT_SPACING not in codes(report.findings)


def test_duplicate_positions(tmp_path):
    info = synth.write_image_series(tmp_path, slice_offsets=[0, 2.5, 5, 5, 7.5, 10], **SMALL)
    report = report_for(tmp_path, info.series_uid)
    assert report.complete is False
    assert Code.COMPLETENESS_DUPLICATE_POSITIONS in codes(report.findings)
    assert report.missing_slices == []


def test_inconsistent_spacing(tmp_path):
    info = synth.write_image_series(tmp_path, slice_offsets=[0, 2.5, 5, 7.5, 10.7, 13.2, 15.7], **SMALL)
    report = report_for(tmp_path, info.series_uid)
    assert report.complete is False
    assert Code.COMPLETENESS_INCONSISTENT_SPACING in codes(report.findings)
    assert report.missing_slices == []


def _rewrite(path, **changes):
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.save_as(path)


@pytest.mark.parametrize(
    "change, code",
    [
        (dict(ImageOrientationPatient=[1, 0, 0, 0, 0, -1]), Code.COMPLETENESS_INCONSISTENT_ORIENTATION),
        (dict(PixelSpacing=["0.5", "0.5"]), Code.COMPLETENESS_INCONSISTENT_PIXEL_SPACING),
        (dict(Rows=16), Code.COMPLETENESS_INCONSISTENT_MATRIX),
    ],
    ids=["orientation", "pixel-spacing", "matrix"],
)
def test_inconsistent_geometry(tmp_path, change, code):
    info = synth.write_image_series(tmp_path, n_slices=6, **SMALL)
    intact = report_for(tmp_path, info.series_uid)
    assert code not in codes(intact.findings)
    _rewrite(info.paths[3], **change)
    report = report_for(tmp_path, info.series_uid)
    assert report.complete is False
    assert code in codes(report.findings)


def test_instance_number_gap_is_only_a_hint(tmp_path):
    info = synth.write_image_series(tmp_path, n_slices=6, **SMALL)
    _rewrite(info.paths[5], InstanceNumber=42)
    report = report_for(tmp_path, info.series_uid)
    hint = [f for f in report.findings if f.code == Code.COMPLETENESS_INSTANCE_NUMBER_GAP]
    assert hint and hint[0].severity == "INFO"
    assert report.complete is True


def test_multiframe_frames_come_from_functional_groups(tmp_path):
    info = synth.write_image_series(tmp_path, n_slices=7, multiframe=True, orientation=synth.oblique_orientation(10), **SMALL)
    ds = pydicom.dcmread(info.paths[0], stop_before_pixels=True)
    assert "ImagePositionPatient" not in ds  # geometry only in the functional groups
    slices = slices_from_dataset(ds)
    assert [s.frame for s in slices] == list(range(1, 8))
    assert np.allclose([s.position for s in slices], info.positions, atol=1e-3)
    assert all(s.orientation == pytest.approx(info.geometry.orientation, abs=1e-6) for s in slices)


def _slices(offsets, normal=(0.0, 0.0, 1.0)):
    orientation = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    return [
        SliceGeometry(f"1.2.{i}", i + 1, tuple(np.asarray(normal) * d), orientation, (1.0, 1.0), 8, 8)
        for i, d in enumerate(offsets)
    ]


def test_unordered_input_and_thin_gap():
    offsets = [10.0, 0.0, 4.0, 2.0, 8.0]  # 6.0 missing, order scrambled
    result = check_completeness(_slices(offsets))
    assert result.missing_positions == [6.0]
    assert result.spacing == pytest.approx(2.0)
    assert check_completeness(_slices([0.0, 2.0, 4.0, 6.0])).complete is True


def test_slices_without_geometry_cannot_be_complete():
    broken = [SliceGeometry("1.2.3", 1, None, None, None, 8, 8), *_slices([0.0, 1.0])]
    result = check_completeness(broken)
    assert result.complete is False
    assert codes(result.findings) == {Code.COMPLETENESS_NO_GEOMETRY}


def test_cli_check_contract(tmp_path):
    info = synth.write_rt_study(tmp_path, n_slices=10, with_mr=False, skip_slices=[3], **SMALL)
    proc = subprocess.run(
        [sys.executable, "-m", "dicomflow.cli", "check", str(tmp_path), "--json"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr  # findings do not make the command fail
    doc = json.loads(proc.stdout)
    by_uid = {s["uid"]: s for s in doc["series"]}
    assert set(by_uid) == set(info.series_uids)
    for s in doc["series"]:
        assert {"uid", "modality", "complete", "missing_slices", "findings"} <= set(s)
        for f in s["findings"]:
            assert set(f) == {"severity", "code", "message"} and f["severity"] in {"INFO", "WARNING", "ERROR"}
    ct = by_uid[info.ct.series_uid]
    assert ct["complete"] is False
    assert ct["missing_slices"] == pytest.approx(info.ct.skipped_locations, abs=0.01)
    assert "COMPLETENESS_MISSING_SLICES" in {f["code"] for f in ct["findings"]}
    assert by_uid[info.rtstruct.series_uid]["complete"] is None
    assert by_uid[info.doses[0].series_uid]["complete"] is None
    # the messages carry no identifying values
    text = json.dumps([s["findings"] for s in doc["series"]])
    for value in (info.patient.patient_id, info.patient.birth_date, str(info.patient.name).split("^")[0]):
        assert value not in text
    assert subprocess.run([sys.executable, "-m", "dicomflow.cli", "check", str(tmp_path / "absent"), "--json"],
                          capture_output=True).returncode != 0


def test_ct_without_plane_geometry_is_incomplete(tmp_path):
    info = synth.write_image_series(tmp_path, n_slices=4, **SMALL)
    for path in info.paths:
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient
        del ds.ImageOrientationPatient
        ds.save_as(path)
    report = report_for(tmp_path, info.series_uid)
    assert report.complete is False
    assert Code.COMPLETENESS_NO_GEOMETRY in codes(report.findings)
    assert "4 slice(s)" in next(f.message for f in report.findings if f.code == Code.COMPLETENESS_NO_GEOMETRY)


def test_image_without_geometry_that_is_not_a_stack_is_not_judged(tmp_path):
    info = synth.write_image_series(tmp_path, n_slices=2, **SMALL)
    for path in info.paths:
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient
        del ds.ImageOrientationPatient
        ds.Modality = "OT"
        ds.save_as(path)
    assert report_for(tmp_path, info.series_uid).complete is None
