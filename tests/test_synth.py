"""The synthetic data generator: geometry, references, ground truth, validity (dciodvfy), CLI."""

import json
import subprocess
import sys
import zipfile

import numpy as np
import pydicom
import pytest

from dicomflow.testing import synth
from tests.conftest import require_tool


def _read(path, **kw):
    return pydicom.dcmread(path, **kw)


def _dciodvfy_errors(path) -> list[str]:
    tool = require_tool("dciodvfy")
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    return [line for line in out.splitlines() if "error" in line.lower()]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    return synth.write_rt_study(out, n_slices=10, rows=48, cols=48, seed=7,
                                absent_ct_structure_set=True, plan_without_structure_set=True,
                                with_registration=True)


# ---------------------------------------------------------------- geometry
@pytest.mark.parametrize("orientation", [synth.AXIAL, synth.oblique_orientation(25.0),
                                         synth.SAGITTAL])
def test_positions_lie_along_the_normal_with_the_spacing(tmp_path, orientation):
    info = synth.write_image_series(tmp_path, n_slices=6, rows=16, cols=20, slice_thickness=3.0,
                                    orientation=orientation, seed=1)
    dss = sorted((_read(p, stop_before_pixels=True) for p in info.paths),
                 key=lambda d: int(d.InstanceNumber))
    iop = np.array([float(x) for x in dss[0].ImageOrientationPatient])
    assert np.allclose(iop, orientation, atol=1e-6)
    normal = np.cross(iop[:3], iop[3:])
    pos = np.array([[float(x) for x in d.ImagePositionPatient] for d in dss])
    steps = np.diff(pos, axis=0)
    # each step is exactly spacing * normal: no in-plane drift
    assert np.allclose(steps, 3.0 * normal, atol=1e-3)
    assert all(float(d.SpacingBetweenSlices) == 3.0 and float(d.SliceThickness) == 3.0 for d in dss)
    assert np.allclose([float(d.SliceLocation) for d in dss], pos @ normal, atol=1e-3)
    assert len({d.FrameOfReferenceUID for d in dss}) == 1
    assert [d.SOPInstanceUID for d in dss] == info.sop_instance_uids
    assert (dss[0].Rows, dss[0].Columns) == (16, 20)


def test_skip_slices_leaves_a_gap_at_the_reported_position(tmp_path):
    info = synth.write_image_series(tmp_path, n_slices=8, rows=16, cols=16, skip_slices=[3],
                                    seed=2)
    assert len(info.paths) == 7
    locs = sorted(float(_read(p, stop_before_pixels=True).SliceLocation) for p in info.paths)
    gaps = np.diff(locs)
    assert np.isclose(gaps.max(), 2 * info.geometry.slice_spacing)
    missing = (locs[int(np.argmax(gaps))] + locs[int(np.argmax(gaps)) + 1]) / 2
    assert info.skipped_locations == pytest.approx([missing])


def test_file_format_and_transfer_syntaxes(tmp_path):
    explicit = synth.write_image_series(tmp_path / "e", n_slices=2, rows=8, cols=8, seed=3)
    implicit = synth.write_image_series(tmp_path / "i", n_slices=2, rows=8, cols=8, seed=3,
                                        implicit_vr=True)
    for info, ts in ((explicit, pydicom.uid.ExplicitVRLittleEndian),
                     (implicit, pydicom.uid.ImplicitVRLittleEndian)):
        raw = info.paths[0].read_bytes()
        assert raw[128:132] == b"DICM"
        ds = _read(info.paths[0])
        assert ds.file_meta.TransferSyntaxUID == ts
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.pixel_array.shape == (8, 8)


