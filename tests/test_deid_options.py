"""One test per profile option (and per engine rule) showing its effect on a real synthetic object."""

from __future__ import annotations

import copy
from datetime import date

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomflow.core.deid import Deidentifier, Options, ProjectKey
from dicomflow.core.deid.options import OPTION_CODES
from dicomflow.testing import synth
from test_deid_corpus import PATIENT, _plant

KEY = ProjectKey("OPTS", b"k" * 32)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return synth.write_rt_study(
        tmp_path_factory.mktemp("opts"), patient=PATIENT, n_slices=3, rows=16, cols=16, with_mr=False, decorate=_plant, seed=11
    )


def _read(path):
    return dcmread(path, defer_size=1024)


def _ct(study) -> Dataset:
    ds = _read(study.ct.paths[0])
    # Extra attributes some options are about.
    ds.PatientWeight = "71"
    ds.PatientSize = "1.7"
    block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x0C, "IS", "1000")  # b value: on the safe-private list
    block.add_new(0x10, "LO", "unsafe")  # not on the list
    item = Dataset()
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Sequence([Dataset()])
    item.ConceptNameCodeSequence[0].CodeValue = "121106"
    item.ConceptNameCodeSequence[0].CodingSchemeDesignator = "DCM"
    item.ConceptNameCodeSequence[0].CodeMeaning = "Comment"
    item.TextValue = "Lesion seen by Zorgmeister"
    ds.AcquisitionContextSequence = Sequence([item])
    text = Dataset()
    text.UnformattedTextValue = "Lesion Zorgmeister"
    text.BoundingBoxAnnotationUnits = "PIXEL"
    annotation = Dataset()
    annotation.GraphicLayer = "LAYER1"
    annotation.TextObjectSequence = Sequence([text])
    ds.GraphicAnnotationSequence = Sequence([annotation])
    ds.add_new(0x60000010, "US", 16)  # overlay rows
    ds.add_new(0x60003000, "OW", b"\x00" * 32)  # overlay data
    ds.add_new(0x50000005, "US", 1)  # curve dimensions
    ds.add_new(0x00201234, "LO", "unknown public")  # (0020,1234): not in the data dictionary
    return ds


def run(ds: Dataset, **options):
    ds = copy.deepcopy(ds)
    outcome = Deidentifier(KEY, Options(**options)).deidentify(ds)
    return ds, outcome


def codes(ds) -> set[str]:
    return {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}


def test_basic_profile_only(study):
    src = _ct(study)
    ds, out = run(src, retain_long_modified_dates=False, clean_descriptors=False)
    assert ds.PatientIdentityRemoved == "YES"
    assert codes(ds) == {"113100"}
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert ds.StudyDate == "" and "SeriesDate" not in ds  # Z; X/D with Type 3 -> X
    assert ds.StudyTime == ""
    assert "StudyDescription" not in ds and "SeriesDescription" not in ds
    assert ds.PatientName == ds.PatientID != PATIENT.patient_id
    assert ds.SOPInstanceUID != src.SOPInstanceUID and ds.SOPInstanceUID.startswith("2.25.")
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SOPClassUID == src.SOPClassUID  # registered UIDs are kept
    assert "InstitutionName" not in ds and "DeviceSerialNumber" not in ds and "PatientWeight" not in ds
    assert ds.PatientSex == "" and "PatientAge" not in ds
    assert [t for t in ds.keys() if t.group & 1] == []  # private removed
    assert "AcquisitionContextSequence" not in ds  # X/Z, Type 3 in CT
    assert not any(t.group in (0x5000, 0x6000) for t in ds.keys())  # curves and overlays
    assert 0x00201234 not in ds  # unknown public tag
    assert ("(0008,0020)", "StudyDate", "Z", "basic") in out.record


