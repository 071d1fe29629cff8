"""The icometrix flow end to end through the SDK on a live server with a REAL Celery worker:
dora (re-identifier of project A, not staff) uploads a CT folder into the project with a template
→ the import → the job the template started → wait for results → download → the result is an
RTSTRUCT on the uploaded CT, re-identified, and the download is audited once.

Needs the server side of issue 10: ``POST /api/uploads/`` taking ``project``/``template`` (processing
starts after the import), the upload listing its ``jobs``, and ``GET /api/jobs/<id>/results/``.
Skipped (with that reason) until those exist.
"""

from __future__ import annotations

import pydicom
import pytest

from dicomflow.accounts.models import AuditAction, AuditEntry
from dicomflow.accounts.services import create_api_key
from dicomflow.core.rules import CT_BODY_LUNGS
from dicomflow.projects.models import ProjectMembership, Role
from dicomflow.projects.services import create_project
from dicomflow.sdk import Client
from dicomflow.testing.synth import PatientSpec, write_image_series


def _server_has_the_icometrix_endpoints() -> bool:
    from django.urls import Resolver404, resolve

    from dicomflow.api.serializers import UploadCreateSerializer

    try:
        resolve("/api/jobs/1/results/")
    except Resolver404:
        return False
    return {"project", "template"} <= set(UploadCreateSerializer().fields)


pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.skipif(not _server_has_the_icometrix_endpoints(),
                       reason="needs POST /api/uploads/ with project/template and GET /api/jobs/<id>/results/"),
]

PATIENT = PatientSpec("ICO-PAT-0042", "Icometrix^Ida", "F", "19660606")


@pytest.fixture
def dora(django_user_model):
    from dicomflow.processing.services import ensure_builtin_templates

    ensure_builtin_templates()  # transactional tests flush the data migration's rows
    user = django_user_model.objects.create_user("dora", password="dora's long password")
    ProjectMembership.objects.create(project=create_project("ico-a", "A"), user=user, role=Role.REIDENTIFIER)
    return user


def test_upload_into_a_project_with_a_template_to_downloaded_rtstruct(live_server, celery_worker_process, dora,
                                                                      tmp_path):
    ct = write_image_series(tmp_path / "export" / "CT", PATIENT, n_slices=12, rows=64, cols=64, seed="ico-ct")
    key = create_api_key(dora, dora, name="icometrix")[1]
    stages: set[str] = set()
    with Client(live_server.url, api_key=key) as client:
        result = client.upload(tmp_path / "export", project="ico-a", template=CT_BODY_LUNGS,
                               progress=lambda stage, done, total: stages.add(stage), timeout=180)
        assert stages >= {"upload", "import"}
        assert (result.files_seen, result.instances_new) == (12, 12) and client.upload_problems(result.upload_id).ok

        [job_id] = client.upload_jobs(result.upload_id, timeout=60)
        job = client.wait_for_results(job_id, timeout=300)
        assert job.status == "finished" and job.template == CT_BODY_LUNGS and job.project_key == "ico-a"

        [path] = client.download_results(job.id, tmp_path / "results")

    assert path.is_relative_to(tmp_path / "results")
    ds = pydicom.dcmread(path)
    assert ds.Modality == "RTSTRUCT" and ds.StudyInstanceUID == ct.study_uid
    assert (ds.PatientID, str(ds.PatientName)) == (PATIENT.patient_id, PATIENT.name)  # re-identified
    referenced = {str(s.SeriesInstanceUID) for frame in ds.ReferencedFrameOfReferenceSequence
                  for study in frame.RTReferencedStudySequence for s in study.RTReferencedSeriesSequence}
    assert referenced == {ct.series_uid}
    assert {r.ROIName for r in ds.StructureSetROISequence} >= {"Body"}
    downloads = AuditEntry.objects.filter(action=AuditAction.RESULT_DOWNLOAD)
    assert [(e.username, e.project, e.outcome) for e in downloads] == [("dora", "ico-a", "ok")]