# ---------------------------------------------------------------- phantom
@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_masks_agree_with_pixel_values(tmp_path, modality):
    info = synth.write_image_series(tmp_path, modality=modality, n_slices=9, rows=40, cols=48,
                                    noise=5.0, seed=4, skip_slices=[0])
    masks = synth.phantom_masks(info)
    dss = sorted((_read(p) for p in info.paths), key=lambda d: int(d.InstanceNumber))
    vol = np.stack([d.pixel_array * float(d.get("RescaleSlope", 1)) + float(d.get("RescaleIntercept", 0))
                    for d in dss])
    assert masks.body.shape == vol.shape == (8, 40, 48)
    assert masks.lungs.any() and not masks.lungs.all(axis=(1, 2)).any()
    assert not (masks.lungs & ~masks.body).any()  # lungs are inside the body
    soft = masks.body & ~masks.lungs
    if modality == "CT":
        assert abs(np.median(vol[~masks.body]) - synth.AIR_HU) < 20
        assert abs(np.median(vol[masks.lungs]) - synth.LUNG_HU) < 20
        assert abs(np.median(vol[soft]) - synth.BODY_HU) < 20
        # a threshold recovers the truth exactly (noise is small)
        assert ((vol > -500) == (masks.body & ~masks.lungs)).all()
    else:
        assert vol[soft].min() > vol[masks.lungs].max() > vol[~masks.body].min() - 1


def test_lungs_only_in_the_middle_of_the_stack():
    geo = synth.make_geometry(n_slices=20, rows=32, cols=32)
    masks = synth.phantom_masks(geo)
    per_slice = masks.lungs.any(axis=(1, 2))
    assert not per_slice[0] and not per_slice[-1] and per_slice[10]
    assert masks.body.all(axis=0).any()


# ---------------------------------------------------------------- RT references
def test_rtstruct_references_resolve_to_ct(study):
    rs = _read(study.rtstruct.path)
    ct = {_read(p, stop_before_pixels=True).SOPInstanceUID: p for p in study.ct.paths}
    ref_for = rs.ReferencedFrameOfReferenceSequence[0]
    assert ref_for.FrameOfReferenceUID == study.ct.frame_of_reference_uid == rs.FrameOfReferenceUID
    rt_study = ref_for.RTReferencedStudySequence[0]
    assert rt_study.ReferencedSOPInstanceUID == study.study_uid
    rt_series = rt_study.RTReferencedSeriesSequence[0]
    assert rt_series.SeriesInstanceUID == study.ct.series_uid
    assert {i.ReferencedSOPInstanceUID for i in rt_series.ContourImageSequence} == set(ct)
    names = [r.ROIName for r in rs.StructureSetROISequence]
    assert names == ["BODY", "Lung_L", "Lung_R", "PTV"]
    types = {o.ReferencedROINumber: o.RTROIInterpretedType for o in rs.RTROIObservationsSequence}
    assert types[1] == "EXTERNAL" and types[4] == "PTV"
    for roi in rs.ROIContourSequence:
        assert len(roi.ROIDisplayColor) == 3
        for contour in roi.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            pts = np.array(contour.ContourData, float).reshape(-1, 3)
            assert len(pts) == contour.NumberOfContourPoints
            image = _read(ct[contour.ContourImageSequence[0].ReferencedSOPInstanceUID],
                          stop_before_pixels=True)
            # every point lies in the plane of the referenced slice
            normal = np.cross(*np.array(image.ImageOrientationPatient, float).reshape(2, 3))
            ipp = np.array(image.ImagePositionPatient, float)
            assert np.allclose((pts - ipp) @ normal, 0, atol=1e-2)
    body = rs.ROIContourSequence[0].ContourSequence
    assert len(body) == len(study.ct.paths)


def test_contours_enclose_the_mask(study):
    """The BODY contour, rasterised on its slice, matches the ground-truth body mask."""
    from skimage.draw import polygon

    rs = _read(study.rtstruct.path)
    geo = study.ct.geometry
    masks = synth.phantom_masks(study.ct)
    contour = rs.ROIContourSequence[0].ContourSequence[0]
    sop = contour.ContourImageSequence[0].ReferencedSOPInstanceUID
    i = study.ct.sop_instance_uids.index(sop)
    pts = np.array(contour.ContourData, float).reshape(-1, 3) - geo.position(study.ct.slice_indices[i])
    cols = pts @ geo.row_dir / geo.pixel_spacing[1]
    rows = pts @ geo.col_dir / geo.pixel_spacing[0]
    raster = np.zeros((geo.rows, geo.cols), bool)
    rr, cc = polygon(rows, cols, raster.shape)
    raster[rr, cc] = True
    truth = masks.body[i]
    dice = 2 * (raster & truth).sum() / (raster.sum() + truth.sum())
    assert dice > 0.97


