"""Per-project access through the API and the web UI (personas: alice in project A, bob in B,
charlie in none, the admin sees all). Project copies are real imports filed under the project."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from dicomflow.intake.services import import_paths
from dicomflow.projects.models import Project, ProjectMembership
from dicomflow.testing.synth import PatientSpec, write_image_series

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(tmp_path, django_user_model):
    a = Project.objects.create(key="PROJ-A", name="Project A")
    Project.objects.create(key="PROJ-B", name="Project B")
    clinical = write_image_series(tmp_path / "clinical", PatientSpec("CLIN-1", "Clin^Carl"), n_slices=2, rows=16,
                                  cols=16, seed="clinical")
    copy = write_image_series(tmp_path / "copy", PatientSpec("PSEUDO-A1", "PSEUDO-A1"), n_slices=2, rows=16,
                              cols=16, seed="copy")
    import_paths([tmp_path / "clinical"], workers=1, analyse=False)
    import_paths([tmp_path / "copy"], workers=1, analyse=False, project=a)
    users = {}
    for name, project in (("alice", "PROJ-A"), ("bob", "PROJ-B"), ("charlie", None)):
        users[name] = django_user_model.objects.create_user(name, password=f"pw-{name}-123")
        if project:
            ProjectMembership.objects.create(project=Project.objects.get(key=project), user=users[name])
    return {"users": users, "clinical": clinical, "copy": copy}


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return sorted(p["patient_id"] for p in response.json()["results"])


def test_each_persona_sees_only_its_projects(world, admin_user):
    alice, bob, charlie = (client_for(world["users"][n]) for n in ("alice", "bob", "charlie"))
    assert ids(alice.get("/api/patients/")) == ["PSEUDO-A1"]
    assert ids(bob.get("/api/patients/")) == []
    assert ids(charlie.get("/api/patients/")) == []
    admin = client_for(admin_user)
    assert ids(admin.get("/api/patients/")) == ["CLIN-1", "PSEUDO-A1"]
    assert ids(admin.get("/api/patients/", {"project": "PROJ-A"})) == ["PSEUDO-A1"]
    assert ids(admin.get("/api/patients/", {"project": "clinical"})) == ["CLIN-1"]
    assert alice.get(f"/api/series/{world['copy'].series_uid}/").json()["project"] == "PROJ-A"
    assert alice.get(f"/api/series/{world['clinical'].series_uid}/").status_code == 404
    assert bob.get(f"/api/series/{world['copy'].series_uid}/download/").status_code == 404

    assert [p["key"] for p in alice.get("/api/projects/").json()["results"]] == ["PROJ-A"]
    assert [p["key"] for p in admin.get("/api/projects/").json()["results"]] == ["PROJ-A", "PROJ-B"]
    assert charlie.get("/api/projects/").json()["results"] == []
    assert alice.get("/api/projects/PROJ-B/").status_code == 404


def test_web_pages_follow_the_same_rule(world, client):
    client.force_login(world["users"]["alice"])
    html = client.get("/patients/").content.decode()
    assert "PSEUDO-A1" in html and "CLIN-1" not in html and "PROJ-A" in html
    assert client.get(f"/series/{world['copy'].series_uid}/").status_code == 200
    assert client.get(f"/series/{world['clinical'].series_uid}/").status_code == 404
