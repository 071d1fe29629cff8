"""Staging clinical series into a research project: closure, de-identified copy, status, repeatability."""

from __future__ import annotations

from dicomflow.accounts.actors import cli_operator

from pathlib import Path

import pydicom
import pytest
from django.conf import settings

from dicomflow.catalog.models import Instance, Patient, Series, Study
from dicomflow.errors import InputError, PermissionDeniedError
from dicomflow.projects import selectors, services
from dicomflow.projects.models import Role, StagedSeries, StagingStatus
from dicomflow.testing import synth

OP = cli_operator()  # the command-line operator: may do all but re-identify

PATIENT = synth.PatientSpec("PATSTG4711", "Leakmarker^Zoe", "F", "19610203")


@pytest.fixture
def clinical(tmp_path):
    """A planning study (CT, RTSTRUCT, 2 plans, 2 doses, RT image; MR in its own study), imported."""
    from dicomflow.intake.services import import_paths

    info = synth.write_rt_study(tmp_path / "src", PATIENT, n_slices=10, rows=32, cols=32)
    report = import_paths([info.out_dir], workers=1)
    assert report.instances_new == len(info.paths)
    info.study = Study.objects.get(study_instance_uid=info.study_uid)
    return info


def original_uids(info) -> set[str]:
    uids = {info.study_uid, info.ct.series_uid, info.ct.frame_of_reference_uid, *info.ct.sop_instance_uids}
    for obj in info.rt_objects:
        uids |= {obj.study_uid, obj.series_uid, obj.sop_instance_uid}
    return uids


def dose_closure(info) -> set[str]:
    plan = info.approved_plan
    return {info.dose_for(plan).series_uid, plan.series_uid, info.rtstruct.series_uid, info.ct.series_uid}


def assert_no_identity_in_copy(project, info) -> None:
    originals = original_uids(info)
    patients = Patient.objects.filter(project=project)
    assert patients.exists()
    for p in patients:
        assert p.patient_id != PATIENT.patient_id and "Leakmarker" not in p.patient_name
        assert p.birth_date is None or p.birth_date.strftime("%Y%m%d") != PATIENT.birth_date
    for s in Study.objects.filter(project=project):
        assert s.study_instance_uid not in originals
        assert s.accession_number == "" or s.accession_number not in {synth._accession(info.study_uid)}
    for s in Series.objects.filter(project=project):
        assert s.series_instance_uid not in originals and s.frame_of_reference_uid not in originals
    instances = Instance.objects.filter(series__project=project)
    assert instances.exists()
    needles = [PATIENT.patient_id.encode(), b"Leakmarker", PATIENT.birth_date.encode()]
    needles += [u.encode() for u in originals]
    for inst in instances:
        assert inst.sop_instance_uid not in originals
        data = (Path(settings.STORE_DIR) / inst.stored_path).read_bytes()
        found = [n for n in needles if n in data]
        assert found == [], f"{inst.stored_path} holds original values"


@pytest.mark.django_db
def test_staging_a_dose_stages_its_closure_deidentified(clinical):
    project = services.create_project("stg-closure", "Closure")
    dose = clinical.dose_for(clinical.approved_plan)
    job = services.stage_series(OP, project, clinical.study, [dose.series_uid], run_inline=True)

    assert job.status == StagingStatus.FINISHED, job.error
    assert job.requested_series == [dose.series_uid]
    assert set(job.selected_series) == dose_closure(clinical)
    n_files = len(clinical.ct.paths) + 3
    assert (job.files_in, job.files_out, job.instances_new) == (n_files, n_files, n_files)
    assert job.leak_findings == 0 and job.failed == [] and job.quarantined == []
    assert job.rt_integrity["external"] == [] and job.rt_integrity["references"] > 0
    assert job.deid_record and {"tag", "keyword", "action", "option"} == set(job.deid_record[0])

    copies = Series.objects.filter(project=project)
    assert sorted(copies.values_list("modality", flat=True)) == ["CT", "RTDOSE", "RTPLAN", "RTSTRUCT"]
    assert Study.objects.filter(project=project).count() == 1
    assert_no_identity_in_copy(project, clinical)
    # the copy's RT references resolve inside the copy: dose -> plan -> structure set -> CT
    by_modality = {s.modality: s for s in copies}
    plan_file = Path(settings.STORE_DIR) / by_modality["RTPLAN"].instances.get().stored_path
    plan = pydicom.dcmread(plan_file)
    rs_uid = plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID
    assert by_modality["RTSTRUCT"].instances.get().sop_instance_uid == rs_uid
    # the clinical pool is untouched
    assert Series.objects.filter(project__isnull=True).count() == len(clinical.series_uids)