def test_plans_doses_and_rtimage_reference_each_other(study):
    approved, unapproved = study.approved_plan, study.unapproved_plan
    for plan in (approved, unapproved):
        ds = _read(plan.path)
        assert ds.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == \
            study.rtstruct.sop_instance_uid
        assert ds.FrameOfReferenceUID == study.ct.frame_of_reference_uid
        assert ds.FractionGroupSequence[0].NumberOfFractionsPlanned > 0
        beams = {b.BeamNumber for b in ds.BeamSequence}
        assert {r.ReferencedBeamNumber for r in ds.FractionGroupSequence[0].ReferencedBeamSequence} == beams
        assert len(beams) >= 2 and all(b.NumberOfControlPoints == len(b.ControlPointSequence)
                                       for b in ds.BeamSequence)
        assert ds.PatientSetupSequence[0].PatientPosition == "HFS"
        dose = _read(study.dose_for(plan).path)
        assert dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
        assert (dose.DoseType, dose.DoseSummationType, dose.DoseUnits) == ("PHYSICAL", "PLAN", "GY")
        assert dose.FrameOfReferenceUID == study.ct.frame_of_reference_uid
        assert len(dose.GridFrameOffsetVector) == dose.NumberOfFrames == dose.pixel_array.shape[0]
        gy = dose.pixel_array * float(dose.DoseGridScaling)
        assert 55 < gy.max() <= 60.01
    a, u = _read(approved.path), _read(unapproved.path)
    assert a.ApprovalStatus == "APPROVED" and a.ReviewDate and a.ReviewerName
    assert u.ApprovalStatus == "UNAPPROVED" and "ReviewDate" not in u
    rtimage = _read(study.rtimage.path)
    assert rtimage.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert rtimage.ReferencedBeamNumber in {b.BeamNumber for b in a.BeamSequence}
    assert rtimage.RTImagePlane == "NORMAL" and rtimage.RTImageLabel


def test_orphan_structure_set_and_plan_without_structure_set(study):
    present = {_read(p, stop_before_pixels=True).SOPInstanceUID for p in study.paths}
    orphan = _read(study.orphan_rtstruct.path)
    refs = {i.ReferencedSOPInstanceUID for i in orphan.ReferencedFrameOfReferenceSequence[0]
            .RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].ContourImageSequence}
    assert refs and not refs & present
    assert refs == set(study.absent_ct.sop_instance_uids)
    assert not study.absent_ct.paths
    plan3 = _read(study.plans[2].path)
    assert "ReferencedStructureSetSequence" not in plan3
    assert plan3.FrameOfReferenceUID == study.ct.frame_of_reference_uid
    mr = _read(study.mr.paths[0], stop_before_pixels=True)
    assert mr.FrameOfReferenceUID != study.ct.frame_of_reference_uid
    assert mr.StudyInstanceUID != study.study_uid and mr.PatientID == study.patient.patient_id


def test_all_uids_unique_and_well_formed(study):
    uids = [study.ct.series_uid, study.mr.series_uid, *study.ct.sop_instance_uids,
            *[o.sop_instance_uid for o in study.rt_objects], *[o.series_uid for o in study.rt_objects]]
    assert len(uids) == len(set(uids))
    assert all(u.startswith("2.25.") and len(u) <= 64 for u in uids)


