"""The icometrix flow through the REST API on a REAL Celery worker: an uploader sends a patient's CT
into project P for a subject's slot with template "ct-body-lungs"; the import stages the study into
the project, links the copy to the slot and starts a processing job on the uploaded series, whose
re-identified RTSTRUCT references the uploaded CT."""

from __future__ import annotations

import hashlib

import pydicom
import pytest
from rest_framework.test import APIClient

from dicomflow.accounts.actors import cli_operator
from dicomflow.accounts.models import AuditEntry
from dicomflow.accounts.services import create_api_key
from dicomflow.catalog.models import Patient, Study
from dicomflow.intake.models import UploadSession
from dicomflow.processing import services as processing
from dicomflow.processing.models import Job, JobStatus, Result
from dicomflow.projects import services
from dicomflow.projects.models import Role, Subject, UploadSlot
from dicomflow.testing import synth
from fixtures_celery import wait_for

OP = cli_operator()
PATIENT = synth.PatientSpec("PATICO-0001", "Upload^Una", "F", "19590909")


@pytest.mark.django_db(transaction=True)
def test_upload_with_template_into_a_project_slot(tmp_path, django_user_model, celery_worker_process):
    processing.ensure_builtin_templates()  # transactional tests flush the data migration's rows
    ct = synth.write_image_series(tmp_path / "ct", patient=PATIENT, n_slices=12, rows=64, cols=64, seed="ico-ct")
    project = services.create_project("ICO-P", "icometrix")
    uma = django_user_model.objects.create_user("uma")
    services.add_member(OP, project, uma, Role.UPLOADER)
    subject = services.enrol_subject(OP, project, "SUBJ-ICO", None, expected_sex="F", expected_birth_year=1959)
    slot = services.add_slot(OP, services.add_event(OP, subject, "Baseline"), "Planning CT")
    api = APIClient()
    api.credentials(HTTP_X_API_KEY=create_api_key(uma, uma)[1])

    blobs = [p.read_bytes() for p in ct.paths]
    files = [{"name": f"ct/{i}.dcm", "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for i, b in enumerate(blobs)]
    created = api.post("/api/uploads/", {"files": files, "project": "ICO-P", "subject": "SUBJ-ICO", "event": "Baseline",
                                         "slot": "Planning CT", "template": "ct-body-lungs"}, format="json")
    assert created.status_code == 201, created.content
    sid = created.json()["id"]
    for index, data in enumerate(blobs):
        response = api.put(f"/api/uploads/{sid}/files/{index}/", data=data, content_type="application/octet-stream",
                           HTTP_UPLOAD_OFFSET="0")
        assert response.status_code == 200, response.content
    assert api.post(f"/api/uploads/{sid}/finalize/").status_code == 202

    done = wait_for(lambda: UploadSession.objects.filter(pk=sid, status__in=["finished", "failed"]).first(),
                    timeout=180, worker=celery_worker_process, what="the upload's import and staging")
    assert done.status == "finished", done.error
    state = api.get(f"/api/uploads/{sid}/?files=0").json()
    assert state["project"] == "ICO-P" and state["studies"] == [ct.study_uid]
    [copy_uid] = state["project_studies"]
    [job_id] = state["jobs"]

    copy = Study.objects.get(study_instance_uid=copy_uid, project=project)
    assert copy.patient.patient_id == "SUBJ-ICO"  # the subject is tied to the uploaded patient
    assert Subject.objects.get(pk=subject.pk).patient == Patient.objects.get(patient_id=PATIENT.patient_id)
    assert UploadSlot.objects.get(pk=slot.pk).study == copy
    assert api.get(f"/api/studies/{copy_uid}/").status_code == 200  # the uploader sees the project's copy
    assert api.get(f"/api/studies/{ct.study_uid}/").status_code == 404  # never the clinical pool
    for action in ("stage", "slot_link"):
        [entry] = AuditEntry.objects.filter(action=action)
        assert (entry.username, entry.outcome, entry.project) == ("uma", "ok", "ICO-P")

    job = wait_for(lambda: Job.objects.filter(pk=job_id, status__in=[JobStatus.FINISHED, JobStatus.FAILED]).first(),
                   timeout=180, worker=celery_worker_process, what="the processing job")
    assert job.status == JobStatus.FINISHED, job.error
    assert job.series.series_instance_uid == ct.series_uid and job.project_key == "ICO-P" and job.created_by == uma
    [result] = Result.objects.filter(job=job)
    assert result.kind == "RTSTRUCT" and result.reidentified
    ds = pydicom.dcmread(result.path)
    assert ds.PatientID == PATIENT.patient_id and ds.StudyInstanceUID == ct.study_uid
    referenced = {str(s.SeriesInstanceUID) for f in ds.ReferencedFrameOfReferenceSequence
                  for st in f.RTReferencedStudySequence for s in st.RTReferencedSeriesSequence}
    assert referenced == {ct.series_uid}
