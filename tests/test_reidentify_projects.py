"""Re-identification of a project's data and of results derived from it: allowed users only, audited."""

from __future__ import annotations

from dicomflow.accounts.actors import cli_operator

from pathlib import Path

import pydicom
import pytest
from django.conf import settings
from pydicom.uid import generate_uid

from dicomflow.catalog.models import Series, Study
from dicomflow.accounts.models import AuditEntry
from dicomflow.deid.services import reidentify_paths, reidentify_series
from dicomflow.errors import PermissionDeniedError
from dicomflow.projects import services
from dicomflow.projects.models import Role, StagedSeries
from dicomflow.testing import synth

OP = cli_operator()  # the command-line operator: may do all but re-identify

PATIENT = synth.PatientSpec("PATREID2024", "Orsini^Olga", "F", "19550505")


@pytest.fixture
def staged(tmp_path, django_user_model):
    from dicomflow.intake.services import import_paths

    info = synth.write_rt_study(tmp_path / "src", PATIENT, n_slices=6, rows=16, cols=16, with_mr=False)
    import_paths([info.out_dir], workers=1)
    study = Study.objects.get(study_instance_uid=info.study_uid)
    project = services.create_project("reid-a", "A")
    other = services.create_project("reid-b", "B")
    job = services.stage_series(OP, project, study, [info.rtstruct.series_uid], run_inline=True)
    assert job.status == "finished", job.error
    rita = django_user_model.objects.create_user("rita")
    alice = django_user_model.objects.create_user("alice")
    bob = django_user_model.objects.create_user("bob")
    services.add_member(OP, project, rita, Role.REIDENTIFIER)
    services.add_member(OP, project, alice, Role.DATA_MANAGER)
    services.add_member(OP, other, bob, Role.REIDENTIFIER)
    copy = {s.modality: s for s in Series.objects.filter(project=project)}
    return {"info": info, "project": project, "rita": rita, "alice": alice, "bob": bob, "copy": copy}


@pytest.mark.django_db
def test_reidentify_copy_restores_originals_and_audits(staged, tmp_path):
    info, project = staged["info"], staged["project"]
    ct_copy = staged["copy"]["CT"]
    report = reidentify_series(staged["rita"], project, ct_copy, tmp_path / "out", purpose="check the pipeline")
    assert report.files_in == report.files_out == len(info.ct.paths) and report.failed == []
    restored = sorted(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in report.outputs)
    assert restored == sorted(info.ct.sop_instance_uids)
    ds = pydicom.dcmread(report.outputs[0], stop_before_pixels=True)
    assert (ds.PatientID, str(ds.PatientName), ds.PatientBirthDate) == (PATIENT.patient_id, PATIENT.name, PATIENT.birth_date)
    assert ds.StudyInstanceUID == info.study_uid and ds.SeriesInstanceUID == info.ct.series_uid
    assert ds.FrameOfReferenceUID == info.ct.frame_of_reference_uid
    original = pydicom.dcmread(info.ct.paths[0], stop_before_pixels=True)
    assert ds.get("StudyDate") in (original.get("StudyDate"), None)
    assert ds.PatientIdentityRemoved == "YES"  # issue 13: re-identification keeps the markers

    audit = AuditEntry.objects.get(action="reidentify")  # one entry in the one audit log
    assert report.audit_id == audit.pk
    assert (audit.action, audit.outcome, audit.user, audit.project) == ("reidentify", "ok", staged["rita"], project.key)
    assert audit.object == f"series #{ct_copy.pk} ({len(info.ct.paths)} instance(s))"
    assert f"{len(info.ct.paths)} of {len(info.ct.paths)} file(s)" in audit.detail and "check the pipeline" in audit.detail
    text = audit.object + audit.detail
    assert PATIENT.patient_id not in text and "Orsini" not in text and info.study_uid not in text


@pytest.mark.django_db
def test_a_result_made_from_the_copy_maps_back(staged, tmp_path):
    """An RTSTRUCT produced on the de-identified CT (new SOP UID) references the clinical CT afterwards."""
    info, project = staged["info"], staged["project"]
    rs_copy = staged["copy"]["RTSTRUCT"].instances.get()
    result = pydicom.dcmread(Path(settings.STORE_DIR) / rs_copy.stored_path)
    new_uid = generate_uid()
    result.SOPInstanceUID = result.file_meta.MediaStorageSOPInstanceUID = new_uid
    result.SeriesInstanceUID = generate_uid()
    result.StructureSetLabel = "AUTO"
    src = tmp_path / "result" / "rs.dcm"
    src.parent.mkdir()
    result.save_as(src, enforce_file_format=True)

    report = reidentify_paths(staged["rita"], project, [src.parent], tmp_path / "back")
    assert report.files_out == 1
    back = pydicom.dcmread(report.outputs[0])
    assert back.SOPInstanceUID == new_uid  # the result's own identity is new
    assert back.PatientID == PATIENT.patient_id and back.StudyInstanceUID == info.study_uid
    frame = back.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == info.ct.frame_of_reference_uid
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == info.ct.series_uid
    images = {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence}
    assert images and images <= set(info.ct.sop_instance_uids)


@pytest.mark.django_db
def test_reidentification_refused_for_wrong_personas_and_audited(staged, tmp_path, django_user_model):
    project, ct_copy = staged["project"], staged["copy"]["CT"]
    charlie = django_user_model.objects.create_user("charlie")
    for user in (staged["alice"], staged["bob"], charlie):
        with pytest.raises(PermissionDeniedError):
            reidentify_series(user, project, ct_copy, tmp_path / user.username)
        assert not (tmp_path / user.username).exists()
    refusals = AuditEntry.objects.filter(action="reidentify", outcome="denied")
    assert sorted(refusals.values_list("username", flat=True)) == ["alice", "bob", "charlie"]
    assert not AuditEntry.objects.filter(action="reidentify", outcome="ok").exists()
    # bob may re-identify in his own project, which has no map for these files: the file fails
    # with a clear reason and nothing is written (issue 13: never a silent "success")
    other = staged["bob"].project_memberships.get().project
    report = reidentify_paths(staged["bob"], other, [Path(settings.STORE_DIR) / ct_copy.instances.first().stored_path],
                              tmp_path / "bob-own")
    assert report.files_out == 0 and report.outputs == []
    assert len(report.failed) == 1 and "reverse map" in report.failed[0]["reason"]
    assert StagedSeries.objects.filter(project=other).count() == 0