@pytest.mark.django_db
def test_pseudonymization_status_none_partly_fully(clinical):
    a = services.create_project("stg-status-a", "A")
    b = services.create_project("stg-status-b", "B")

    def status():
        return {r["project"]: (r["status"], r["series_staged"]) for r in selectors.study_pseudonymization(clinical.study)}

    n_series = clinical.study.series.count()
    assert status() == {"stg-status-a": ("none", 0), "stg-status-b": ("none", 0)}
    dose = clinical.dose_for(clinical.approved_plan)
    services.stage_series(OP, a, clinical.study, [dose.series_uid], run_inline=True)
    assert status() == {"stg-status-a": ("partly", 4), "stg-status-b": ("none", 0)}
    job = services.stage_series(OP, a, clinical.study, None, run_inline=True)
    assert job.status == StagingStatus.FINISHED, job.error
    assert status() == {"stg-status-a": ("fully", n_series), "stg-status-b": ("none", 0)}
    # an instance missing from a copy makes that study only partly pseudonymized again
    copy_ct = StagedSeries.objects.get(project=a, source_series__series_instance_uid=clinical.ct.series_uid).copy_series
    copy_ct.instances.first().delete()
    assert status()["stg-status-a"] == ("partly", n_series - 1)


@pytest.mark.django_db
def test_staging_twice_gives_same_uids_and_no_duplicates(clinical):
    project = services.create_project("stg-twice", "Twice")
    first = services.stage_series(OP, project, clinical.study, [clinical.rtstruct.series_uid], run_inline=True)
    uids_first = set(Instance.objects.filter(series__project=project).values_list("sop_instance_uid", flat=True))
    second = services.stage_series(OP, project, clinical.study, [clinical.rtstruct.series_uid], run_inline=True)
    uids_second = set(Instance.objects.filter(series__project=project).values_list("sop_instance_uid", flat=True))

    assert first.status == second.status == StagingStatus.FINISHED, (first.error, second.error)
    assert first.instances_new == len(clinical.ct.paths) + 1
    assert second.instances_new == 0 and second.instances_duplicate == first.instances_new
    assert uids_first == uids_second and len(uids_first) == first.instances_new
    assert Patient.objects.filter(project=project).count() == 1
    # another project, another key: other UIDs and another pseudonym
    other = services.create_project("stg-twice-other", "Other")
    services.stage_series(OP, other, clinical.study, [clinical.rtstruct.series_uid], run_inline=True)
    uids_other = set(Instance.objects.filter(series__project=other).values_list("sop_instance_uid", flat=True))
    assert len(uids_other) == len(uids_first) and not uids_other & uids_first
    assert Patient.objects.get(project=other).patient_id != Patient.objects.get(project=project).patient_id


@pytest.mark.django_db
def test_enrolled_subject_id_becomes_patient_id(clinical):
    project = services.create_project("stg-enrol", "Enrol")
    patient = Patient.objects.get(patient_id=PATIENT.patient_id, project__isnull=True)
    subject = services.enrol_subject(OP, project, "SUBJ-0042", patient, expected_sex="F", expected_birth_year=1961)
    assert subject.pseudonym and subject.pseudonym != "SUBJ-0042"
    job = services.stage_series(OP, project, clinical.study, [clinical.ct.series_uid], run_inline=True)
    assert job.status == StagingStatus.FINISHED, job.error
    copy_patient = Patient.objects.get(project=project)
    assert copy_patient.patient_id == "SUBJ-0042" and copy_patient.patient_name == "SUBJ-0042"
    stored = Instance.objects.filter(series__project=project).first().stored_path
    ds = pydicom.dcmread(Path(settings.STORE_DIR) / stored, stop_before_pixels=True)
    assert ds.PatientID == "SUBJ-0042"
    # a patient staged before enrolment keeps its keyed pseudonym
    late = services.create_project("stg-enrol-late", "Late")
    services.stage_series(OP, late, clinical.study, [clinical.ct.series_uid], run_inline=True)
    with pytest.raises(InputError):
        services.enrol_subject(OP, late, "SUBJ-0043", patient, expected_sex="F", expected_birth_year=1961)
    kept = services.enrol_subject(OP, late, None, patient, expected_sex="F", expected_birth_date="1961-02-03")
    assert kept.study_subject_id == Patient.objects.get(project=late).patient_id


