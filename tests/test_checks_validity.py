"""Validity: required attributes per SOP class and value formats, cross-checked with dciodvfy."""

from __future__ import annotations

import subprocess
import warnings

import pydicom
import pytest

from dicomflow.core.checks import Code, Severity, check_validity
from dicomflow.core.checks.validity import _valid_da, _valid_ds, _valid_dt, _valid_is, _valid_tm, _valid_uid
from dicomflow.testing import synth
from tests.conftest import require_tool


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("validity")
    return synth.write_rt_study(out, n_slices=4, rows=32, cols=32, with_mr=True)


def objects(study):
    return {
        "CT": study.ct.paths[0],
        "MR": study.mr.paths[0],
        "RTSTRUCT": study.rtstruct.path,
        "RTPLAN": study.approved_plan.path,
        "RTDOSE": study.doses[0].path,
        "RTIMAGE": study.rtimage.path,
    }


def validity_of(path):
    return check_validity(pydicom.dcmread(path, stop_before_pixels=True))


def dciodvfy(path) -> str:
    tool = require_tool("dciodvfy")
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return proc.stdout + proc.stderr


def modified(src, dst, change):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(src)
        change(ds)
        ds.save_as(dst)
    return dst


@pytest.mark.parametrize("kind", ["CT", "MR", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTIMAGE"])
def test_generated_objects_are_valid(study, kind):
    findings = validity_of(objects(study)[kind])
    assert [f for f in findings if f.severity != Severity.INFO] == []


def test_enhanced_multiframe_is_valid(tmp_path):
    info = synth.write_image_series(tmp_path, n_slices=4, rows=32, cols=32, multiframe=True)
    assert [f for f in validity_of(info.paths[0]) if f.severity != Severity.INFO] == []


# (object, Type 1 attribute, how dciodvfy names it)
TYPE1 = [
    ("CT", "RescaleSlope"),
    ("CT", "SOPInstanceUID"),
    ("MR", "ScanningSequence"),
    ("RTSTRUCT", "StructureSetLabel"),
    ("RTPLAN", "RTPlanLabel"),
    ("RTDOSE", "DoseUnits"),
    ("RTDOSE", "FrameOfReferenceUID"),
]


@pytest.mark.parametrize("kind, keyword", TYPE1)
def test_missing_type1_flagged_like_dciodvfy(study, tmp_path, kind, keyword):
    src = objects(study)[kind]
    bad = modified(src, tmp_path / "bad.dcm", lambda ds: delattr(ds, keyword))
    ours = [f for f in validity_of(bad) if f.code == Code.VALIDITY_MISSING_TYPE1 and keyword in f.message]
    assert ours and ours[0].severity == Severity.ERROR
    assert not [f for f in validity_of(src) if keyword in f.message]
    theirs = dciodvfy(bad)
    assert f"Missing attribute Type 1 Required Element=<{keyword}>" in theirs
    assert f"Element=<{keyword}>" not in dciodvfy(src)


@pytest.mark.parametrize("kind, keyword", [("CT", "ImageType"), ("RTSTRUCT", "StructureSetLabel"), ("RTDOSE", "DoseType")])
def test_empty_type1_flagged_like_dciodvfy(study, tmp_path, kind, keyword):
    bad = modified(objects(study)[kind], tmp_path / "bad.dcm", lambda ds: setattr(ds, keyword, None))
    assert [f for f in validity_of(bad) if f.code == Code.VALIDITY_EMPTY_TYPE1 and keyword in f.message]
    assert f"Empty attribute (no value) Type 1 Required Element=<{keyword}>" in dciodvfy(bad)


def test_missing_type2_is_a_warning(study, tmp_path):
    bad = modified(objects(study)["CT"], tmp_path / "bad.dcm", lambda ds: delattr(ds, "StudyID"))
    found = [f for f in validity_of(bad) if f.code == Code.VALIDITY_MISSING_TYPE2]
    assert found and found[0].severity == Severity.WARNING and "StudyID" in found[0].message
    assert "Missing attribute Type 2 Required Element=<StudyID>" in dciodvfy(bad)


def test_nested_sequence_items_are_checked(study, tmp_path):
    def drop(ds):
        del ds.StructureSetROISequence[1].ROINumber

    bad = modified(objects(study)["RTSTRUCT"], tmp_path / "bad.dcm", drop)
    found = [f for f in validity_of(bad) if f.code == Code.VALIDITY_MISSING_TYPE1]
    assert any("ROINumber" in f.message and "StructureSetROISequence item 2" in f.message for f in found)
    assert "Element=<ROINumber>" in dciodvfy(bad)


def test_plan_with_patient_geometry_needs_a_structure_set_reference(study, tmp_path):
    bad = modified(objects(study)["RTPLAN"], tmp_path / "bad.dcm", lambda ds: delattr(ds, "ReferencedStructureSetSequence"))
    assert any("ReferencedStructureSetSequence" in f.message for f in validity_of(bad))


def _plant(path, placeholder: bytes, value: bytes):
    """Swap a same-length placeholder for a malformed value in the file bytes (pydicom would refuse it)."""
    data = path.read_bytes()
    assert data.count(placeholder) == 1 and len(placeholder) == len(value)
    path.write_bytes(data.replace(placeholder, value))


MALFORMED = [
    ("FrameOfReferenceUID", "1.2.34.5", b"1.2.03.4", Code.VALIDITY_MALFORMED_UID, "Leading zeroes"),
    ("StudyDate", "20240101", b"20241341", Code.VALIDITY_MALFORMED_DATE, "Study Date"),
    ("StudyTime", "101010", b"10:10 ", Code.VALIDITY_MALFORMED_TIME, "Study Time"),
    ("KVP", "9.87654", b"abc.def", Code.VALIDITY_MALFORMED_DECIMAL, "KVP"),
    ("AcquisitionNumber", "987654", b"98x654", Code.VALIDITY_MALFORMED_INTEGER, "Acquisition Number"),
    ("PatientSex", "O", b"fq", Code.VALIDITY_MALFORMED_CODE_STRING, "Patient's Sex"),  # set directly
]


@pytest.mark.parametrize("keyword, placeholder, value, code, dciodvfy_says", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_values_flagged_like_dciodvfy(study, tmp_path, keyword, placeholder, value, code, dciodvfy_says):
    good = modified(objects(study)["CT"], tmp_path / "good.dcm", lambda ds: setattr(ds, keyword, placeholder))
    assert not [f for f in validity_of(good) if f.code == code]
    assert dciodvfy_says not in "\n".join(line for line in dciodvfy(good).splitlines() if "invalid" in line.lower() or "Leading" in line)
    bad = tmp_path / "bad.dcm"
    if len(placeholder) > 1:
        bad.write_bytes(good.read_bytes())
        _plant(bad, placeholder.encode(), value)
    else:
        modified(good, bad, lambda ds: setattr(ds, keyword, value.decode()))
    found = [f for f in validity_of(bad) if f.code == code]
    assert found and keyword in found[0].message
    assert value.decode().strip() not in found[0].message  # the value itself is never echoed
    assert dciodvfy_says in dciodvfy(bad)


def test_unknown_sop_class_gets_common_modules_only(study, tmp_path):
    bad = modified(objects(study)["CT"], tmp_path / "sc.dcm", lambda ds: setattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.7"))
    findings = validity_of(bad)
    assert Code.VALIDITY_UNKNOWN_SOP_CLASS in {f.code for f in findings}
    assert not [f for f in findings if f.severity == Severity.ERROR]


@pytest.mark.parametrize(
    "check, good, bad",
    [
        (_valid_uid, ["1.2.840.10008", "0.1", "2.25.0"], ["1.02.3", "1..2", "1.2.", "a.b", "1." + "2" * 64]),
        (_valid_da, ["20240229", "19000101"], ["20230229", "2024-01-01", "240101"]),
        (_valid_tm, ["10", "1010", "101010", "101010.123456", "235960"], ["10:10", "246000", "1061", "10.5"]),
        (_valid_dt, ["2024", "20240101123000.5+0100"], ["2024-01", "20241301"]),
        (_valid_is, ["12", "-3", "+7"], ["1.5", "99999999999", "x"]),
        (_valid_ds, ["1.5", "-0.25e-3", ".5", "12"], ["1,5", "abc", "1.23456789012345678"]),
    ],
)
def test_value_formats(check, good, bad):
    assert all(check(v) for v in good)
    assert not any(check(v) for v in bad)


def test_implicit_vr_and_already_converted_values(tmp_path):
    info = synth.write_image_series(tmp_path, n_slices=2, rows=32, cols=32, implicit_vr=True,
                                    extra={"KVP": "9.87654"})
    path = info.paths[0]
    assert not [f for f in validity_of(path) if f.severity != Severity.INFO]
    _plant(path, b"9.87654", b"abc.def")
    fresh = validity_of(path)
    assert Code.VALIDITY_MALFORMED_DECIMAL in {f.code for f in fresh}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for elem in ds:  # convert every element first, as a caller may have done
            elem.value
    converted = {f.code for f in check_validity(ds)}
    assert converted == {f.code for f in fresh}