# ---------------------------------------------------------------- determinism and hooks
def test_seed_is_deterministic_and_default_is_unique(tmp_path):
    a = synth.write_rt_study(tmp_path / "a", n_slices=3, rows=8, cols=8, seed=11, with_mr=False)
    b = synth.write_rt_study(tmp_path / "b", n_slices=3, rows=8, cols=8, seed=11, with_mr=False)
    c = synth.write_rt_study(tmp_path / "c", n_slices=3, rows=8, cols=8, with_mr=False)
    assert a.series_uids == b.series_uids
    assert a.ct.paths[0].read_bytes() == b.ct.paths[0].read_bytes()
    assert not set(a.series_uids) & set(c.series_uids)


def test_extra_and_decorate_reach_every_dataset(tmp_path):
    seen = []

    def decorate(ds):
        ds.PatientComments = "MARKER-XYZ"
        seen.append(ds.Modality)

    info = synth.write_rt_study(tmp_path, n_slices=3, rows=8, cols=8, seed=5,
                                extra={"InstitutionName": "Marker Clinic"}, decorate=decorate)
    for path in info.paths:
        ds = _read(path, stop_before_pixels=True)
        assert ds.PatientComments == "MARKER-XYZ" and ds.InstitutionName == "Marker Clinic"
        assert ds.PatientName == "Doe^Jane" and ds.ReferringPhysicianName
    assert len(seen) == len(info.paths)


# ---------------------------------------------------------------- validity
def test_dciodvfy_reports_no_errors(study, tmp_path):
    mr_implicit = synth.write_image_series(tmp_path, modality="MR", n_slices=2, rows=8, cols=8,
                                           implicit_vr=True, orientation=synth.CORONAL)
    paths = [study.ct.paths[0], study.mr.paths[0], mr_implicit.paths[0], study.rtstruct.path,
             study.orphan_rtstruct.path, *[p.path for p in study.plans],
             *[d.path for d in study.doses], study.rtimage.path, study.registration.path]
    problems = {str(p): errs for p in paths if (errs := _dciodvfy_errors(p))}
    assert not problems


# ---------------------------------------------------------------- archives and CLI
def test_multi_patient_zip(tmp_path):
    zinfo = synth.write_multi_patient_zip(tmp_path / "m.zip", n_patients=3, n_slices=2, rows=8,
                                          cols=8, seed=9)
    with zipfile.ZipFile(zinfo.path) as zf:
        names = zf.namelist()
        assert names == zinfo.members and len(names) == 6
        ids = set()
        for name in names:
            patient_folder, series_folder, filename = name.split("/")
            ds = pydicom.dcmread(zf.open(name), stop_before_pixels=True)
            assert ds.PatientID == patient_folder
            ids.add(ds.PatientID)
    assert ids == {p.patient_id for p in zinfo.patients} and len(ids) == 3


