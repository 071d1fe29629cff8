"""``dicomflow deid`` / ``dicomflow reidentify`` end to end (real processes, real files), the key
store, keyed pseudonyms and the leak scan failing closed."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread

from dicomflow.core.deid import KeyStore, Options, ProjectKey, deidentify_folder
from dicomflow.core.deid.pseudonyms import Pseudonymizer
from dicomflow.testing import synth
from test_deid_corpus import PATIENT, _plant, build_corpus, output_files

DICOMFLOW = [str(Path(sys.executable).with_name("dicomflow"))]


def cli(*args, home: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, DICOMFLOW_HOME=str(home))
    env.pop("DATABASE_URL", None)  # the command's own catalog in its home, also when the suite runs on PostgreSQL
    res = subprocess.run([*DICOMFLOW, *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert res.returncode == 0, res.stderr + res.stdout
    return res


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in output_files(root)}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("deid-cli")
    info = build_corpus(base / "src", n_slices=4, size=16)
    home = base / "home"
    first = cli("deid", str(base / "src"), str(base / "out1"), "--project", "ALPHA", "--json", home=home)
    second = cli("deid", str(base / "src"), str(base / "out2"), "--project", "ALPHA", "--json", home=home)
    other = cli("deid", str(base / "src"), str(base / "out3"), "--project", "BETA", "--json", home=home)
    return info, base, home, [json.loads(r.stdout) for r in (first, second, other)]


def test_json_contract(two_runs):
    info, _, _, docs = two_runs
    for doc in docs:
        # The contract's keys first, in order; issue 13 adds the findings list and "skipped".
        assert list(doc) == ["files_in", "files_out", "failed", "quarantined", "leak_scan", "skipped"]
        assert doc["files_in"] == doc["files_out"] == len(info.paths)
        assert doc["failed"] == [] and doc["quarantined"] == [] and doc["skipped"] == []
        assert doc["leak_scan"] == {"findings": 0, "items": []}


def test_same_project_gives_identical_bytes(two_runs):
    _, base, _, _ = two_runs
    one, two = snapshot(base / "out1"), snapshot(base / "out2")
    assert one and one == two  # same UIDs, pseudonyms, shifted dates: byte-identical files


def test_other_project_gives_other_uids_and_pseudonyms(two_runs):
    _, base, _, _ = two_runs
    one, three = snapshot(base / "out1"), snapshot(base / "out3")
    assert set(one).isdisjoint(three)
    a = dcmread(base / "out1" / next(iter(one)), stop_before_pixels=True)
    b = dcmread(base / "out3" / next(iter(three)), stop_before_pixels=True)
    assert a.PatientID != b.PatientID and a.StudyInstanceUID != b.StudyInstanceUID


def test_key_store_files_are_private(two_runs):
    _, _, home, _ = two_runs
    folder = home / "keys" / "projects"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("ALPHA.key", "ALPHA.reverse.jsonl", "BETA.key"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert len(bytes.fromhex((folder / "ALPHA.key").read_text().strip())) == 32
    assert (folder / "ALPHA.key").read_bytes() != (folder / "BETA.key").read_bytes()


def test_secret_never_printed(two_runs, tmp_path):
    _, base, home, _ = two_runs
    secret_hex = (home / "keys" / "projects" / "ALPHA.key").read_text().strip()
    res = cli("deid", str(base / "src"), str(tmp_path / "o"), "--project", "ALPHA", home=home)
    assert secret_hex not in res.stdout + res.stderr
    key = KeyStore(home / "keys" / "projects").project_key("ALPHA")
    assert secret_hex not in repr(key) and repr(key.secret) not in repr(key)


def test_reverse_map_is_deduplicated(two_runs):
    _, _, home, _ = two_runs
    lines = (home / "keys" / "projects" / "ALPHA.reverse.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines))
    kinds = {json.loads(line)["kind"] for line in lines}
    assert kinds == {"uid", "patient", "study"}


def test_reidentify_restores_originals(two_runs):
    info, base, home, _ = two_runs
    # re-identification is a named Re-identifier's act: the project (adopting the key) and the user first
    cli("project", "create", "ALPHA", "--json", home=home)
    cli("user", "create", "rita", "--json", home=home)
    cli("project", "add-member", "ALPHA", "rita", "--role", "reidentifier", "--json", home=home)
    res = cli("reidentify", str(base / "out1"), str(base / "back"), "--project", "ALPHA", "--user", "rita", "--json",
              home=home)
    doc = json.loads(res.stdout)
    assert doc["files_out"] == len(info.paths) and doc["failed"] == []
    originals = {}
    for p in info.paths:
        ds = dcmread(p, stop_before_pixels=True)
        originals[str(ds.SOPInstanceUID)] = ds
    restored = [dcmread(p, stop_before_pixels=True) for p in output_files(base / "back")]
    assert {str(ds.SOPInstanceUID) for ds in restored} == set(originals)
    for ds in restored:
        src = originals[str(ds.SOPInstanceUID)]
        assert (ds.PatientID, str(ds.PatientName), ds.PatientBirthDate) == (PATIENT.patient_id, PATIENT.name, PATIENT.birth_date)
        assert (ds.StudyInstanceUID, ds.SeriesInstanceUID) == (src.StudyInstanceUID, src.SeriesInstanceUID)
        assert ds.StudyDate == src.StudyDate and ds.AccessionNumber == src.AccessionNumber
        assert ds.file_meta.MediaStorageSOPInstanceUID == src.SOPInstanceUID
        assert ds.PatientIdentityRemoved == "YES"  # issue 13: the markers are never removed
        if ds.Modality == "RTSTRUCT":
            refs = [
                i.ReferencedSOPInstanceUID
                for c in ds.ROIContourSequence
                for contour in c.get("ContourSequence", [])
                for i in contour.ContourImageSequence
            ]
            assert refs and set(refs) <= set(originals)


def test_reidentify_with_another_projects_map_fails(two_runs):
    """Issue 13: nothing maps (BETA's output, ALPHA's map) → exit 1, a JSON error, nothing written."""
    info, base, home, _ = two_runs
    for command in (("project", "create", "ALPHA"), ("user", "create", "rita"),
                    ("project", "add-member", "ALPHA", "rita", "--role", "reidentifier")):
        cli(*command, "--json", home=home, check=False)  # made already when the other test ran first
    res = cli("reidentify", str(base / "out3"), str(base / "wrong"), "--project", "ALPHA", "--user", "rita", "--json",
              home=home, check=False)
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    assert doc["files_out"] == 0 and len(doc["failed"]) == len(info.paths)
    assert "reverse map" in doc["error"] and all("reverse map" in f["reason"] for f in doc["failed"])
    assert output_files(base / "wrong") == []


def test_reidentify_unknown_project_fails(tmp_path):
    res = cli("reidentify", str(tmp_path), str(tmp_path / "x"), "--project", "NOPE", "--json", home=tmp_path / "h", check=False)
    assert res.returncode != 0
    assert "NOPE" in json.loads(res.stdout)["error"]


def test_leak_finding_fails_and_releases_nothing(tmp_path):
    """A kept attribute carrying the patient's name (the engine cannot know) must fail the job."""

    def plant(ds):
        _plant(ds)
        ds.Manufacturer = "Zorgmeister Medical"  # Manufacturer is kept by the Basic Profile

    synth.write_image_series(tmp_path / "src", patient=PATIENT, n_slices=3, rows=16, cols=16, decorate=plant, seed=2)
    res = cli("deid", str(tmp_path / "src"), str(tmp_path / "out"), "--project", "LEAK", "--json", home=tmp_path / "h", check=False)
    assert res.returncode != 0
    doc = json.loads(res.stdout)
    assert doc["leak_scan"]["findings"] >= 3 and doc["files_out"] == 0
    # Issue 13: each file with a finding is withheld (quarantined with the tag path and kind).
    assert doc["failed"] == [] and len(doc["quarantined"]) == 3
    assert all("leak scan" in f["reason"] and "Manufacturer" in f["reason"] for f in doc["quarantined"])
    assert {(i["tag"], i["keyword"], i["kind"]) for i in doc["leak_scan"]["items"]} == {("(0008,0070)", "Manufacturer", "name/id")}
    assert not any("ZORGMEISTER" in json.dumps(x).upper() for x in (doc["quarantined"], doc["leak_scan"]))
    assert output_files(tmp_path / "out") == []
    assert not [p for p in (tmp_path / "out").iterdir()]  # staging folder removed too


