"""Research-project writes through the REST API, per persona: alice (data manager of A, sees the clinical
pool), bob (viewer of B), charlie (no project), dora (re-identifier of A), victor (viewer of A), an admin.
Allowed calls work and leave exactly one audit entry where the action is audited; the others answer
401/403/404 and write nothing."""

from __future__ import annotations

import io
import zipfile

import pydicom
import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from dicomflow.accounts.actors import cli_operator
from dicomflow.accounts.models import AuditEntry
from dicomflow.accounts.services import create_api_key
from dicomflow.catalog.models import Patient, SanityOverride, Series, Study
from dicomflow.intake.models import UploadSession
from dicomflow.projects import services
from dicomflow.projects.models import Event, ProjectMembership, ProjectUpload, Role, StagingJob, Subject, UploadSlot
from dicomflow.testing import synth

pytestmark = pytest.mark.django_db
OP = cli_operator()
PATIENT = synth.PatientSpec("CLINPW-7", "Writer^Wilma", "F", "19720304")


@pytest.fixture
def world(tmp_path, django_user_model, admin_user):
    from dicomflow.intake.services import import_paths

    ct = synth.write_image_series(tmp_path / "ct", patient=PATIENT, n_slices=3, rows=16, cols=16, seed="pw-ct")
    ct2 = synth.write_image_series(tmp_path / "ct2", patient=PATIENT, n_slices=3, rows=16, cols=16, seed="pw-ct2")
    import_paths([tmp_path / "ct", tmp_path / "ct2"], workers=1, analyse=False)
    a = services.create_project("PW-A", "A")
    b = services.create_project("PW-B", "B")
    users = {name: django_user_model.objects.create_user(name) for name in ("alice", "bob", "charlie", "dora", "victor")}
    users["alice"].user_permissions.add(Permission.objects.get(codename="view_clinical_pool"))
    users["alice"] = django_user_model.objects.get(pk=users["alice"].pk)
    for user, project, role in (("alice", a, Role.DATA_MANAGER), ("bob", b, Role.VIEWER),
                                ("dora", a, Role.REIDENTIFIER), ("victor", a, Role.VIEWER)):
        services.add_member(OP, project, users[user], role)
    clinical = Study.objects.get(study_instance_uid=ct.study_uid)
    clinical2 = Study.objects.get(study_instance_uid=ct2.study_uid)
    for study in (clinical, clinical2):
        assert services.stage_series(OP, a, study, run_inline=True).status == "finished"
    copies = list(Study.objects.filter(project=a).order_by("pk"))
    return {"a": a, "b": b, "ct": ct, "clinical": clinical, "copies": copies, "admin": admin_user, **users}


def client(user=None) -> APIClient:
    api = APIClient()
    if user is not None:
        _, key = create_api_key(user, user)
        api.credentials(HTTP_X_API_KEY=key)
    return api


def audits(action: str, outcome: str = "ok") -> int:
    return AuditEntry.objects.filter(action=action, outcome=outcome).count()


def refused(world, method: str, url: str, body=None, *, expect: dict[str, int], model=None) -> None:
    """Each persona in ``expect`` gets that status and writes no ``model`` row; problem details."""
    before = model.objects.count() if model is not None else None
    for name, code in expect.items():
        api = client(world[name]) if name != "anonymous" else client()
        response = getattr(api, method)(url, body, format="json")
        assert response.status_code == code, (name, response.status_code, response.content[:300])
        assert response["Content-Type"].startswith("application/problem+json"), name
        if model is not None:
            assert model.objects.count() == before, name


NOBODY = {"anonymous": 401, "charlie": 404, "bob": 404}