def test_cli_writes_and_prints_json(tmp_path):
    out = tmp_path / "ct"
    proc = subprocess.run([sys.executable, "-m", "dicomflow.testing", "ct", str(out), "--slices",
                           "4", "--size", "16", "--seed", "1", "--skip", "2"],
                          capture_output=True, text=True, check=True, timeout=120)
    summary = json.loads(proc.stdout)
    assert summary["files"] == 3 == len(list(out.glob("*.dcm")))
    assert len(summary["skipped_locations"]) == 1
    proc = subprocess.run([sys.executable, "-m", "dicomflow.testing", "zip",
                           str(tmp_path / "p.zip"), "--patients", "2", "--slices", "2",
                           "--size", "8"], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(proc.stdout)["members"] == 4


# ---------------------------------------------------------------- enhanced multi-frame, irregular
@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_enhanced_multiframe_geometry_masks_and_validity(tmp_path, modality):
    orientation = synth.oblique_orientation(15.0)
    info = synth.write_image_series(tmp_path, modality=modality, n_slices=6, rows=24, cols=24,
                                    multiframe=True, skip_slices=[2], orientation=orientation,
                                    seed=12)
    assert len(info.paths) == 1 and len(info.sop_instance_uids) == 1
    ds = _read(info.paths[0])
    assert ds.SOPClassUID == info.sop_class_uid == (synth.ENHANCED_CT_IMAGE_STORAGE if modality == "CT"
                                                     else synth.ENHANCED_MR_IMAGE_STORAGE)
    assert int(ds.NumberOfFrames) == 5
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    assert np.allclose(iop, orientation, atol=1e-6)
    normal = np.cross(iop[:3], iop[3:])
    spacing = float(shared.PixelMeasuresSequence[0].SpacingBetweenSlices)
    pos = np.array([f.PlanePositionSequence[0].ImagePositionPatient
                    for f in ds.PerFrameFunctionalGroupsSequence], float)
    steps = np.diff(pos @ normal)
    assert sorted(np.round(steps / spacing, 3)) == [1, 1, 1, 2]  # the skipped slice is a gap
    masks = synth.phantom_masks(info)
    assert masks.body.shape == ds.pixel_array.shape == (5, 24, 24)
    if modality == "CT":
        hu = ds.pixel_array.astype(float) - 1024
        assert ((hu > -500) == (masks.body & ~masks.lungs)).all()
    rs = synth.write_rtstruct(tmp_path / "rs", info, seed=12)
    rsds = _read(rs.path)
    frames = {c.ContourImageSequence[0].ReferencedFrameNumber
              for c in rsds.ROIContourSequence[0].ContourSequence}
    assert frames == {1, 2, 3, 4, 5}
    assert not _dciodvfy_errors(info.paths[0])
    assert not _dciodvfy_errors(rs.path)


def test_slice_offsets_make_irregular_and_duplicate_positions(tmp_path):
    info = synth.write_image_series(tmp_path, n_slices=99, rows=8, cols=8,
                                    slice_offsets=[0, 2.5, 5, 5, 9], seed=13)
    assert len(info.paths) == 5
    locs = sorted(float(_read(p, stop_before_pixels=True).SliceLocation) for p in info.paths)
    assert np.allclose(np.diff(locs), [2.5, 2.5, 0, 4])
    rs = synth.write_rtstruct(tmp_path / "rs", info, seed=13)
    ipp_by_sop = {_read(p, stop_before_pixels=True).SOPInstanceUID:
                  np.array(_read(p, stop_before_pixels=True).ImagePositionPatient, float)
                  for p in info.paths}
    for contour in _read(rs.path).ROIContourSequence[0].ContourSequence:
        z = np.array(contour.ContourData, float).reshape(-1, 3)[:, 2]
        ipp = ipp_by_sop[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
        assert np.allclose(z, ipp[2], atol=1e-3)


def test_study_edges_match_the_files(study):
    """StudyInfo.edges (what tests of the RT tree compare to) agrees with the written refs."""
    by_sop = {}
    for path in study.paths:
        ds = _read(path, stop_before_pixels=True)
        by_sop[ds.SOPInstanceUID] = ds.SeriesInstanceUID
    sop_to_series = dict(by_sop)
    sop_to_series.update({s: study.absent_ct.series_uid for s in study.absent_ct.sop_instance_uids})
    found = set()
    for obj in study.rt_objects:
        ds = _read(obj.path, stop_before_pixels=True)
        refs = []
        if "ReferencedFrameOfReferenceSequence" in ds:
            refs += [s.SeriesInstanceUID for f in ds.ReferencedFrameOfReferenceSequence
                     for st in f.RTReferencedStudySequence for s in st.RTReferencedSeriesSequence]
        for key in ("ReferencedStructureSetSequence", "ReferencedRTPlanSequence"):
            refs += [sop_to_series[i.ReferencedSOPInstanceUID] for i in ds.get(key, [])]
        if ds.Modality == "REG":
            refs = [s.SeriesInstanceUID for s in ds.ReferencedSeriesSequence] + [
                s.SeriesInstanceUID for st in ds.StudiesContainingOtherReferencedInstancesSequence
                for s in st.ReferencedSeriesSequence]
            fors = {r.FrameOfReferenceUID for r in ds.RegistrationSequence}
            assert fors == {study.ct.frame_of_reference_uid, study.mr.frame_of_reference_uid}
        if ds.Modality == "RTPLAN" and not refs:  # linked by frame of reference only
            refs = [study.ct.series_uid] if ds.FrameOfReferenceUID == study.ct.frame_of_reference_uid else []
        found |= {(ds.SeriesInstanceUID, r) for r in refs}
    assert found == study.edges
    assert len(study.edges) == 1 + 3 + 3 + 1 + 1 + 2


def test_custom_rois_empty_roi_and_shifted_dose(tmp_path):
    ct = synth.write_image_series(tmp_path / "ct", n_slices=5, rows=16, cols=16, seed=21)
    rois = [synth.ROISpec("Empty", "ORGAN", (1, 2, 3), None),
            synth.ROISpec("Outside", "ORGAN", (4, 5, 6), (0.0, 0.0, 0.1, 0.1),
                          offset_mm=(0.0, 0.0, 1000.0))]
    rs = synth.write_rtstruct(tmp_path / "rs", ct, rois=rois, seed=21)
    ds = _read(rs.path)
    assert "ContourSequence" not in ds.ROIContourSequence[0]
    outside = ds.ROIContourSequence[1].ContourSequence
    assert len(outside) == 5
    z_max = max(p[2] for p in ct.positions)
    assert all(np.array(c.ContourData, float).reshape(-1, 3)[:, 2].min() > z_max + 900 for c in outside)
    assert not _dciodvfy_errors(rs.path)
    plan = synth.write_rtplan(tmp_path / "rp", None, image_series=ct, seed=21)
    d0 = _read(synth.write_rtdose(tmp_path / "d0", plan, seed=21).path)
    d1 = _read(synth.write_rtdose(tmp_path / "d1", plan, seed=22, shift_mm=(0, 0, 500)).path)
    assert np.allclose(np.array(d1.ImagePositionPatient, float) - np.array(d0.ImagePositionPatient, float),
                       [0, 0, 500], atol=1e-3)
    assert d1.pixel_array.max() * float(d1.DoseGridScaling) < 15  # far from the PTV: low dose


def test_cli_rt_study(tmp_path):
    out = tmp_path / "rt"
    proc = subprocess.run([sys.executable, "-m", "dicomflow.testing", "rt-study", str(out),
                           "--slices", "4", "--size", "16", "--orphan", "--registration"],
                          capture_output=True, text=True, check=True, timeout=120)
    summary = json.loads(proc.stdout)
    files = list(out.rglob("*.dcm"))
    assert summary["files"] == len(files) == 4 + 4 + 1 + 2 + 2 + 1 + 1 + 1  # CT MR RS RP RD RI RS' REG
    modalities = sorted(o["modality"] for o in summary["rt"])
    assert modalities == ["REG", "RTDOSE", "RTDOSE", "RTIMAGE", "RTPLAN", "RTPLAN", "RTSTRUCT",
                          "RTSTRUCT"]
    assert summary["absent_ct_series_uid"] not in {
        pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID for f in files}


def test_decorate_on_one_slice_does_not_leak_into_the_next(tmp_path):
    def decorate(ds):
        if ds.InstanceNumber == 2:
            ds.SliceThickness = "9"
            del ds.PatientID

    info = synth.write_image_series(tmp_path, n_slices=4, rows=8, cols=8, decorate=decorate, seed=3)
    dss = sorted((_read(p, stop_before_pixels=True) for p in info.paths),
                 key=lambda d: int(d.InstanceNumber))
    assert [float(d.SliceThickness) for d in dss] == [2.5, 9.0, 2.5, 2.5]
    assert ["PatientID" in d for d in dss] == [True, False, True, True]


@pytest.mark.parametrize("n_slices", [5, 18, 40])
def test_default_dose_grid_covers_every_structure(tmp_path, n_slices):
    ct = synth.write_image_series(tmp_path / "ct", n_slices=n_slices, rows=24, cols=20,
                                  orientation=synth.oblique_orientation(10), seed=30)
    rs = synth.write_rtstruct(tmp_path / "rs", ct, seed=30)
    plan = synth.write_rtplan(tmp_path / "rp", rs, seed=30)
    dose = _read(synth.write_rtdose(tmp_path / "rd", plan, seed=30).path)
    iop = np.array(dose.ImageOrientationPatient, float)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    ps_r, ps_c = (float(x) for x in dose.PixelSpacing)
    offsets = np.array(dose.GridFrameOffsetVector, float)
    assert offsets[0] == 0 and len(offsets) == dose.NumberOfFrames <= 16
    pts = np.concatenate([np.array(c.ContourData, float).reshape(-1, 3)
                          for roi in _read(rs.path).ROIContourSequence for c in roi.ContourSequence])
    d = pts - np.array(dose.ImagePositionPatient, float)
    eps = 1e-2
    assert (d @ row_dir / ps_c >= -eps).all() and (d @ row_dir / ps_c <= dose.Columns - 1 + eps).all()
    assert (d @ col_dir / ps_r >= -eps).all() and (d @ col_dir / ps_r <= dose.Rows - 1 + eps).all()
    assert (d @ normal >= -eps).all() and (d @ normal <= offsets[-1] + eps).all()


def test_dicomdir_media_folder(tmp_path):
    info = synth.write_image_series(tmp_path / "src", n_slices=3, rows=8, cols=8, seed=40)
    dicomdir = synth.write_dicomdir(tmp_path / "media", info.paths)
    ds = pydicom.dcmread(dicomdir)
    assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"  # Media Storage Directory
    images = [r for r in ds.DirectoryRecordSequence if r.DirectoryRecordType == "IMAGE"]
    assert {r.ReferencedSOPInstanceUIDInFile for r in images} == set(info.sop_instance_uids)
    assert len([p for p in (tmp_path / "media").rglob("IM*")]) == 3


def test_secondary_capture_with_burned_in_annotation(tmp_path):
    info = synth.write_secondary_capture(tmp_path, seed=41)
    ds = _read(info.paths[0])
    assert ds.SOPClassUID == synth.SECONDARY_CAPTURE_IMAGE_STORAGE
    assert ds.BurnedInAnnotation == "YES" and ds.pixel_array[2:8].max() == 255
    clean = _read(synth.write_secondary_capture(tmp_path / "clean", burned_in=False, seed=42).paths[0])
    assert clean.BurnedInAnnotation == "NO" and clean.pixel_array[2:8].max() < 255
    assert not _dciodvfy_errors(info.paths[0])


def test_multi_patient_zip_with_given_patients_and_rt(tmp_path):
    patients = [synth.PatientSpec("../evil", "Roe^Richard", "M", "19500101"),
                synth.PatientSpec("ID 2", "Poe^Edgar", "M", "19600101")]
    zinfo = synth.write_multi_patient_zip(tmp_path / "p.zip", patients=patients, rt=True,
                                          n_slices=2, rows=8, cols=8, seed=10)
    with zipfile.ZipFile(zinfo.path) as zf:
        names = zf.namelist()
    assert {n.split("/")[0] for n in names} == {"___evil", "ID_2"}
    assert all(".." not in n.split("/") for n in names)
    per_study = len(zinfo.series[0].paths)
    assert len(names) == 2 * per_study and per_study == 2 + 1 + 2 + 2 + 1


def test_ras_affine_maps_voxels_like_the_headers():
    geo = synth.make_geometry(n_slices=4, rows=6, cols=5, orientation=synth.oblique_orientation(30))
    ijk = np.array([3, 2, 1, 1.0])  # (col, row, slice)
    lps = geo.to_patient(1, 2, 3)
    assert np.allclose(geo.affine() @ ijk, [*lps, 1])
    assert np.allclose(geo.affine(ras=True) @ ijk, [-lps[0], -lps[1], lps[2], 1])


def test_rejected_plan_and_approved_structure_set(tmp_path):
    study = synth.write_rt_study(tmp_path, n_slices=3, rows=8, cols=8, with_mr=False, seed=50,
                                 structure_set_approval="APPROVED")
    rs = _read(study.rtstruct.path)
    assert rs.ApprovalStatus == "APPROVED" and rs.ReviewerName and study.rtstruct.approval_status == "APPROVED"
    rejected = synth.write_rtplan(tmp_path / "rej", study.rtstruct, approval_status="REJECTED", seed=50)
    ds = _read(rejected.path)
    assert ds.ApprovalStatus == "REJECTED" and ds.ReviewDate
    assert not _dciodvfy_errors(rejected.path) and not _dciodvfy_errors(study.rtstruct.path)


# ---------------------------------------------------------------- distinct patients on request
def _cli(*args) -> dict:
    proc = subprocess.run([sys.executable, "-m", "dicomflow.testing", *map(str, args)],
                          capture_output=True, text=True, check=True, timeout=120)
    return json.loads(proc.stdout)


def _headers(folder) -> list:
    return sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in folder.rglob("*.dcm")),
                  key=lambda d: d.SOPInstanceUID)


