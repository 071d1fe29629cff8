"""Header reading: catalog fields, RT details, and the specific reasons a file is not importable."""

import pydicom
import pytest

from dicomflow.core.dicom.header import DicomdirError, read_header
from dicomflow.errors import DicomReadError, MissingAttributeError, NotDicomError
from dicomflow.testing import synth


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return synth.write_rt_study(tmp_path_factory.mktemp("study"), n_slices=6, seed=11)


def test_ct_header_has_geometry(study):
    h = read_header(study.ct.paths[2])
    assert h.sop_instance_uid == study.ct.sop_instance_uids[2]
    assert h.series_instance_uid == study.ct.series_uid
    assert h.modality == "CT"
    assert h.patient_id == study.patient.patient_id
    assert h.image["rows"] == 64
    assert h.image["image_position_patient"] == pytest.approx(list(study.ct.positions[2]), abs=1e-3)
    assert len(h.image["image_orientation_patient"]) == 6


def test_rt_details(study):
    ss = read_header(study.rtstruct.path).structure_set
    assert [r["name"] for r in ss["rois"]] == study.rtstruct.roi_names
    assert all(r["contour_count"] > 0 and r["color"].startswith("#") for r in ss["rois"])
    assert ss["referenced_series_uid"] == study.ct.series_uid
    approved = read_header(study.approved_plan.path).plan
    assert approved["approval_status"] == "APPROVED"
    assert approved["referenced_structure_set_uid"] == study.rtstruct.sop_instance_uid
    assert approved["beam_count"] == len(study.approved_plan.beam_numbers)
    assert read_header(study.unapproved_plan.path).plan["approval_status"] == "UNAPPROVED"
    dose = read_header(study.dose_for(study.approved_plan).path).dose
    assert dose["referenced_plan_uid"] == study.approved_plan.sop_instance_uid
    assert read_header(study.rtimage.path).rt_image["referenced_plan_uid"] == study.approved_plan.sop_instance_uid


def test_truncated_pixel_data_is_detected(study, tmp_path):
    data = study.ct.paths[0].read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(DicomReadError, match="truncated"):
        read_header(cut)
    inside_header = tmp_path / "cut_header.dcm"
    inside_header.write_bytes(data[:300])
    with pytest.raises(DicomReadError, match="truncated|malformed"):
        read_header(inside_header)


def test_not_dicom_and_empty(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("just some text, not an image\n" * 10)
    with pytest.raises(NotDicomError, match="not a DICOM file"):
        read_header(text)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(NotDicomError, match="empty"):
        read_header(empty)


def test_missing_uid(study, tmp_path):
    ds = pydicom.dcmread(study.ct.paths[0])
    del ds.SeriesInstanceUID
    path = tmp_path / "nouid.dcm"
    ds.save_as(path)
    with pytest.raises(MissingAttributeError, match="missing Series Instance UID"):
        read_header(path)


def test_dicomdir_is_recognised(study, tmp_path):
    from pydicom.fileset import FileSet

    fs = FileSet()
    fs.add(pydicom.dcmread(study.ct.paths[0]))
    fs.write(tmp_path / "media")
    with pytest.raises(DicomdirError, match="DICOMDIR"):
        read_header(tmp_path / "media" / "DICOMDIR")