def test_staging_endpoint(world):
    url = "/api/projects/PW-A/staging/"
    body = {"study_uid": world["ct"].study_uid}
    refused(world, "post", url, body, expect={**NOBODY, "victor": 403}, model=StagingJob)
    denied_before = audits("stage", "denied")
    refused(world, "post", url, body, expect={"dora": 403}, model=StagingJob)  # a manager, but no clinical pool
    assert audits("stage", "denied") == denied_before + 1
    ok_before = audits("stage")
    response = client(world["alice"]).post(url, body, format="json")
    assert response.status_code == 202, response.content
    job = response.json()
    assert job["status"] == "pending" and job["project"] == "PW-A" and job["requested_series"] == [world["ct"].series_uid]
    assert audits("stage") == ok_before + 1
    entry = AuditEntry.objects.filter(action="stage", outcome="ok").first()
    assert entry.username == "alice" and world["ct"].study_uid not in entry.object + entry.detail
    assert client(world["alice"]).post(url, {"study_uid": "1.2.3.999"}, format="json").status_code == 404
    listed = client(world["victor"]).get(url).json()["results"]
    assert [j["id"] for j in listed][0] == job["id"] and len(listed) == 3
    assert client(world["bob"]).get(url).status_code == 404
    assert client(world["victor"]).get(f"{url}{job['id']}/").json()["status"] == "pending"
    refused(world, "get", f"{url}{job['id']}/", expect=NOBODY)
    other = services.create_project("PW-OTHER", "other")
    assert client(world["admin"]).get(f"/api/projects/PW-OTHER/staging/{job['id']}/").status_code == 404
    assert other.staging_jobs.count() == 0


def test_subjects_events_slots_and_links(world):
    subjects = "/api/projects/PW-A/subjects/"
    body = {"study_subject_id": "SUBJ-1", "sex": "F", "birth_year": 1972}
    refused(world, "post", subjects, body, expect={**NOBODY, "victor": 403}, model=Subject)
    alice = client(world["alice"])
    for bad in ({"study_subject_id": PATIENT.patient_id, "sex": "F", "birth_year": 1972},  # a clinical Patient ID
                {"study_subject_id": "SUBJ-2", "birth_year": 1972},  # sex missing
                {"study_subject_id": "SUBJ-2", "sex": "F"},  # neither birth date nor year
                {"study_subject_id": "SUBJ-2", "sex": "F", "birth_date": "1972-03-04", "birth_year": 1971}):
        response = alice.post(subjects, bad, format="json")
        assert response.status_code == 400, bad
        assert PATIENT.patient_id not in response.content.decode()
    assert Subject.objects.count() == 0
    created = alice.post(subjects, body, format="json")
    assert created.status_code == 201, created.content
    subject = created.json()
    assert subject["study_subject_id"] == "SUBJ-1" and subject["sex"] == "F" and subject["birth_year"] == 1972
    assert [s["id"] for s in client(world["victor"]).get(subjects).json()["results"]] == [subject["id"]]
    assert client(world["victor"]).get(f"{subjects}{subject['id']}/").json()["study_subject_id"] == "SUBJ-1"
    assert client(world["bob"]).get(f"{subjects}{subject['id']}/").status_code == 404

    events = f"{subjects}{subject['id']}/events/"
    refused(world, "post", events, {"name": "Baseline"}, expect={**NOBODY, "victor": 403}, model=Event)
    event = client(world["dora"]).post(events, {"name": "Baseline", "date": "2024-01-02"}, format="json").json()
    assert event["name"] == "Baseline" and event["order"] == 0
    assert [e["id"] for e in client(world["victor"]).get(events).json()["results"]] == [event["id"]]

    slots = f"{events}{event['id']}/slots/"
    refused(world, "post", slots, {"name": "Planning CT"}, expect={**NOBODY, "victor": 403}, model=UploadSlot)
    slot = alice.post(slots, {"name": "Planning CT"}, format="json").json()
    assert slot["study_uid"] is None and slot["history"] == []

    link = f"/api/projects/PW-A/slots/{slot['id']}/link/"
    first, second = (c.study_instance_uid for c in world["copies"])
    refused(world, "post", link, {"study_uid": first}, expect={**NOBODY, "victor": 403})
    assert audits("slot_link", "denied") == 1  # victor's refusal; non-members never reached the service
    linked = alice.post(link, {"study_uid": first}, format="json")
    assert linked.status_code == 200 and linked.json()["study_uid"] == first
    conflict = alice.post(link, {"study_uid": second}, format="json")
    assert conflict.status_code == 409 and conflict["Content-Type"].startswith("application/problem+json")
    assert "confirm" in conflict.json()["detail"]
    assert client(world["victor"]).get(f"/api/projects/PW-A/slots/{slot['id']}/").json()["study_uid"] == first
    for read in (subjects, f"{subjects}{subject['id']}/", events, slots, f"/api/projects/PW-A/slots/{slot['id']}/"):
        refused(world, "get", read, expect=NOBODY)
    replaced = alice.post(link, {"study_uid": second, "confirm": True}, format="json").json()
    assert replaced["study_uid"] == second
    assert [h["study_uid"] for h in replaced["history"]] == [first, second]
    assert replaced["history"][0]["replaced_at"] and replaced["history"][1]["linked_by"] == "alice"
    assert audits("slot_link") == 2
    clinical = alice.post(link, {"study_uid": world["ct"].study_uid, "confirm": True}, format="json")
    assert clinical.status_code == 404  # a clinical study is not the project's


