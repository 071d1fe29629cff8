"""Leak scan and descriptor cleaner as units: each class of identifying value is found (and named
without its value); clinically meaningful words survive cleaning."""

from __future__ import annotations

import copy

from pydicom.dataset import Dataset

from dicomflow.core.deid import Deidentifier, Options, ProjectKey
from dicomflow.core.deid.clean import DescriptorCleaner
from dicomflow.core.deid.fastwrite import encode
from dicomflow.core.deid.leak import scan_bytes, scan_dataset
from dicomflow.core.deid.values import IdentifyingValues
from dicomflow.testing import synth
from test_deid_corpus import PATIENT


def _values() -> IdentifyingValues:
    v = IdentifyingValues()
    v.add_name("Zorgmeister^Quintessa")
    v.add_id("QX7781234")
    v.add_date("19511122")
    v.uids.add("1.2.826.0.1.999.42")
    v.add_phrase("77 Marker Lane, Springfield")
    return v


def test_each_kind_is_found_and_only_named():
    values = _values()
    cases = {
        "name/id": b"xx ZORGMEISTER xx",
        "date": b"born 1951-11-22",
        "uid": b"\x02\x001.2.826.0.1.999.42\x00",
        "text": b"lives at 77 marker lane, springfield",
    }
    for kind, data in cases.items():
        assert kind in scan_bytes(data, values), kind
    assert scan_bytes(b"Lung_L PTV_60 Body 20240101 1.2.840.10008.5.1.4.1.1.2", values) == []


def test_values_touching_neighbouring_bytes_are_found():
    """A value of even length is followed directly by the next tag: 0x32 ('2') for group 0032,
    0xFE 0xFF for the next sequence item."""
    values = _values()
    assert scan_bytes(b"\x00\x00ZORGMEISTER\x32\x00\x12\x10", values) == ["name/id"]
    assert scan_bytes(b"ZORGMEISTER\xfe\xff\x00\xe0", values) == ["name/id"]
    assert scan_bytes(b"\x2c\x001.2.826.0.1.999.42\x32\x00", values) == ["uid"]


def test_dt_dates_found_but_uid_components_are_not_dates():
    values = _values()
    assert scan_bytes(b"19511122101500.000", values) == ["date"]
    assert scan_bytes(b"2.25.195111221234567890123456", values) == []


def test_leak_in_kept_safe_private_binary_value_is_found():
    """Private and binary values are scanned: a safe-private attribute that carries a name fails."""
    ds = Dataset()
    ds.PatientName, ds.PatientID = PATIENT.name, PATIENT.patient_id
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", "1.2.3.4.6"
    block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x0C, "OB", b"ZORGMEISTER\x00")
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    deid = Deidentifier(ProjectKey("L", b"l" * 32), Options(retain_safe_private=True))
    out = deid.deidentify(ds)
    # Issue 13: a "safe" attribute holding text is not kept (value check)...
    assert 0x0019100C not in ds
    # ...and the scan still finds a name in a private binary value that got through.
    ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0C, "OB", b"ZORGMEISTER\x00")
    assert "name/id" in scan_bytes(encode(ds), out.values)
    findings = scan_dataset(ds, out.values)
    assert [(f.tag, f.kind) for f in findings] == [("(0019,100C)", "name/id")]
    assert "ZORGMEISTER" not in findings[0].describe().upper()


def test_cleaner_keeps_structure_names():
    cleaner = DescriptorCleaner({"ZORGMEISTER", "QUINTESSA", "QX7781234"})
    assert cleaner.clean("Lung_L") == "Lung_L"
    assert cleaner.clean("PTV_60Gy") == "PTV_60Gy"
    assert cleaner.clean("Body") == "Body"
    assert cleaner.clean("Lung_L_Zorgmeister") == "Lung_L"
    assert cleaner.clean("GTV Quintessa 12.03.2021") == "GTV"
    assert cleaner.clean("CTV 20210312 QX7781234") == "CTV"
    assert cleaner.clean("Zorgmeister") == ""


def test_multiple_patients_get_their_own_shift_and_pseudonym(tmp_path):
    a = synth.write_image_series(tmp_path / "a", patient=synth.PatientSpec("PA1", "Aaa^Bbb"), n_slices=1, rows=8, cols=8, seed=1)
    b = synth.write_image_series(tmp_path / "b", patient=synth.PatientSpec("PB2", "Ccc^Ddd"), n_slices=1, rows=8, cols=8, seed=2)
    from pydicom import dcmread

    deid = Deidentifier(ProjectKey("M", b"m" * 32), Options(date_shift_days=(-1000, -1)))
    outs = []
    for info in (a, b):
        ds = dcmread(info.paths[0])
        outs.append((copy.copy(ds), deid.deidentify(ds)))
    (_, oa), (_, ob) = outs
    assert oa.patient["pseudonym"] != ob.patient["pseudonym"]
    assert oa.patient["date_offset_days"] != ob.patient["date_offset_days"]


def test_non_ascii_names_found_in_utf8_and_latin1_bytes():
    values = IdentifyingValues()
    values.add_name("Müller^Jürgen")
    assert not values.ascii_only
    assert scan_bytes("x Müller x".encode("utf-8"), values) == ["name/id"]
    assert scan_bytes("x Müller x".encode("latin-1"), values) == ["name/id"]
    # Issue 13: diacritics folded and transliterated both ways are the same name.
    assert scan_bytes("x Muller x".encode("latin-1"), values) == ["name/id"]
    assert scan_bytes("x MUELLER x".encode("ascii"), values) == ["name/id"]
    assert scan_bytes("x Miller x".encode("ascii"), values) == []


def test_latin1_object_cleaned_and_scanned(tmp_path):
    from dicomflow.core.deid import deidentify_folder

    def decorate(ds):
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.StudyDescription = "Thorax Müller"

    synth.write_image_series(
        tmp_path / "src", patient=synth.PatientSpec("PM1", "Müller^Jürgen"), n_slices=2, rows=8, cols=8, decorate=decorate, seed=3
    )
    report = deidentify_folder(tmp_path / "src", tmp_path / "out", ProjectKey("L1", b"l" * 32), Options(), workers=1)
    assert report.ok and report.files_out == 2
    from pydicom import dcmread

    for p in (tmp_path / "out").rglob("*.dcm"):
        data = p.read_bytes()
        assert "Müller".encode("latin-1") not in data and b"M\xfcller".upper() not in data.upper()
        assert dcmread(p).StudyDescription == "Thorax"