def test_retain_long_modified_dates_shifts_dates_keeps_times(study):
    src = _ct(study)
    ds, out = run(src)
    offset = out.patient["date_offset_days"]
    assert -365 <= offset <= -30
    shifted = date(2024, 3, 15).toordinal() + offset
    assert ds.StudyDate == date.fromordinal(shifted).strftime("%Y%m%d")
    assert ds.StudyTime == src.StudyTime
    nested = ds.ContributingEquipmentSequence[0]
    assert nested.ContributionDateTime == date.fromordinal(date(1999, 9, 9).toordinal() + offset).strftime("%Y%m%d")
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert "113107" in codes(ds)
    # Same subject, another object (another study even): the same shift.
    _, out2 = run(_read(study.rtstruct.path))
    assert out2.patient["date_offset_days"] == offset


def test_date_shift_range_is_honoured():
    ds = Dataset()
    ds.PatientID, ds.StudyDate = "X1", "20200101"
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4"
    for pid in ("A", "B", "C", "D"):
        ds.PatientID = pid
        _, out = run(ds, date_shift_days=(-10, -5))
        assert -10 <= out.patient["date_offset_days"] <= -5


def test_retain_long_full_dates_keeps_dates(study):
    src = _ct(study)
    ds, _ = run(src, retain_long_modified_dates=False, retain_long_full_dates=True)
    assert ds.StudyDate == src.StudyDate and ds.SeriesDate == src.SeriesDate
    assert ds.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert "113106" in codes(ds) and "113107" not in codes(ds)


def test_clean_descriptors_keeps_clean_words(study):
    rs = _read(study.rtstruct.path)
    ds, _ = run(rs)
    assert [i.ROIName for i in ds.StructureSetROISequence] == [r.name for r in synth.DEFAULT_ROIS]
    assert ds.StudyDescription == "Thorax"
    assert ds.SeriesDescription == "planning"
    request = ds.RequestAttributesSequence[0]
    assert "RequestedProcedureID" not in request
    assert request.ScheduledProcedureStepDescription == "Planning CT"
    blank, _ = run(rs, clean_descriptors=False)
    assert [i.ROIName for i in blank.StructureSetROISequence] == [""] * len(synth.DEFAULT_ROIS)  # Z
    assert "StudyDescription" not in blank and "RequestAttributesSequence" not in blank
    assert "113105" in codes(ds) and "113105" not in codes(blank)


def test_retain_uids(study):
    src = _ct(study)
    ds, out = run(src, retain_uids=True)
    assert ds.SOPInstanceUID == src.SOPInstanceUID and ds.StudyInstanceUID == src.StudyInstanceUID
    assert ds.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert out.uid_map == {}
    assert "113110" in codes(ds)


def test_retain_device_identity(study):
    src = _ct(study)
    kept, _ = run(src, retain_device_identity=True)
    gone, _ = run(src)
    assert kept.DeviceSerialNumber == "SN4711" and kept.StationName == "RTCT01"
    assert "DeviceSerialNumber" not in gone and "StationName" not in gone
    assert "113109" in codes(kept)


def test_retain_institution_identity(study):
    src = _ct(study)
    kept, _ = run(src, retain_institution_identity=True)
    gone, _ = run(src)
    assert kept.InstitutionName == src.InstitutionName and kept.InstitutionAddress == src.InstitutionAddress
    assert "InstitutionName" not in gone and "InstitutionAddress" not in gone
    assert "113112" in codes(kept)


def test_retain_patient_characteristics(study):
    src = _ct(study)
    kept, _ = run(src, retain_patient_characteristics=True)
    gone, _ = run(src)
    assert (kept.PatientSex, kept.PatientAge, kept.PatientWeight) == (src.PatientSex, src.PatientAge, src.PatientWeight)
    assert gone.PatientSex == "" and "PatientAge" not in gone and "PatientWeight" not in gone
    assert "113108" in codes(kept)