def test_unreadable_and_burned_in_files_reported(tmp_path):
    synth.write_image_series(tmp_path / "src", n_slices=2, rows=16, cols=16, seed=3)
    synth.write_secondary_capture(tmp_path / "src" / "sc", burned_in=True, seed=3)
    (tmp_path / "src" / "notes.txt").write_text("not dicom")
    res = cli("deid", str(tmp_path / "src"), str(tmp_path / "out"), "--project", "MIX", "--json", home=tmp_path / "h", check=False)
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    assert doc["files_in"] == 4 and doc["files_out"] == 2
    assert [f["path"].endswith("notes.txt") for f in doc["failed"]] == [True]
    assert len(doc["quarantined"]) == 1 and "Burned In Annotation" in doc["quarantined"][0]["reason"]


def test_parallel_and_serial_give_the_same_output(tmp_path):
    synth.write_image_series(tmp_path / "src", patient=PATIENT, n_slices=40, rows=16, cols=16, seed=5)
    key = ProjectKey("PAR", b"p" * 32)
    serial = deidentify_folder(tmp_path / "src", tmp_path / "s", key, Options(), workers=1)
    parallel = deidentify_folder(tmp_path / "src", tmp_path / "p", key, Options(), workers=2)
    assert serial.ok and parallel.ok and serial.files_out == parallel.files_out == 40
    assert snapshot(tmp_path / "s") == snapshot(tmp_path / "p")
    assert serial.record == parallel.record and serial.reverse_map == parallel.reverse_map


