"""The research pages through Django's test client, per persona: alice (data manager of A, sees the
clinical pool), ursula (uploader of A), victor (viewer of A), bob (viewer of B), charlie (no project).
Pages call the project services, so what a role may not do answers 403/404 and writes nothing."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission

from dicomflow.accounts.actors import cli_operator
from dicomflow.accounts.models import AuditEntry
from dicomflow.catalog.models import Patient, Study
from dicomflow.intake.services import import_paths
from dicomflow.projects import services
from dicomflow.projects.models import Event, Role, StagingJob, Subject, UploadSlot, UploadSlotLink
from dicomflow.testing import synth

pytestmark = pytest.mark.django_db
OP = cli_operator()


@pytest.fixture
def world(tmp_path, django_user_model):
    infos = [synth.write_image_series(tmp_path / f"ct{i}", synth.PatientSpec(f"LKP{i:02d}", f"Look^Up{i}", "F", "19700101"),
                                      n_slices=2, rows=8, cols=8, seed=f"lookup-{i}") for i in range(12)]
    import_paths([tmp_path], workers=1, analyse=False)
    a, b = services.create_project("RP-A", "Trial A"), services.create_project("RP-B", "Trial B")
    users = {n: django_user_model.objects.create_user(n, password="a long research passphrase 7") for n in ("alice", "ursula", "victor", "bob", "charlie")}
    users["alice"].user_permissions.add(Permission.objects.get(codename="view_clinical_pool"))
    for name, project, role in (("alice", a, Role.DATA_MANAGER), ("ursula", a, Role.UPLOADER),
                                ("victor", a, Role.VIEWER), ("bob", b, Role.VIEWER)):
        services.add_member(OP, project, users[name], role)
    subject = services.enrol_subject(OP, a, "SUBJ-001", expected_sex="F", expected_birth_year=1970)
    event = services.add_event(OP, subject, "Baseline")
    slot = services.add_slot(OP, event, "Planning CT")
    return {"a": a, "b": b, "infos": infos, "subject": subject, "slot": slot, **users}


def as_user(client, user):
    client.force_login(user)
    return client


def post_json(client, url, data):
    return client.post(url, json.dumps(data), content_type="application/json")


@pytest.mark.parametrize("page", ["subjects", "upload", "lookup"])
def test_outsiders_find_nothing(client, world, page):
    for name in ("bob", "charlie"):
        as_user(client, world[name])
        assert client.get(f"/projects/RP-A/{page}/").status_code == 404, name
    assert client.get("/projects/NOPE/subjects/").status_code == 404
    client.logout()
    assert client.get(f"/projects/RP-A/{page}/").status_code == 302  # to the login page


def test_outsiders_get_404_from_every_json_endpoint(client, world):
    as_user(client, world["bob"])
    assert client.get("/projects/RP-A/lookup/suggest.json?q=LKP").status_code == 404
    assert client.get(f"/projects/RP-A/lookup/series.json?study={world['infos'][0].study_uid}").status_code == 404
    assert post_json(client, "/projects/RP-A/lookup/stage/", {"study": world["infos"][0].study_uid}).status_code == 404
    assert post_json(client, "/projects/RP-A/upload/override/",
                     {"slot": world["slot"].pk, "conflicts": ["sex"], "reason": "checked"}).status_code == 404
    assert StagingJob.objects.count() == 0 and AuditEntry.objects.filter(action="override", outcome="ok").count() == 0


def test_data_manager_enrols_and_builds_events_and_slots(client, world):
    as_user(client, world["alice"])
    url = "/projects/RP-A/subjects/"
    r = client.post(url, {"action": "enrol", "study_subject_id": "SUBJ-002", "sex": "M", "birth_year": "1955"})
    assert r.status_code == 302
    subject = Subject.objects.get(project=world["a"], study_subject_id="SUBJ-002")
    assert (subject.expected_sex, subject.expected_birth_year) == ("M", 1955)
    assert client.post(url, {"action": "event", "subject": subject.pk, "name": "Follow-up"}).status_code == 302
    event = Event.objects.get(subject=subject, name="Follow-up")
    assert client.post(url, {"action": "slot", "event": event.pk, "name": "RT plan"}).status_code == 302
    page = client.get(url).content.decode()
    assert "SUBJ-002" in page and "Follow-up" in page and "RT plan" in page and "Planning CT" in page
    # an enrolment the service refuses is a message on the page, nothing written
    r = client.post(url, {"action": "enrol", "study_subject_id": "LKP03", "sex": "F", "birth_year": "1970"}, follow=True)
    assert "clinical Patient ID" in r.content.decode()
    assert not Subject.objects.filter(study_subject_id="LKP03").exists()


def test_uploader_and_viewer_may_not_change_subjects(client, world):
    for name in ("ursula", "victor"):
        as_user(client, world[name])
        assert client.get("/projects/RP-A/subjects/").status_code == 200
        r = client.post("/projects/RP-A/subjects/", {"action": "enrol", "study_subject_id": "X-1", "sex": "F",
                                                     "birth_year": "1960"})
        assert r.status_code == 403, name
    assert not Subject.objects.filter(study_subject_id="X-1").exists()
    as_user(client, world["victor"])
    assert client.get("/projects/RP-A/upload/").status_code == 403  # a viewer does not upload
    as_user(client, world["ursula"])
    page = client.get(f"/projects/RP-A/upload/?slot={world['slot'].pk}").content.decode()
    assert 'id="df-upload-button"' in page and "SUBJ-001 / Baseline / Planning CT" in page
    assert client.get("/projects/RP-A/upload/?slot=999999").status_code == 404


def test_linking_into_a_full_slot_asks_before_replacing_and_keeps_history(client, world):
    a = world["a"]
    for info in world["infos"][:2]:
        services.stage_series(OP, a, Study.objects.get(study_instance_uid=info.study_uid), run_inline=True)
    first, second = Study.objects.filter(project=a).order_by("pk")[:2]
    as_user(client, world["alice"])
    url, slot = "/projects/RP-A/subjects/", world["slot"]
    assert client.post(url, {"action": "link", "slot": slot.pk, "study": first.pk}).status_code == 302
    r = client.post(url, {"action": "link", "slot": slot.pk, "study": second.pk})
    assert r.status_code == 200 and 'id="df-confirm-replace"' in r.content.decode()
    assert UploadSlot.objects.get(pk=slot.pk).study_id == first.pk  # not replaced yet
    assert client.post(url, {"action": "link", "slot": slot.pk, "study": second.pk, "confirm": "1"}).status_code == 302
    assert UploadSlot.objects.get(pk=slot.pk).study_id == second.pk
    links = UploadSlotLink.objects.filter(slot=slot).order_by("linked_at", "id")
    assert [link.study_id for link in links] == [first.pk, second.pk] and links[0].replaced_at is not None
    assert "2 links" in client.get(url).content.decode()


def test_override_is_recorded_and_audited_once(client, world):
    as_user(client, world["ursula"])
    url = "/projects/RP-A/upload/override/"
    assert post_json(client, url, {"slot": world["slot"].pk, "conflicts": ["sex"], "reason": ""}).status_code == 400
    r = post_json(client, url, {"slot": world["slot"].pk, "conflicts": ["sex"], "reason": "wrong sex in the TPS export"})
    assert r.status_code == 200 and r.json() == {"overridden": ["sex"]}
    entry = AuditEntry.objects.get(action="override", outcome="ok")
    assert entry.object == f"subject #{world['subject'].pk}" and "sex" in entry.detail and "LKP" not in entry.detail
    as_user(client, world["victor"])
    assert post_json(client, url, {"slot": world["slot"].pk, "conflicts": ["sex"], "reason": "x y z"}).status_code == 403
    assert AuditEntry.objects.filter(action="override", outcome="ok").count() == 1


def test_lookup_autocomplete_bulk_search_and_staging(client, world):
    as_user(client, world["alice"])
    suggestions = client.get("/projects/RP-A/lookup/suggest.json?q=LKP").json()["suggestions"]
    assert len(suggestions) == 10  # 12 match; at most 10 are offered
    assert [s["patient_id"] for s in client.get("/projects/RP-A/lookup/suggest.json?q=SUBJ").json()["suggestions"]] == []
    patient = Patient.objects.get(patient_id="LKP05", project__isnull=True)
    services.enrol_subject(OP, world["a"], "TRIAL-55", patient=patient, expected_sex="F", expected_birth_year=1970)
    found = client.get("/projects/RP-A/lookup/suggest.json?q=rial-5").json()["suggestions"]
    assert [(s["patient_id"], s["subject"]) for s in found] == [("LKP05", "TRIAL-55")]  # by study subject ID
    page = client.get("/projects/RP-A/lookup/?ids=KP03, KP07").content.decode()
    assert page.count('class="df-patient"') == 2 and "LKP03" in page and "LKP07" in page
    assert page.count('<span class="badge muted">no</span>') == 2  # nothing staged yet
    study_uid = world["infos"][3].study_uid
    series = client.get(f"/projects/RP-A/lookup/series.json?study={study_uid}").json()["series"]
    assert [s["modality"] for s in series] == ["CT"] and series[0]["instances"] == 2
    r = post_json(client, "/projects/RP-A/lookup/stage/", {"study": study_uid, "series": [series[0]["uid"]]})
    assert r.status_code == 202
    job = StagingJob.objects.get(pk=r.json()["job"])
    assert AuditEntry.objects.filter(action="stage", outcome="ok").count() == 1
    services.run_staging_job(job.pk)  # what the worker does
    state = client.get(r.json()["progress"]).json()
    assert state["verification"]["finished"] and state["verification"]["verified"] and state["pseudonymized"] is True
    assert "requested_series" not in state  # no clinical UIDs in the progress view
    page = client.get("/projects/RP-A/lookup/?ids=LKP03").content.decode()
    assert '<span class="badge ok">yes</span>' in page


def test_lookup_without_the_clinical_pool_shows_only_the_project_copy(client, world):
    services.stage_series(OP, world["a"], Study.objects.get(study_instance_uid=world["infos"][0].study_uid), run_inline=True)
    as_user(client, world["victor"])
    assert client.get("/projects/RP-A/lookup/suggest.json?q=LKP").json()["suggestions"] == []
    page = client.get("/projects/RP-A/lookup/?ids=LKP").content.decode()
    assert 'id="df-no-patients"' in page and "Edit" not in page
    as_user(client, world["ursula"])
    assert post_json(client, "/projects/RP-A/lookup/stage/", {"study": world["infos"][1].study_uid}).status_code == 404


def test_switching_project_keeps_the_page(client, world):
    services.add_member(OP, world["b"], world["alice"], Role.VIEWER)
    as_user(client, world["alice"])
    assert 'id="df-project-select"' in client.get("/projects/RP-A/lookup/").content.decode()
    r = client.post("/projects/switch/", {"project": "RP-B", "next": "/projects/RP-A/lookup/?ids=x"})
    assert r.status_code == 302 and r["Location"] == "/projects/RP-B/lookup/"
    home = client.get("/").content.decode()
    assert 'href="/projects/RP-B/subjects/"' in home and '<option value="RP-B" selected>' in home
    r = client.post("/projects/switch/", {"project": "RP-A", "next": "/patients/"})
    assert r["Location"] == "/patients/"
    as_user(client, world["charlie"])
    assert client.post("/projects/switch/", {"project": "RP-A", "next": "/"}).status_code == 404


def test_malformed_parameters_answer_4xx_never_500(client, world):
    as_user(client, world["alice"])
    for url in ("/projects/RP-A/upload/?slot=abc", "/projects/RP-A/lookup/series.json",
                "/projects/RP-A/lookup/series.json?study=1.2.3", "/projects/RP-A/staging/999.json"):
        assert client.get(url).status_code == 404, url
    assert client.get("/projects/RP-A/lookup/?ids=" + ",".join(["x"] * 60)).status_code == 200  # a message
    assert client.post("/projects/RP-A/lookup/stage/", "not json", content_type="application/json").status_code == 400
    assert post_json(client, "/projects/RP-A/lookup/stage/", {"study": world["infos"][0].study_uid,
                                                               "series": "all"}).status_code == 400
    assert post_json(client, "/projects/RP-A/upload/finish/", {"slot": world["slot"].pk}).status_code == 400
    assert post_json(client, "/projects/RP-A/upload/finish/", {"slot": world["slot"].pk,
                                                                "session": "0" * 32}).status_code == 404
    r = client.post("/projects/RP-A/subjects/", {"action": "slot", "event": "nope", "name": "x"})
    assert r.status_code == 404
    r = client.post("/projects/RP-A/subjects/", {"action": "enrol", "study_subject_id": "S-9", "sex": "F",
                                                 "birth_date": "not a date"}, follow=True)
    assert r.status_code == 200 and "YYYY-MM-DD" in r.content.decode()
    client.logout()
    assert client.get("/projects/RP-A/lookup/suggest.json?q=x").status_code == 401  # JSON, not the login page


def test_dicom_and_user_strings_are_escaped(client, world):
    services.enrol_subject(OP, world["a"], "<img src=x onerror=alert(1)>", expected_sex="F", expected_birth_year=1980)
    as_user(client, world["alice"])
    page = client.get("/projects/RP-A/subjects/").content.decode()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_reauthentication_is_for_the_right_password_only(client, world):
    r = post_json(client, "/projects/reauth/", {"username": "ursula", "password": "wrong"})
    assert r.status_code == 401 and not client.get("/projects/session.json").json()["authenticated"]
    assert AuditEntry.objects.filter(action="login_failed", outcome="denied").count() == 1
    r = post_json(client, "/projects/reauth/", {"username": "ursula", "password": "a long research passphrase 7"})
    assert r.status_code == 200 and r.json()["csrf"]
    assert client.get("/projects/session.json").json() == {"authenticated": True, "username": "ursula"}


def test_finish_links_the_uploaded_copy_and_asks_before_replacing(client, world):
    from dicomflow.intake import resumable
    from dicomflow.projects.models import ProjectUpload

    a, slot = world["a"], world["slot"]
    for info in world["infos"][:2]:
        services.stage_series(OP, a, Study.objects.get(study_instance_uid=info.study_uid), run_inline=True)
    earlier, uploaded = Study.objects.filter(project=a).order_by("pk")[:2]
    services.link_study(OP, slot, earlier)
    session = resumable.create_session([{"name": "x.dcm", "size": 1}], owner=world["ursula"])
    ProjectUpload.objects.create(session=session, project=a, subject=world["subject"],
                                 staged_studies=[uploaded.study_instance_uid])  # as the import leaves it
    url = "/projects/RP-A/upload/finish/"
    as_user(client, world["bob"])
    assert post_json(client, url, {"slot": slot.pk, "session": str(session.pk)}).status_code == 404
    as_user(client, world["alice"])  # not her upload
    assert post_json(client, url, {"slot": slot.pk, "session": str(session.pk)}).status_code == 404
    as_user(client, world["ursula"])
    r = post_json(client, url, {"slot": slot.pk, "session": str(session.pk)})
    assert r.status_code == 409 and "confirm" in r.json()["detail"]
    assert UploadSlot.objects.get(pk=slot.pk).study_id == earlier.pk
    r = post_json(client, url, {"slot": slot.pk, "session": str(session.pk), "confirm": True})
    assert r.status_code == 200 and r.json()["study"] == uploaded.study_instance_uid
    assert UploadSlot.objects.get(pk=slot.pk).study_id == uploaded.pk
    assert UploadSlotLink.objects.filter(slot=slot).count() == 2
    assert AuditEntry.objects.filter(action="slot_link", outcome="ok", user=world["ursula"]).count() == 1


@pytest.mark.django_db
def test_catalog_lists_are_scoped_to_the_active_project(client, django_user_model, tmp_path):
    """Issue 12 item 1: once a project is active, the catalog lists show its copy; the user can widen."""
    info = synth.write_image_series(tmp_path / "ct", synth.PatientSpec("SCOPE-1", "Scope^Sam", "M", "19700101"),
                                    n_slices=3, rows=8, cols=8)
    import_paths([tmp_path / "ct"], workers=1)
    clinical = Study.objects.get(study_instance_uid=info.study_uid)
    project = services.create_project("scope-a", "A")
    dana = django_user_model.objects.create_user("dana", password="pw-dana-123")
    dana.user_permissions.add(Permission.objects.get(codename="view_clinical_pool"))
    services.add_member(cli_operator(), project, dana, Role.DATA_MANAGER)
    job = services.stage_series(cli_operator(), project, clinical, run_inline=True)
    assert job.status == "finished", job.error
    copy = Study.objects.get(project=project)
    client.force_login(dana)
    scoped = client.get("/studies/").content.decode()
    assert copy.study_instance_uid in scoped and clinical.study_instance_uid not in scoped
    assert 'id="df-scope"' in scoped
    pool = client.get("/studies/?project=clinical").content.decode()
    assert clinical.study_instance_uid in pool and copy.study_instance_uid not in pool
    everything = client.get("/studies/?project=").content.decode()
    assert clinical.study_instance_uid in everything and copy.study_instance_uid in everything
    patients = client.get("/patients/").content.decode()
    assert "SCOPE-1" not in patients  # the project's copy carries the pseudonym, not the clinical ID
