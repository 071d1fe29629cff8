"""The byte-level header fast path must agree with pydicom (its oracle) and step aside when unsure."""

import pydicom
import pytest

from dicomflow.core.dicom.fastheader import read_plain_image_header
from dicomflow.core.dicom.header import read_header_pydicom
from dicomflow.testing import synth


@pytest.mark.parametrize(
    "kwargs",
    [
        {"modality": "CT"},
        {"modality": "MR"},
        {"modality": "CT", "implicit_vr": True},
        {"modality": "CT", "orientation": synth.oblique_orientation(25)},
        {"modality": "MR", "orientation": synth.CORONAL, "rows": 48, "cols": 40},
    ],
)
def test_fast_path_equals_pydicom(tmp_path, kwargs):
    series = synth.write_image_series(tmp_path, n_slices=3, seed=21, **kwargs)
    for path in series.paths:
        fast = read_plain_image_header(path)
        assert fast is not None, "plain image files must take the fast path"
        assert fast == read_header_pydicom(path)


def test_latin1_and_utf8_names_agree(tmp_path):
    series = synth.write_image_series(tmp_path, n_slices=1, seed=22)
    for charset, name in (("ISO_IR 100", "Müller^Jürgen"), ("ISO_IR 192", "Łukasz^Żółw")):
        ds = pydicom.dcmread(series.paths[0])
        ds.SpecificCharacterSet = charset
        ds.PatientName = name
        path = tmp_path / f"{charset}.dcm"
        ds.save_as(path)
        fast = read_plain_image_header(path)
        assert fast is not None and fast.patient_name == name
        assert fast == read_header_pydicom(path)


def test_steps_aside_for_what_it_does_not_handle(tmp_path):
    study = synth.write_rt_study(tmp_path / "rt", n_slices=3, seed=23, with_mr=False)
    for obj in study.rt_objects:
        assert read_plain_image_header(obj.path) is None  # RT objects: pydicom
    enhanced = synth.write_image_series(tmp_path / "mf", n_slices=3, multiframe=True, seed=24)
    assert read_plain_image_header(enhanced.paths[0]) is None
    series = synth.write_image_series(tmp_path / "ct", n_slices=1, seed=25)
    data = series.paths[0].read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:-10])
    assert read_plain_image_header(tmp_path / "cut.dcm") is None  # truncated: pydicom reports it
    ds = pydicom.dcmread(series.paths[0])
    ds.SpecificCharacterSet = "ISO_IR 144"
    ds.save_as(tmp_path / "cyrillic.dcm")
    assert read_plain_image_header(tmp_path / "cyrillic.dcm") is None
    del ds.SOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.save_as(tmp_path / "nouid.dcm")
    assert read_plain_image_header(tmp_path / "nouid.dcm") is None