@pytest.mark.django_db
def test_staging_refuses_bad_requests(clinical, django_user_model):
    project = services.create_project("stg-refuse", "Refuse")
    with pytest.raises(InputError):
        services.stage_series(OP, project, clinical.study, ["1.2.3.4.5"], run_inline=True)
    keeps_uids = services.create_project("stg-refuse-uids", "UIDs", {"retain_uids": True})
    with pytest.raises(InputError):
        services.stage_series(OP, keeps_uids, clinical.study, None, run_inline=True)
    viewer = django_user_model.objects.create_user("vera")
    services.add_member(OP, project, viewer, Role.VIEWER)
    with pytest.raises(PermissionDeniedError):
        services.stage_series(viewer, project, clinical.study, None, run_inline=True)
    job = services.stage_series(OP, project, clinical.study, [clinical.ct.series_uid], run_inline=True)
    copy_study = Study.objects.get(project=project)
    with pytest.raises(InputError):  # a copy is not staged again
        services.stage_series(OP, project, copy_study, None, run_inline=True)
    assert job.status == StagingStatus.FINISHED


@pytest.mark.django_db
def test_burned_in_screenshot_is_quarantined_and_study_stays_partly(clinical):
    """A screenshot with burned-in annotation in the study: quarantined (with its reason), not copied."""
    from dicomflow.intake.services import import_paths

    sc = synth.write_secondary_capture(clinical.out_dir.parent / "sc", PATIENT, study_uid=clinical.study_uid)
    import_paths([sc.paths[0]], workers=1)
    project = services.create_project("stg-burned", "Burned")
    job = services.stage_series(OP, project, clinical.study, None, run_inline=True)
    assert job.status == StagingStatus.FINISHED, job.error
    assert len(job.quarantined) == 1 and "Burned In Annotation" in job.quarantined[0]["reason"]
    assert job.files_out == job.files_in - 1
    assert not Series.objects.filter(project=project, modality="OT").exists()
    n_series = clinical.study.series.count()
    status = selectors.study_pseudonymization(clinical.study)[0]
    assert (status["status"], status["series_staged"], status["series_total"]) == ("partly", n_series - 1, n_series)

    allowing = services.create_project("stg-burned-ok", "Allowed", {"allow_burned_in": True})
    job = services.stage_series(OP, allowing, clinical.study, [sc.series_uid], run_inline=True)
    assert job.status == StagingStatus.FINISHED and job.quarantined == [] and job.files_out == 1


@pytest.mark.django_db
def test_leak_scan_finding_stages_nothing(tmp_path):
    """Fail closed: any leak-scan finding fails the job and nothing reaches the catalog or the map.

    The scan looks for every part of the patient's name anywhere in the output, code strings
    included; a family name "Original" meets Image Type ORIGINAL in every CT slice.
    """
    from dicomflow.intake.services import import_paths

    patient = synth.PatientSpec("PATLEAK01", "Original^Olga", "F", "19500101")
    info = synth.write_rt_study(tmp_path / "src", patient, n_slices=4, rows=16, cols=16, with_mr=False)
    import_paths([info.out_dir], workers=1)
    study = Study.objects.get(study_instance_uid=info.study_uid)
    project = services.create_project("stg-leak", "Leak")
    job = services.stage_series(OP, project, study, [info.ct.series_uid], run_inline=True)
    assert job.status == StagingStatus.FAILED and "leak scan" in job.error
    assert job.leak_findings > 0 and job.files_out == 0 and job.instances_new == 0
    assert "Olga" not in job.error and "Original^" not in str(job.failed)
    assert not Series.objects.filter(project=project).exists()
    assert services.key_store().load_reverse_records("stg-leak") == []
    assert not list(Path(settings.WORK_DIR).glob(f"staging-{job.pk}-*"))
