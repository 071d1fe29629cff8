"""The de-identification acceptance corpus: an RT study with identifying markers planted in every
attribute class, and the "done when" checks of issue 4 on it (no marker, no original UID or date
in the output, every RT reference resolves, dciodvfy finds no new error).

Builders here are imported by the other ``test_deid_*`` modules.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomflow.core.deid import KeyStore, Options, deidentify_folder
from dicomflow.core.deid.pseudonyms import is_well_known_uid
from dicomflow.testing import synth

PATIENT = synth.PatientSpec(patient_id="QX7781234", name="Zorgmeister^Quintessa", sex="F", birth_date="19511122")
# Every value below identifies someone or something; none may survive.
MARKERS = {
    "patient family name": "ZORGMEISTER",
    "patient given name": "QUINTESSA",
    "patient ID": "QX7781234",
    "other patient ID": "QXALT99812",
    "birth date": "19511122",
    "study date": synth.STUDY_DATE,
    "address": "MARKER LANE",
    "telephone": "9876543",
    "institution": "EXAMPLE GENERAL HOSPITAL",
    "institution address": "HARBOUR ROAD",
    "referring physician": "SMITH^JOHN",
    "physician of record": "MILLER",
    "operator": "PAULA",
    "reviewer": "CURIE",
    "station": "RTCT01",
    "device serial": "SN4711",
    "private creator": "MARKER PRIV",
    "private value": "PRIVSECRET42",
    "nested name": "NESTEDNAME",
    "nested date": "19990909",
    "request ID": "REQ5550123",
}


def _plant(ds: Dataset) -> None:
    """Plant one marker per attribute class (synth calls this on every dataset it writes)."""
    ds.OtherPatientIDsSequence = Sequence([Dataset()])
    ds.OtherPatientIDsSequence[0].PatientID = "QXALT99812"
    ds.PatientAddress = "77 Marker Lane, Springfield"
    ds.PatientTelephoneNumbers = "+49 30 9876543"
    ds.StudyDescription = "Thorax Zorgmeister 1951-11-22"
    ds.SeriesDescription = "QX7781234 planning"
    ds.PatientComments = "Quintessa complained of pain"
    ds.ImageComments = "Case QX7781234 seen 22.11.1951, call +49 30 9876543"
    # Private block with a name and a binary value.
    block = ds.private_block(0x0011, "MARKER PRIV", create=True)
    block.add_new(0x10, "LO", "Zorgmeister")
    block.add_new(0x11, "OB", b"PRIVSECRET42")
    # Two sequences deep: a person's name and a date.
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "109103", "DCM", "Modifying Equipment"
    inner.ContentCreatorName = "Nestedname^Nora"
    inner.ObservationDateTime = "19990909101010"
    outer = Dataset()
    outer.Manufacturer = "dicomflow synthetic"
    outer.InstitutionName = "St. Example General Hospital"
    outer.ContributionDateTime = "19990909"
    outer.PurposeOfReferenceCodeSequence = Sequence([inner])
    ds.ContributingEquipmentSequence = Sequence([outer])
    # Request attributes (cleaned sequence under Clean Descriptors) with an ID inside.
    request = Dataset()
    request.RequestedProcedureID = "REQ5550123"
    request.ScheduledProcedureStepDescription = "Planning CT Zorgmeister"
    ds.RequestAttributesSequence = Sequence([request])
    # RT labels with the patient's name in them.
    for item in ds.get("StructureSetROISequence", []):
        item.ROIName = f"{item.ROIName}_Zorgmeister"
    for item in ds.get("RTROIObservationsSequence", []):
        item.ROIObservationLabel = f"{item.ROIObservationLabel} Quintessa"
        item.ROIInterpreter = "Curie^Marie"


def build_corpus(out_dir: Path, n_slices: int = 6, size: int = 32, **kw) -> synth.StudyInfo:
    return synth.write_rt_study(
        out_dir, patient=PATIENT, n_slices=n_slices, rows=size, cols=size, decorate=_plant, seed=kw.pop("seed", 4), **kw
    )


def source_dates(paths) -> set[str]:
    """Every date (DA, and the date part of DT) anywhere in the source files."""
    found: set[str] = set()

    def walk(ds):
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            elif elem.VR in ("DA", "DT") and elem.value:
                values = elem.value if elem.VM > 1 else [elem.value]
                found.update(str(v)[:8] for v in values if len(str(v)) >= 8)

    for p in paths:
        walk(dcmread(p, stop_before_pixels=True))
    return found


def source_uids(paths) -> set[str]:
    """Every UID value (not a registered DICOM UID) of the source files."""
    found: set[str] = set()

    def walk(ds):
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            elif elem.VR == "UI" and elem.value:
                values = elem.value if elem.VM > 1 else [elem.value]
                found.update(str(v) for v in values if not is_well_known_uid(str(v)))

    for p in paths:
        ds = dcmread(p, stop_before_pixels=True)
        walk(ds.file_meta)
        walk(ds)
    return found


def output_files(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*.dcm"))


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("deid-corpus")
    info = build_corpus(base / "src")
    key = KeyStore(base / "keys").project_key("CORPUS")
    report = deidentify_folder(base / "src", base / "out", key, Options(), workers=1)
    return info, report, base


def test_corpus_has_every_marker_in_the_source(corpus_run):
    """Guard: the markers really are in the input (else the next test proves nothing)."""
    info, _, base = corpus_run
    blob = b"".join(p.read_bytes().upper() for p in (base / "src").rglob("*.dcm"))
    missing = [name for name, marker in MARKERS.items() if marker.encode() not in blob]
    assert missing == []


def test_no_marker_no_original_uid_or_date_in_output(corpus_run):
    info, report, base = corpus_run
    assert report.ok, report.failed
    assert report.contract()["leak_scan"] == {"findings": 0, "items": []}
    outs = output_files(base / "out")
    assert len(outs) == report.files_out == report.files_in == len(info.paths)
    blob = b"\n".join(p.read_bytes().upper() for p in outs)
    leaked = [name for name, marker in MARKERS.items() if marker.encode() in blob]
    assert leaked == []
    uids = source_uids(info.paths)
    assert len(uids) > 20
    assert [u for u in uids if u.encode() in blob] == []
    dates = source_dates(info.paths)
    assert {"19511122", synth.STUDY_DATE, "19990909"} <= dates
    assert [d for d in dates if d.encode() in blob] == []
    # Output names are made of new UIDs only.
    assert not any(u in str(p) for p in outs for u in uids)


def test_rt_labels_cleaned_not_blanked(corpus_run):
    _, _, base = corpus_run
    for path in output_files(base / "out"):
        ds = dcmread(path, stop_before_pixels=True)
        if ds.Modality == "RTSTRUCT":
            names = sorted(item.ROIName for item in ds.StructureSetROISequence)
            labels = sorted(item.ROIObservationLabel for item in ds.RTROIObservationsSequence)
            assert names == sorted(r.name for r in synth.DEFAULT_ROIS)
            assert labels == sorted(r.name for r in synth.DEFAULT_ROIS)
            assert all(item.ROIInterpreter == "" for item in ds.RTROIObservationsSequence)
            return
    pytest.fail("no RTSTRUCT in the output")


def test_every_rt_reference_resolves(corpus_run):
    info, report, base = corpus_run
    assert report.rt["references"] > 10
    assert report.rt["external"] == []
    # Independently: every Referenced SOP Instance UID of the RT objects names an output file.
    sops = {}
    for path in output_files(base / "out"):
        ds = dcmread(path, stop_before_pixels=True)
        sops[str(ds.SOPInstanceUID)] = ds
    studies = {str(ds.StudyInstanceUID) for ds in sops.values()}
    refs = set()

    def walk(ds, depth):
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item, depth + 1)
            elif elem.keyword == "ReferencedSOPInstanceUID" and depth:
                refs.add(str(elem.value))

    for ds in sops.values():
        if ds.Modality.startswith("RT"):
            walk(ds, 0)
    assert refs and refs <= set(sops) | studies


def test_orphan_structure_set_references_reported_external(tmp_path):
    synth.write_rt_study(tmp_path / "src", n_slices=4, rows=16, cols=16, with_mr=False, absent_ct_structure_set=True, seed=9)
    key = KeyStore(tmp_path / "keys").project_key("ORPHAN")
    report = deidentify_folder(tmp_path / "src", tmp_path / "out", key, Options(), workers=1)
    assert report.ok
    kinds = {e["kind"] for e in report.rt["external"]}
    assert "instance" in kinds and "series" in kinds
    assert report.rt["resolved"] < report.rt["references"]


def _errors(path: Path, tool: str) -> set[str]:
    out = subprocess.run([tool, str(path)], capture_output=True, text=True)
    return {line.strip() for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")}


def test_dciodvfy_no_new_errors(corpus_run):
    from conftest import require_tool

    tool = require_tool("dciodvfy")
    info, _, base = corpus_run
    by_modality_src, by_modality_out = {}, {}
    for p in sorted((base / "src").rglob("*.dcm")):
        by_modality_src.setdefault(dcmread(p, stop_before_pixels=True).Modality, p)
    for p in output_files(base / "out"):
        by_modality_out.setdefault(dcmread(p, stop_before_pixels=True).Modality, p)
    assert set(by_modality_out) == set(by_modality_src)
    new = {}
    for modality, out in by_modality_out.items():
        # Planted markers are not all valid in every IOD: compare against the decorated input.
        extra = _errors(out, tool) - _errors(by_modality_src[modality], tool)
        if extra:
            new[modality] = sorted(extra)
    assert new == {}


def test_enhanced_multiframe_and_registration(tmp_path):
    """Enhanced CT/MR (functional groups) and a spatial registration: valid, references intact."""
    from conftest import require_tool

    tool = require_tool("dciodvfy")
    synth.write_image_series(tmp_path / "src" / "ect", n_slices=4, rows=16, cols=16, multiframe=True, seed=31)
    synth.write_image_series(tmp_path / "src" / "emr", modality="MR", n_slices=3, rows=16, cols=16, multiframe=True, seed=32)
    synth.write_rt_study(tmp_path / "src" / "rt", n_slices=3, rows=16, cols=16, with_registration=True, seed=33)
    key = KeyStore(tmp_path / "keys").project_key("ENH")
    report = deidentify_folder(tmp_path / "src", tmp_path / "out", key, Options(), workers=1)
    assert report.ok and report.files_out == report.files_in
    assert report.rt["external"] == [] and report.rt["references"] > 5
    first_src, first_out = {}, {}
    for p in sorted((tmp_path / "src").rglob("*.dcm")):
        first_src.setdefault(str(dcmread(p, stop_before_pixels=True).SOPClassUID), p)
    for p in output_files(tmp_path / "out"):
        first_out.setdefault(str(dcmread(p, stop_before_pixels=True).SOPClassUID), p)
    assert "1.2.840.10008.5.1.4.1.1.2.1" in first_out and "1.2.840.10008.5.1.4.1.1.66.1" in first_out
    new = {k: sorted(_errors(p, tool) - _errors(first_src[k], tool)) for k, p in first_out.items()}
    assert {k: v for k, v in new.items() if v} == {}