def test_record_has_no_values(tmp_path):
    synth.write_image_series(tmp_path / "src", patient=PATIENT, n_slices=2, rows=16, cols=16, decorate=_plant, seed=6)
    cli("deid", str(tmp_path / "src"), str(tmp_path / "out"), "--project", "REC", "--record-dir", str(tmp_path / "rec"), home=tmp_path / "h")
    text = (tmp_path / "rec" / "deid-record.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["tag", "keyword", "action", "option"]
    as_tuples = {tuple(r.values()) for r in rows}
    assert ("(0010,0010)", "PatientName", "P", "basic") in as_tuples
    assert ("(0008,0020)", "StudyDate", "C", "rtnLongModifDatesOpt") in as_tuples
    assert ("(0011,xx10)", "", "X", "basic") in as_tuples  # private, by creator block
    for marker in ("Zorgmeister", "QX7781234", "19511122", PATIENT.patient_id):
        assert marker not in text
    record = json.loads((tmp_path / "rec" / "deid-record.json").read_text())
    assert record["record"] and "rt_integrity" in record


def test_uid_rendering_and_well_known_uids():
    p = Pseudonymizer(b"s" * 32, Options())
    new = p.uid("1.2.3.4.5")
    assert new.startswith("2.25.") and len(new) <= 64 and new == p.uid("1.2.3.4.5")
    rooted = Pseudonymizer(b"s" * 32, Options(uid_root="1.2.826.0.1.3680043.9.7777")).uid("1.2.3.4.5")
    assert rooted.startswith("1.2.826.0.1.3680043.9.7777.") and len(rooted) <= 64
    assert all(part and (part == "0" or not part.startswith("0")) for part in rooted.split("."))
    from dicomflow.core.deid.pseudonyms import is_well_known_uid

    assert is_well_known_uid("1.2.840.10008.5.1.4.1.1.2") and is_well_known_uid("1.2.840.10008.1.2.1")
    assert not is_well_known_uid("1.2.3.4.5")


def test_subject_ids_supplied_by_project():
    from pydicom.dataset import Dataset

    from dicomflow.core.deid import Deidentifier

    ds = Dataset()
    ds.PatientID, ds.PatientName = "MRN1", "Doe^Jane"
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "1.2.3.9"
    out = Deidentifier(ProjectKey("S", b"s" * 32), Options(), {"MRN1": "SUBJ-007"}).deidentify(ds)
    assert ds.PatientID == ds.PatientName == "SUBJ-007"
    assert out.patient["pseudonym"] == "SUBJ-007" and out.patient["patient_id"] == "MRN1"


def test_project_names_are_validated(tmp_path):
    store = KeyStore(tmp_path)
    for bad in ("../x", "", "a/b", ".hidden"):
        with pytest.raises(Exception):
            store.project_key(bad)
    key = store.project_key("ok-1")
    assert store.project_key("ok-1") == key and "secret" not in repr(key)


def test_implicit_vr_pixels_copied_byte_for_byte(tmp_path):
    info = synth.write_image_series(tmp_path / "src", patient=PATIENT, n_slices=2, rows=32, cols=32, implicit_vr=True, seed=7)
    report = deidentify_folder(tmp_path / "src", tmp_path / "out", ProjectKey("IMP", b"i" * 32), Options(), workers=1)
    assert report.ok and report.files_out == 2
    by_position = {}
    for p in info.paths:
        ds = dcmread(p)
        by_position[tuple(ds.ImagePositionPatient)] = ds
    for p in output_files(tmp_path / "out"):
        out = dcmread(p)
        src = by_position[tuple(out.ImagePositionPatient)]
        assert out.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID
        assert out.PixelData == src.PixelData and out.Rows == 32
        assert out.PatientID != src.PatientID


def test_deidentify_paths_selected_files_only(tmp_path):
    from dicomflow.core.deid import deidentify_paths

    info = synth.write_image_series(tmp_path / "src", n_slices=4, rows=16, cols=16, seed=8)
    report = deidentify_paths(info.paths[:2], tmp_path / "out", ProjectKey("SEL", b"s" * 32), Options(), workers=1)
    assert report.files_in == report.files_out == 2 and len(output_files(tmp_path / "out")) == 2


def test_reidentify_a_result_made_from_deidentified_data(two_runs):
    """A new RTSTRUCT produced on de-identified CT (new SOP UID) maps back to the clinical CT."""
    from pydicom.uid import generate_uid

    from dicomflow.core.deid import ReverseMap, reidentify_dataset

    info, base, home, _ = two_runs
    rmap = ReverseMap.from_records(KeyStore(home / "keys" / "projects").load_reverse_records("ALPHA"))
    deid_rs = next(
        dcmread(p) for p in output_files(base / "out1") if dcmread(p, stop_before_pixels=True).Modality == "RTSTRUCT"
    )
    result_uid = generate_uid()
    deid_rs.SOPInstanceUID = result_uid
    deid_rs.file_meta.MediaStorageSOPInstanceUID = result_uid
    changed = reidentify_dataset(deid_rs, rmap)
    assert changed > 5
    assert deid_rs.SOPInstanceUID == result_uid  # its own new UID is not in the map: kept
    assert deid_rs.PatientID == PATIENT.patient_id and deid_rs.StudyInstanceUID == info.study_uid
    refs = {
        i.ReferencedSOPInstanceUID
        for c in deid_rs.ROIContourSequence
        for contour in c.get("ContourSequence", [])
        for i in contour.ContourImageSequence
    }
    assert refs and refs <= set(info.ct.sop_instance_uids)
    assert deid_rs.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == info.ct.frame_of_reference_uid


def test_second_run_into_same_destination_merges(tmp_path):
    synth.write_image_series(tmp_path / "a", patient=PATIENT, n_slices=3, rows=8, cols=8, seed=41)
    key = ProjectKey("MERGE", b"g" * 32)
    first = deidentify_folder(tmp_path / "a", tmp_path / "out", key, Options(), workers=1)
    before = snapshot(tmp_path / "out")
    second = deidentify_folder(tmp_path / "a", tmp_path / "out", key, Options(), workers=1)
    assert first.files_out == second.files_out == 3
    assert snapshot(tmp_path / "out") == before  # same files, same bytes, nothing duplicated
    assert [p.name for p in (tmp_path / "out").iterdir()] == [p.split("/")[0] for p in first.outputs][:1]