def test_sanity_override(world):
    from dicomflow.catalog.analysis import record_sanity_for_subject

    patient = Patient.objects.get(patient_id=PATIENT.patient_id, project__isnull=True)
    subject = services.enrol_subject(OP, world["a"], None, patient, expected_sex="M", expected_birth_year=1972)
    result = record_sanity_for_subject(subject)
    assert result.status == "CONFLICT"
    url = "/api/projects/PW-A/sanity-overrides/"
    body = {"result": result.pk, "reason": "sex recorded wrongly at the scanner"}
    refused(world, "post", url, body, expect={**NOBODY, "victor": 403}, model=SanityOverride)
    refused(world, "post", url, {"result": result.pk, "reason": ""}, expect={"alice": 400}, model=SanityOverride)
    response = client(world["alice"]).post(url, body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "MATCHES" and response.json()["result_status"] == "CONFLICT"
    assert audits("override") == 1 and audits("override", "denied") == 1  # victor's
    other = services.create_project("PW-C", "C")
    services.add_member(OP, other, world["alice"], Role.DATA_MANAGER)
    foreign = client(world["alice"]).post("/api/projects/PW-C/sanity-overrides/", body, format="json")
    assert foreign.status_code == 404 and SanityOverride.objects.count() == 1


def test_members(world):
    url = "/api/projects/PW-A/members/"
    body = {"user": "charlie", "role": "uploader"}
    refused(world, "post", url, body, expect={**NOBODY, "alice": 403, "dora": 403}, model=ProjectMembership)
    refused(world, "get", url, expect={"anonymous": 401, "bob": 404, "victor": 403})
    admin = client(world["admin"])
    before = audits("role_change")
    created = admin.post(url, body, format="json")
    assert created.status_code == 201 and created.json() == {**created.json(), "user": "charlie", "role": "uploader"}
    assert audits("role_change") == before + 1
    assert sorted(m["user"] for m in admin.get(url).json()["results"]) == ["alice", "charlie", "dora", "victor"]
    services.add_member(OP, world["a"], world["victor"], Role.PROJECT_ADMIN)
    victor = client(world["victor"])
    assert victor.post(url, {"user": "bob", "role": "viewer"}, format="json").status_code == 201
    assert victor.post(url, {"user": "nobody-here", "role": "viewer"}, format="json").status_code == 404
    assert victor.delete(f"{url}charlie/").status_code == 204
    assert not ProjectMembership.objects.filter(project=world["a"], user=world["charlie"]).exists()
    assert audits("role_change") == before + 4  # admin's add, OP's change, victor's add and removal
    refused(world, "delete", f"{url}bob/", expect={"alice": 403, "charlie": 404}, model=ProjectMembership)


def test_series_downloads_are_audited(world):
    copy = Series.objects.filter(project=world["a"]).first()
    response = client(world["victor"]).get(f"/api/series/{copy.series_instance_uid}/download/")
    assert response.status_code == 200
    b"".join(response.streaming_content)
    assert audits("series_download") == 1
    assert client(world["bob"]).get(f"/api/series/{copy.series_instance_uid}/download/").status_code == 404
    assert audits("series_download") == 1

    url = f"/api/projects/PW-A/series/{copy.series_instance_uid}/identified/"
    refused(world, "get", url, expect={"anonymous": 401, "charlie": 404, "alice": 403, "admin": 403})
    assert audits("series_download", "denied") == 2  # alice and the admin: re-identifying needs the role
    response = client(world["dora"]).get(url)
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    members = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    restored = {pydicom.dcmread(members.open(n), stop_before_pixels=True).SOPInstanceUID for n in members.namelist()}
    clinical_series = world["ct"] if copy.study.study_instance_uid == world["copies"][0].study_instance_uid else None
    assert restored and (clinical_series is None or restored == set(clinical_series.sop_instance_uids))
    entry = AuditEntry.objects.filter(action="series_download", outcome="ok").first()
    assert entry.username == "dora" and entry.object == f"series #{copy.pk}"
    assert audits("series_download") == 2 and audits("reidentify") == 0  # one entry for one download


def test_upload_into_a_project_is_checked_when_created(world):
    files = {"files": [{"name": "ct.dcm", "size": 10}]}
    refused(world, "post", "/api/uploads/", {**files, "project": "PW-A"}, expect=NOBODY, model=UploadSession)
    alice = client(world["alice"])
    for bad, code in (({"project": "PW-A", "template": "no-such-template"}, 400),
                      ({"project": "PW-A", "slot": "Planning CT"}, 400),
                      ({"project": "PW-A", "subject": "NOT-ENROLLED"}, 404),
                      ({"template": "ct-body-lungs"}, 400)):
        assert alice.post("/api/uploads/", {**files, **bad}, format="json").status_code == code, bad
    assert UploadSession.objects.count() == 0
    subject = services.enrol_subject(OP, world["a"], "SUBJ-U", None, expected_sex="F", expected_birth_year=1972)
    slot = services.add_slot(OP, services.add_event(OP, subject, "Baseline"), "Planning CT")
    services.link_study(OP, slot, world["copies"][0])
    target = {"project": "PW-A", "subject": "SUBJ-U", "event": "Baseline", "slot": "Planning CT"}
    assert alice.post("/api/uploads/", {**files, **target}, format="json").status_code == 409
    created = client(world["victor"]).post("/api/uploads/", {**files, **target, "confirm": True,
                                                            "template": "ct-body-lungs"}, format="json")
    assert created.status_code == 403  # a viewer may not upload
    created = alice.post("/api/uploads/", {**files, **target, "confirm": True, "template": "ct-body-lungs"},
                         format="json")
    assert created.status_code == 201, created.content
    state = created.json()
    assert state["project"] == "PW-A" and state["studies"] == [] and state["jobs"] == []
    link = ProjectUpload.objects.get(session_id=state["id"])
    assert (link.project, link.subject, link.slot, link.template) == (world["a"], subject, slot, "ct-body-lungs")


def test_enrolling_a_clinical_patient_needs_sight_of_it(world):
    patient = Patient.objects.get(patient_id=PATIENT.patient_id, project__isnull=True)
    body = {"patient": patient.pk, "sex": "F", "birth_date": "1972-03-04"}
    refused(world, "post", "/api/projects/PW-A/subjects/", body, expect={"dora": 404}, model=Subject)  # no pool
    created = client(world["alice"]).post("/api/projects/PW-A/subjects/", body, format="json")
    assert created.status_code == 201, created.content
    subject = Subject.objects.get()
    assert subject.patient == patient and created.json()["linked"] is True
    # staged before enrolment: the keyed pseudonym is kept, and it is what staged copies carry
    assert subject.study_subject_id == Patient.objects.filter(project=world["a"]).first().patient_id
    assert PATIENT.patient_id not in created.content.decode()


def test_an_upload_whose_series_do_not_fit_the_template_fails_clearly(world, settings, tmp_path):
    """The import runs inline here (no worker): nothing is staged when no series fits the template."""
    import hashlib

    from dicomflow.intake import resumable

    settings.DICOMFLOW_IMPORT_WORKERS = 1
    mr = synth.write_image_series(tmp_path / "mr", patient=synth.PatientSpec("PATMR-2", "Mr^Moe"), modality="MR",
                                  n_slices=2, rows=16, cols=16, seed="pw-mr")
    data = mr.paths[0].read_bytes()
    alice = client(world["alice"])
    created = alice.post("/api/uploads/", {"files": [{"name": "mr.dcm", "size": len(data),
                                                      "sha256": hashlib.sha256(data).hexdigest()}],
                                           "project": "PW-A", "template": "ct-body-lungs"}, format="json").json()
    alice.put(f"/api/uploads/{created['id']}/files/0/", data=data, content_type="application/octet-stream",
              HTTP_UPLOAD_OFFSET="0")
    assert alice.post(f"/api/uploads/{created['id']}/finalize/").status_code == 202
    jobs_before = StagingJob.objects.count()
    resumable.import_session(created["id"])
    state = alice.get(f"/api/uploads/{created['id']}/?files=0").json()
    assert state["status"] == "failed" and state["finished"]
    assert "imported, but putting them into project 'PW-A' failed: no uploaded series fits template" in state["error_message"]
    assert StagingJob.objects.count() == jobs_before and state["jobs"] == [] and state["project_studies"] == []
    assert state["studies"] == []  # a failed upload keeps no result