def test_retain_safe_private(study):
    src = _ct(study)
    kept, out = run(src, retain_safe_private=True)
    private = {t: kept[t].value for t in kept.keys() if t.group & 1}
    assert private == {0x00190010: "SIEMENS MR HEADER", 0x0019100C: "1000"}
    assert "113111" in codes(kept)
    gone, _ = run(src)
    assert [t for t in gone.keys() if t.group & 1] == []
    # A project can extend the list.
    # A project can extend the list; a listed attribute still needs a numeric value (issue 13:
    # "safe" private elements are never kept without a value check).
    numeric = copy.deepcopy(src)
    numeric[0x00191010].value = "0.5\\1.5"
    extended, _ = run(numeric, retain_safe_private=True, safe_private=(("SIEMENS MR HEADER", 0x0019, 0x10),))
    assert extended[0x00191010].value == ["0.5", "1.5"]
    refused, _ = run(src, retain_safe_private=True, safe_private=(("SIEMENS MR HEADER", 0x0019, 0x10),))
    assert 0x00191010 not in refused  # "unsafe": text in a numeric attribute


def test_clean_structured_content(study):
    src = _ct(study)
    kept, _ = run(src, clean_structured_content=True)
    item = kept.AcquisitionContextSequence[0]
    assert item.TextValue == "Lesion seen by"
    assert item.ConceptNameCodeSequence[0].CodeMeaning == "Comment"
    assert "113104" in codes(kept)
    gone, _ = run(src)
    assert "AcquisitionContextSequence" not in gone


def test_clean_graphics(study):
    src = _ct(study)
    kept, _ = run(src, clean_graphics=True)
    assert kept.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue == "Lesion"
    assert "113103" in codes(kept)
    dummy, _ = run(src)
    # Basic profile: D -> the structure stays, every free text becomes a dummy.
    assert dummy.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue == "ANONYMIZED"
    assert not any(t.group in (0x5000, 0x6000) for t in kept.keys())  # bitmaps cannot be cleaned


def test_unknown_public_policy(study):
    src = _ct(study)
    kept, _ = run(src, unknown_public="keep")
    gone, _ = run(src)
    assert 0x00201234 in kept and 0x00201234 not in gone


def test_combined_action_resolved_by_iod_type(study):
    """Operators' Name is X/Z/D: Type 3 in CT (removed), Type 2 in the RT Series module (empty)."""
    ct, _ = run(_read(study.ct.paths[0]))
    rs, _ = run(_read(study.rtstruct.path))
    assert "OperatorsName" not in ct
    assert rs.OperatorsName == ""
    plan, _ = run(_read(study.plans[0].path))
    assert plan.ReviewerName == ""  # X/Z, Type 2C in RT Approval


def test_burned_in_annotation_quarantined(tmp_path):
    info = synth.write_secondary_capture(tmp_path, burned_in=True, seed=1)
    ds = _read(info.paths[0])
    _, out = run(ds)
    assert out.quarantine_reason and "Burned In Annotation" in out.quarantine_reason
    del ds.BurnedInAnnotation
    _, out = run(ds)
    assert out.quarantine_reason and "secondary capture" in out.quarantine_reason
    allowed, out = run(ds, allow_burned_in=True)
    assert out.quarantine_reason is None and allowed.PatientIdentityRemoved == "YES"


def test_every_option_has_its_code():
    every = Options(**{name: True for name in OPTION_CODES if name != "retain_long_full_dates"})
    assert {c for c, _ in every.method_codes()} == {"113100"} | {
        c for n, (c, _) in OPTION_CODES.items() if n != "retain_long_full_dates"
    }
    with pytest.raises(Exception):
        Options(retain_long_full_dates=True)  # with modified dates (default) on: contradictory


def test_options_round_trip_json():
    opts = Options(uid_root="1.2.3", date_shift_days=(-20, -10), safe_private=(("A", 0x11, 0x10),))
    assert Options.from_dict(opts.to_dict()) == opts
    with pytest.raises(Exception):
        Options.from_dict({"no_such_option": True})
