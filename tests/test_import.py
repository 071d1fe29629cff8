"""The import service and the `dicomflow import` / `dicomflow stats` CLI contract."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pydicom
import pytest

from dicomflow.testing import synth

DICOMFLOW = str(Path(sys.executable).with_name("dicomflow"))


def run_cli(home: Path, *args: str) -> dict:
    env = dict(os.environ, DICOMFLOW_HOME=str(home), DICOMFLOW_FSYNC="batch")
    env.pop("DATABASE_URL", None)
    result = subprocess.run([DICOMFLOW, *args, "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_counted_once(report: dict) -> None:
    assert report["files_seen"] == (
        report["instances_new"] + report["instances_duplicate"] + len(report["conflicts"]) + len(report["ignored"])
    )


@pytest.fixture(scope="module")
def rt_study(tmp_path_factory):
    return synth.write_rt_study(tmp_path_factory.mktemp("rt"), n_slices=8, seed=3)


def test_cli_import_twice_dedupes_and_zip_dedupes(tmp_path, rt_study):
    home = tmp_path / "home"
    first = run_cli(home, "import", str(rt_study.out_dir))
    n_files = len(rt_study.paths)
    assert first["files_seen"] == n_files
    assert first["instances_new"] == n_files
    assert first["instances_duplicate"] == 0 and first["conflicts"] == [] and first["ignored"] == []
    assert first["patients"] == 1
    assert first["studies"] == 2  # the planning study and the MR's own study
    assert first["series"] == len(rt_study.series_uids)
    stats = run_cli(home, "stats")
    assert stats == {"patients": 1, "studies": 2, "series": len(rt_study.series_uids), "instances": n_files}

    second = run_cli(home, "import", str(rt_study.out_dir))
    assert second["instances_duplicate"] == first["instances_new"]
    assert second["instances_new"] == 0
    assert run_cli(home, "stats") == stats

    archive = synth.write_zip(tmp_path / "again.zip", rt_study.paths)
    third = run_cli(home, "import", str(archive))
    assert third["files_seen"] == n_files  # members count, the ZIP itself does not
    assert third["instances_duplicate"] == n_files
    assert_counted_once(third)
    assert run_cli(home, "stats") == stats

    stored = sorted((home / "store").rglob("*.dcm"))
    assert len(stored) == n_files
    assert not list((home / "store").rglob(".tmp-*"))


def test_cli_missing_path_fails_clearly(tmp_path):
    env = dict(os.environ, DICOMFLOW_HOME=str(tmp_path / "home"))
    result = subprocess.run(
        [DICOMFLOW, "import", str(tmp_path / "nope"), "--json"], env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "no such file or folder" in result.stderr
    assert "error" in json.loads(result.stdout)


@pytest.mark.django_db(transaction=True)
def test_service_catalogues_rt_details_and_files(rt_study):
    from django.conf import settings

    from dicomflow.catalog.models import ROI, ImageInformation, Instance, RTDose, RTImage, RTPlan, Series
    from dicomflow.intake.services import import_paths

    report = import_paths([rt_study.out_dir], workers=2)
    assert report.instances_new == len(rt_study.paths)
    assert ImageInformation.objects.filter(instance__series__series_instance_uid=rt_study.ct.series_uid).count() == 8
    plans = dict(RTPlan.objects.values_list("instance__sop_instance_uid", "approval_status"))
    assert plans[rt_study.approved_plan.sop_instance_uid] == "APPROVED"
    assert plans[rt_study.unapproved_plan.sop_instance_uid] == "UNAPPROVED"
    assert sorted(ROI.objects.values_list("name", flat=True)) == sorted(rt_study.rtstruct.roi_names)
    assert RTDose.objects.get(
        referenced_plan_uid=rt_study.approved_plan.sop_instance_uid
    ).instance.sop_instance_uid == rt_study.dose_for(rt_study.approved_plan).sop_instance_uid
    assert RTImage.objects.get().referenced_plan_uid == rt_study.approved_plan.sop_instance_uid
    assert Series.objects.get(series_instance_uid=rt_study.ct.series_uid).modality == "CT"
    # Stored bytes are the source bytes, under the layout store/<patient>/<study>/<series>/<sop>.dcm.
    ct0 = Instance.objects.get(sop_instance_uid=rt_study.ct.sop_instance_uids[0])
    assert ct0.stored_path == (
        f"{rt_study.patient.patient_id}/{rt_study.study_uid}/{rt_study.ct.series_uid}/{ct0.sop_instance_uid}.dcm"
    )
    assert (settings.STORE_DIR / ct0.stored_path).read_bytes() == rt_study.ct.paths[0].read_bytes()


@pytest.mark.django_db(transaction=True)
def test_conflict_is_recorded_and_stored_copy_kept(tmp_path):
    from django.conf import settings

    from dicomflow.catalog.models import Instance, InstanceConflict
    from dicomflow.intake.services import import_paths

    series = synth.write_image_series(tmp_path / "a", n_slices=3, seed=5)
    import_paths([tmp_path / "a"], workers=1)
    original = series.paths[1].read_bytes()
    ds = pydicom.dcmread(series.paths[1])
    ds.SeriesDescription = "edited elsewhere"
    (tmp_path / "b").mkdir()
    ds.save_as(tmp_path / "b" / "edited.dcm")
    report = import_paths([tmp_path / "b"], workers=1)
    assert report.instances_new == 0
    assert report.conflicts == [
        {"path": str(tmp_path / "b" / "edited.dcm"), "reason": "same SOP Instance UID with different content; stored copy kept"}
    ]
    inst = Instance.objects.get(sop_instance_uid=series.sop_instance_uids[1])
    assert (settings.STORE_DIR / inst.stored_path).read_bytes() == original
    assert InstanceConflict.objects.get().instance == inst


@pytest.mark.django_db(transaction=True)
def test_ignored_files_have_specific_reasons(tmp_path):
    from dicomflow.intake.services import import_paths

    src = tmp_path / "mixed"
    series = synth.write_image_series(src / "ct", n_slices=3, seed=6)
    (src / "readme.txt").write_text("not an image\n" * 20)
    (src / "empty.dcm").write_bytes(b"")
    data = series.paths[0].read_bytes()
    (src / "truncated.dcm").write_bytes(data[:-1000])
    ds = pydicom.dcmread(series.paths[1])
    del ds.SOPInstanceUID
    ds.file_meta.MediaStorageSOPInstanceUID = ""
    ds.save_as(src / "nouid.dcm")
    from pydicom.fileset import FileSet

    fs = FileSet()
    fs.add(pydicom.dcmread(series.paths[2]))
    fs.write(tmp_path / "media")
    shutil.copy(tmp_path / "media" / "DICOMDIR", src / "DICOMDIR")
    report = import_paths([src], workers=2)
    reasons = {Path(i["path"]).name: i["reason"] for i in report.ignored}
    assert reasons["readme.txt"].startswith("not a DICOM file")
    assert reasons["empty.dcm"] == "empty file"
    assert reasons["truncated.dcm"].startswith("file is truncated")
    assert reasons["nouid.dcm"] == "missing SOP Instance UID"
    assert reasons["DICOMDIR"].startswith("DICOMDIR")
    assert report.instances_new == 3
    assert report.files_seen == 8
    assert_counted_once(report.as_dict())


@pytest.mark.django_db(transaction=True)
def test_hostile_identifiers_stay_inside_the_store(tmp_path):
    from django.conf import settings

    from dicomflow.catalog.models import Instance
    from dicomflow.intake.services import import_paths

    patient = synth.PatientSpec(patient_id="../../../etc/evil", name="Doe^John")
    synth.write_image_series(tmp_path / "s", patient=patient, n_slices=2, seed=8)
    import_paths([tmp_path / "s"], workers=1)
    for inst in Instance.objects.all():
        path = (settings.STORE_DIR / inst.stored_path).resolve()
        assert path.is_relative_to(settings.STORE_DIR.resolve())
        assert ".." not in inst.stored_path.split("/")


@pytest.mark.django_db(transaction=True)
def test_zip_inside_folder_is_opened_and_multi_patient(tmp_path):
    from dicomflow.catalog.models import Patient
    from dicomflow.intake.services import import_paths

    info = synth.write_multi_patient_zip(tmp_path / "in" / "batch.zip", n_patients=3, n_slices=4, seed=9)
    report = import_paths([tmp_path / "in"], workers=2)
    assert report.files_seen == info.n_files
    assert report.instances_new == info.n_files
    assert len(report.patient_ids) == 3
    assert Patient.objects.count() == 3
    with zipfile.ZipFile(info.path) as zf:
        assert len(zf.namelist()) == info.n_files
