"""Built-in CT body + lungs autosegmentation on the generator's phantom: accuracy, a valid RTSTRUCT."""

import subprocess

import numpy as np
import pydicom
import pytest

from tests.conftest import require_tool
from dicomflow.core.rules import RoiStyle, builtin_templates
from dicomflow.core.segmentation import PROCESSORS, read_image_series, read_rtstruct_masks
from dicomflow.errors import InputError, SegmentationError
from dicomflow.testing import synth

run = PROCESSORS["builtin.ct_body_lungs"]


def dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def left_of_patient(mask, geometry):
    """The part of a mask on the patient's left (+x in LPS) of the phantom's centre plane x = 0."""
    out = np.zeros_like(mask)
    for k in range(mask.shape[0]):
        out[k] = mask[k] & (geometry.patient_x(k) > 0)
    return out


def dciodvfy_errors(path):
    tool = require_tool("dciodvfy")
    done = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    lines = (done.stdout + done.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")], lines


def segment(tmp_path, **kwargs):
    ct = synth.write_image_series(tmp_path / "ct", **kwargs)
    paths = run(ct.paths, tmp_path / "out")
    assert len(paths) == 1 and paths[0].parent == tmp_path / "out"
    series = read_image_series(ct.paths)
    return ct, paths[0], series, read_rtstruct_masks(paths[0], series)


def check_accuracy(ct, series, masks):
    truth = synth.phantom_masks(ct)
    assert set(masks) == {"Body", "Lung_L", "Lung_R"}
    assert dice(masks["Body"], truth.body) >= 0.95
    assert dice(masks["Lung_L"] | masks["Lung_R"], truth.lungs) >= 0.95
    truth_left = left_of_patient(truth.lungs, series.geometry)
    assert dice(masks["Lung_L"], truth_left) >= 0.95
    assert dice(masks["Lung_R"], truth.lungs & ~truth_left) >= 0.95


@pytest.fixture(scope="module")
def axial(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("axial")
    patient = synth.PatientSpec(patient_id="SEG-1", name="Body^Lung", sex="O", birth_date="19700101")
    return segment(tmp, patient=patient, n_slices=64, rows=96, cols=96, noise=20.0)


def test_phantom_body_and_lungs_reach_dice_095(axial):
    ct, _, series, masks = axial
    check_accuracy(ct, series, masks)


def test_rtstruct_passes_dciodvfy(axial):
    errors, lines = dciodvfy_errors(axial[1])
    assert errors == [], "\n".join(lines)


def test_rtstruct_references_and_copies_the_ct(axial):
    ct, path, series, _ = axial
    rs = pydicom.dcmread(path)
    ct_header = pydicom.dcmread(ct.paths[0], stop_before_pixels=True)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                    "StudyDate", "AccessionNumber", "FrameOfReferenceUID"):
        assert rs[keyword].value == ct_header[keyword].value, keyword
    assert rs.Modality == "RTSTRUCT" and rs.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    assert rs.SeriesInstanceUID != ct.series_uid and rs.SOPInstanceUID not in ct.sop_instance_uids
    assert rs.file_meta.MediaStorageSOPInstanceUID == rs.SOPInstanceUID
    assert path.name == f"RS.{rs.SOPInstanceUID}.dcm"
    frame = rs.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == ct.frame_of_reference_uid
    study = frame.RTReferencedStudySequence[0]
    assert study.ReferencedSOPInstanceUID == ct.study_uid
    ref_series = study.RTReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == ct.series_uid
    assert sorted(i.ReferencedSOPInstanceUID for i in ref_series.ContourImageSequence) == sorted(ct.sop_instance_uids)
    # ROI numbering is consistent over the three sequences; names, colours, types from the template.
    styles = {r.name: r for r in builtin_templates()["ct-body-lungs"].rois}
    numbers = {r.ROINumber: r.ROIName for r in rs.StructureSetROISequence}
    assert sorted(numbers.values()) == ["Body", "Lung_L", "Lung_R"]
    for roi in rs.StructureSetROISequence:
        assert roi.ReferencedFrameOfReferenceUID == ct.frame_of_reference_uid
    for obs in rs.RTROIObservationsSequence:
        assert obs.RTROIInterpretedType == styles[numbers[obs.ReferencedROINumber]].type
    position_of = dict(zip(ct.sop_instance_uids, ct.positions))
    normal = ct.normal
    for roi in rs.ROIContourSequence:
        style = styles[numbers[roi.ReferencedROINumber]]
        assert tuple(roi.ROIDisplayColor) == style.color
        assert len(roi.ContourSequence) > 0
        for contour in roi.ContourSequence:
            ref = contour.ContourImageSequence[0]
            assert ref.ReferencedSOPClassUID == ct.sop_class_uid
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            assert len(points) == contour.NumberOfContourPoints
            # every point lies in the plane of the image the contour references
            plane = np.dot(position_of[ref.ReferencedSOPInstanceUID], normal)
            assert np.allclose(points @ normal, plane, atol=0.01)


def test_oblique_stack_with_a_missing_slice(tmp_path):
    ct, path, series, masks = segment(
        tmp_path, n_slices=40, rows=64, cols=64, orientation=synth.oblique_orientation(20), skip_slices=[17]
    )
    check_accuracy(ct, series, masks)
    errors, lines = dciodvfy_errors(path)
    assert errors == [], "\n".join(lines)


def test_enhanced_multiframe_ct_references_frames(tmp_path):
    ct, path, series, masks = segment(tmp_path, n_slices=24, rows=48, cols=48, multiframe=True)
    check_accuracy(ct, series, masks)
    rs = pydicom.dcmread(path)
    frames = {
        int(c.ContourImageSequence[0].ReferencedFrameNumber)
        for roi in rs.ROIContourSequence
        for c in roi.ContourSequence
    }
    assert frames == set(range(1, 25))  # the body is on every frame
    errors, lines = dciodvfy_errors(path)
    assert errors == [], "\n".join(lines)


def test_parameters_and_template_styles_are_applied(tmp_path):
    ct = synth.write_image_series(tmp_path / "ct", n_slices=20, rows=48, cols=48)
    styles = [RoiStyle("lungs", "LUNGS_BOTH", (1, 2, 3)), RoiStyle("body", "External", (9, 8, 7), "EXTERNAL")]
    path = run(ct.paths, tmp_path / "out", {"split_lungs": False}, styles)[0]
    rs = pydicom.dcmread(path)
    assert [r.ROIName for r in rs.StructureSetROISequence] == ["External", "LUNGS_BOTH"]
    assert [tuple(r.ROIDisplayColor) for r in rs.ROIContourSequence] == [(9, 8, 7), (1, 2, 3)]
    masks = read_rtstruct_masks(path, read_image_series(ct.paths))
    assert dice(masks["LUNGS_BOTH"], synth.phantom_masks(ct).lungs) >= 0.95
    # A threshold above every lung value finds no lungs: the ROI stays, without contours.
    path = run(ct.paths, tmp_path / "out2", {"lung_threshold_hu": -1500})[0]
    rs = pydicom.dcmread(path)
    lungs = [r for r in rs.ROIContourSequence if r.ReferencedROINumber != 1]
    assert len(lungs) == 2 and all("ContourSequence" not in r for r in lungs)


def test_wrong_inputs_fail_with_clear_errors(tmp_path):
    mr = synth.write_image_series(tmp_path / "mr", modality="MR", n_slices=12, rows=16, cols=16)
    with pytest.raises(SegmentationError, match="needs a CT series"):
        run(mr.paths, tmp_path / "out")
    ct = synth.write_image_series(tmp_path / "ct", n_slices=12, rows=16, cols=16)
    with pytest.raises(InputError, match="another series"):
        run(ct.paths + mr.paths, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_image_input_is_refused_by_path(tmp_path):
    ct = synth.write_image_series(tmp_path / "ct", n_slices=4, rows=16, cols=16)
    rs = synth.write_rtstruct(tmp_path / "rs", ct)
    with pytest.raises(InputError, match=r"RS\..*: not an image"):
        read_image_series([rs.path])