def _uids_of(folder) -> set[str]:
    return {d.SOPInstanceUID for d in _headers(folder)} | {d.SeriesInstanceUID for d in _headers(folder)}


def test_cli_patient_id_and_seed_make_distinct_reproducible_patients(tmp_path):
    small = ("--slices", 2, "--size", 8, "--no-mr")
    one = _cli("rt-study", tmp_path / "one", *small, "--patient-id", "SYN-A", "--seed", 1)
    again = _cli("rt-study", tmp_path / "again", *small, "--patient-id", "SYN-A", "--seed", 1)
    other_seed = _cli("rt-study", tmp_path / "seed2", *small, "--patient-id", "SYN-A", "--seed", 2)
    other_id = _cli("rt-study", tmp_path / "b", *small, "--patient-id", "SYN-B", "--seed", 1)

    assert one["patient_id"] == again["patient_id"] == other_seed["patient_id"] == "SYN-A"
    assert other_id["patient_id"] == "SYN-B"
    # the same ID and seed: the same UIDs and values, byte for byte
    assert _uids_of(tmp_path / "one") == _uids_of(tmp_path / "again")
    assert one["ct"]["series_uid"] == again["ct"]["series_uid"]
    first = lambda name: next((tmp_path / name).rglob("CT*.dcm"))  # noqa: E731
    assert first("one").read_bytes() == first("again").read_bytes()
    # another seed or another patient: no UID shared, other patient values
    assert not _uids_of(tmp_path / "one") & _uids_of(tmp_path / "seed2")
    assert not _uids_of(tmp_path / "one") & _uids_of(tmp_path / "b")
    people = {name: {(str(d.PatientName), d.PatientSex, d.PatientBirthDate) for d in _headers(tmp_path / name)}
              for name in ("one", "seed2", "b")}
    assert all(len(values) == 1 for values in people.values())  # one patient per study
    assert len({next(iter(v)) for v in people.values()}) == 3
    assert {d.PatientID for d in _headers(tmp_path / "b")} == {"SYN-B"}


def test_cli_ct_takes_the_patient_options(tmp_path):
    summary = _cli("ct", tmp_path / "ct", "--slices", 2, "--size", 8, "--patient-id", "SYN-C",
                   "--patient-name", "Test^Carla", "--seed", 3)
    assert summary["patient_id"] == "SYN-C"
    assert {(d.PatientID, str(d.PatientName)) for d in _headers(tmp_path / "ct")} == {("SYN-C", "Test^Carla")}


def test_patient_for_id_is_reproducible_and_fresh_without_seed():
    assert synth.PatientSpec.for_id("X1", 5) == synth.PatientSpec.for_id("X1", 5)
    assert synth.PatientSpec.for_id("X1", 5).patient_id == "X1"
    assert synth.patient_seed(5, "X1") != synth.patient_seed(5, "X2")
    assert synth.patient_seed(None, "X1") is None and synth.patient_seed(5, None) == 5
