"""Processing jobs through the REST API (reads; visible to the members of the job's project) and the
series' processing status: real DB, jobs made by the processing service itself."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from dicomflow.catalog.models import Series
from dicomflow.intake.services import import_paths
from dicomflow.processing.models import STAGE_ORDER
from dicomflow.processing.services import create_job, evaluate_series
from dicomflow.testing.synth import PatientSpec, write_image_series

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(tmp_path, admin_user):
    info = write_image_series(tmp_path / "ct", PatientSpec("JOB-1", "Job^Jo"), n_slices=3, rows=16, cols=16, seed="jobs")
    import_paths([tmp_path / "ct"], workers=1, analyse=False)
    series = Series.objects.get(series_instance_uid=info.series_uid)
    return create_job(project_key="API-PROJ", series_id=series.pk, created_by=admin_user), info


def as_user(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_jobs_list_detail_and_log(job, admin_user):
    job, info = job
    api = as_user(admin_user)
    listed = api.get("/api/jobs/").json()["results"]
    assert [(j["id"], j["status"], j["series_instance_uid"], j["project_key"]) for j in listed] == [
        (job.pk, "pending", info.series_uid, "API-PROJ")]
    assert api.get("/api/jobs/", {"status": "finished"}).json()["results"] == []
    detail = api.get(f"/api/jobs/{job.pk}/").json()
    assert [s["name"] for s in detail["stages"]] == STAGE_ORDER
    stages = {s["name"]: s["status"] for s in detail["stages"]}
    assert stages["uploading"] == "skipped" and stages["importing"] == "skipped" and stages["checking"] == "pending"
    log = api.get(f"/api/jobs/{job.pk}/log/").json()["results"]
    assert [e["message"] for e in log] == ["job created"]


def test_jobs_are_seen_by_the_members_of_their_project(job, django_user_model):
    from dicomflow.projects.models import Project, ProjectMembership, Role

    job, _ = job
    dora = django_user_model.objects.create_user("dora", password="pw-dora-123")
    dora.user_permissions.add(Permission.objects.get(codename="view_clinical_pool"))
    dora = django_user_model.objects.get(pk=dora.pk)
    assert as_user(dora).get("/api/jobs/").json()["results"] == []  # the clinical pool alone shows no jobs
    assert as_user(dora).get(f"/api/jobs/{job.pk}/").status_code == 404
    project = Project.objects.create(key="API-PROJ", name="API project")
    ProjectMembership.objects.create(project=project, user=dora, role=Role.VIEWER)
    assert [j["id"] for j in as_user(dora).get("/api/jobs/").json()["results"]] == [job.pk]
    assert [j["id"] for j in as_user(dora).get("/api/jobs/", {"project": "OTHER"}).json()["results"]] == []
    assert APIClient().get("/api/jobs/").status_code == 401


def test_series_page_and_detail_show_processing(job, admin_user, admin_client):
    job, info = job
    detail = as_user(admin_user).get(f"/api/series/{info.series_uid}/").json()
    assert detail["processing"] is None  # the rules have not looked at it yet
    [state] = evaluate_series([job.series_id])
    detail = as_user(admin_user).get(f"/api/series/{info.series_uid}/").json()
    assert detail["processing"]["status"] == state.status
    assert detail["processing"]["template"] == (state.template.name if state.template else None)
    html = admin_client.get(f"/series/{info.series_uid}/").content.decode()
    assert 'id="df-processing"' in html and f"#{job.pk}" in html and "API-PROJ" in html
    assert f">{state.status}<" in html
