"""The processing desk's pages through Django's test client, for each persona.

alice: data manager of project A who may see the clinical pool; bob: viewer of project B;
charlie: no project; an admin (superuser). Real database, real catalog (generated CTs), jobs made
and run (inline) by the processing services the pages call.
"""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from PIL import Image

from dicomflow.accounts.actors import cli_operator
from dicomflow.accounts.models import AuditEntry
from dicomflow.catalog.models import Series
from dicomflow.intake.models import WatchedFolder, ZipUpload
from dicomflow.intake.services import import_paths
from dicomflow.processing import services
from dicomflow.processing.models import Job, Ruleset, Template
from dicomflow.projects import services as projects
from dicomflow.projects.models import Role
from dicomflow.testing.synth import PatientSpec, write_image_series

pytestmark = pytest.mark.django_db

PAGES = ["/processing/series/", "/jobs/", "/processing/logs/", "/processing/templates/", "/processing/rulesets/",
         "/datastore/", "/uploads/zip/", "/processing/templates/new/", "/processing/rulesets/new/"]


@pytest.fixture
def world(tmp_path, django_user_model):
    services.ensure_builtin_templates()
    cts = {}
    for pid, name in (("DESK-1", "Desk^Dora"), ("DESK-2", "Desk^Dan"), ("OTHER-3", "Other^Olga")):
        info = write_image_series(tmp_path / pid, PatientSpec(pid, name, "F", "19700101"), n_slices=12, rows=32,
                                  cols=32, seed=pid)
        cts[pid] = info
    import_paths([tmp_path / pid for pid in cts], workers=1, analyse=False)
    services.evaluate_series(Series.objects.values_list("pk", flat=True))
    a, b = projects.create_project("desk-a", "Project A"), projects.create_project("desk-b", "Project B")
    users = {n: django_user_model.objects.create_user(n, password=f"pw-{n}-123") for n in ("alice", "bob", "charlie")}
    projects.add_member(cli_operator(), a, users["alice"], Role.DATA_MANAGER)
    projects.add_member(cli_operator(), b, users["bob"], Role.VIEWER)
    users["alice"].user_permissions.add(Permission.objects.get(codename="view_clinical_pool"))
    users["alice"] = django_user_model.objects.get(pk=users["alice"].pk)
    users["admin"] = django_user_model.objects.create_superuser("admin", password="pw-admin-123")
    return {"cts": cts, "a": a, "b": b, **users}


def client_for(user) -> Client:
    client = Client(raise_request_exception=True)
    client.force_login(user)
    return client


def test_every_page_answers_for_every_persona_and_the_nav_shows_only_what_is_allowed(world):
    expected = {
        "alice": dict.fromkeys(PAGES, 200),
        "bob": {**dict.fromkeys(PAGES, 403), "/processing/series/": 200, "/jobs/": 200, "/processing/logs/": 200},
        "charlie": dict.fromkeys(PAGES, 403),
        "admin": dict.fromkeys(PAGES, 200),
    }
    for persona, pages in expected.items():
        client = client_for(world[persona])
        got = {url: client.get(url).status_code for url in PAGES}
        assert got == pages, persona
    links = ['href="/processing/series/"', 'href="/jobs/"', 'href="/processing/logs/"', 'href="/processing/templates/"',
             'href="/datastore/"', 'href="/uploads/zip/"']
    home = client_for(world["alice"]).get("/").content.decode()
    assert all(link in home for link in links)
    home = client_for(world["bob"]).get("/").content.decode()
    assert [link in home for link in links] == [True, True, True, False, False, False]
    home = client_for(world["charlie"]).get("/").content.decode()
    assert not any(link in home for link in links)
    assert Client().get("/processing/series/").status_code == 302  # not logged in: to the login page


def test_series_page_filters_escapes_and_bob_sees_none_of_the_clinical_series(world):
    alice = client_for(world["alice"])
    page = alice.get("/processing/series/", {"q": "DESK-1"}).content.decode()
    assert "DESK-1" in page and "DESK-2" not in page and "OTHER-3" not in page
    assert "Desk^Dora" in page and "Matched" in page and 'value="ct-body-lungs" selected' in page
    assert "Send for processing" in page and 'aria-label="Create a template"' not in page  # alice may not add one
    assert 'aria-label="Create a template"' in client_for(world["admin"]).get("/processing/series/").content.decode()
    by_name = alice.get("/processing/series/", {"q": "Desk Dan"}).content.decode()
    assert "DESK-2" in by_name and "DESK-1" not in by_name
    assert "DESK-1" not in alice.get("/processing/series/", {"status": "processed"}).content.decode()
    bob = client_for(world["bob"]).get("/processing/series/").content.decode()
    assert "DESK-1" not in bob and "Desk^Dora" not in bob and "Send for processing" not in bob
    # a DICOM string with markup is shown as text
    Series.objects.filter(series_instance_uid=world["cts"]["DESK-1"].series_uid).update(
        description="<script>alert(1)</script>")
    page = alice.get("/processing/series/").content.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_bulk_send_makes_one_job_per_series_and_says_so(world, monkeypatch):
    sent = []
    monkeypatch.setattr("dicomflow.processing.tasks.dispatch", lambda job_id, stage: sent.append(job_id))
    alice = client_for(world["alice"])
    uids = [world["cts"][p].series_uid for p in ("DESK-1", "DESK-2")]
    response = alice.post("/processing/series/send/", {
        "series": uids, "project": "desk-a", **{f"template-{u}": "ct-body-lungs" for u in uids},
        "next": "/processing/series/"}, follow=True)
    page = response.content.decode()
    jobs = list(Job.objects.order_by("pk"))
    assert len(jobs) == 2 and {j.series.series_instance_uid for j in jobs} == set(uids)
    assert all(j.project_key == "desk-a" and j.template.name == "ct-body-lungs" for j in jobs)
    assert f"Sent 2 series for processing in project desk-a" in page and f"#{jobs[0].pk}" in page
    status = alice.get("/processing/series/status.json", {"uid": uids}).json()["series"]
    assert {s["status"] for s in status.values()} == {"sent"} and {s["job"] for s in status.values()} == {j.pk for j in jobs}
    # bob may not send (no Manage), charlie sees nothing: refused, nothing written
    client_for(world["bob"]).post("/processing/series/send/", {"series": uids, "project": "desk-b"})
    client_for(world["charlie"]).post("/processing/series/send/", {"series": uids, "project": "desk-a"})
    assert Job.objects.count() == 2


def test_why_shows_the_clause_and_value(world):
    uid = world["cts"]["DESK-1"].series_uid
    page = client_for(world["alice"]).get(f"/processing/series/{uid}/why/").content.decode()
    assert "ct-images" in page and "Modality value &#x27;CT&#x27; = &#x27;CT&#x27;" in page
    assert client_for(world["bob"]).get(f"/processing/series/{uid}/why/").status_code == 404


def qc_template(admin) -> Template:
    definition = {**Template.objects.get(name="ct-body-lungs").definition}
    definition["parameters"] = {**definition["parameters"], "quality_control": True}
    return services.create_template(admin, name="ct-qc", definition=definition)


def test_job_page_qc_picture_approve_download_and_log(world):
    qc_template(world["admin"])
    uid = world["cts"]["DESK-1"].series_uid
    [job] = services.send_for_processing(world["alice"], project_key="desk-a", series_uids=[uid], template_name="ct-qc",
                                         inline=True)
    alice = client_for(world["alice"])
    page = alice.get(f"/jobs/{job.pk}/").content.decode()
    assert "Quality control" in page and "Approve" in page and "Reject" in page and "Lung_L" in page
    doc = alice.get(f"/jobs/{job.pk}/status.json").json()
    assert doc["waiting_qc"] and [s["label"] for s in doc["stages"]][:3] == ["Uploading", "Importing", "Checking"]
    assert [e["message"] for e in doc["log"]][:2] == ["job created", "sent for processing by alice"]
    last = doc["log"][-1]["id"]
    assert alice.get(f"/jobs/{job.pk}/status.json", {"after": last}).json()["log"] == []  # only what is new
    png = alice.get(f"/jobs/{job.pk}/qc/6.png")
    assert png["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(b"".join(png.streaming_content) if png.streaming else png.content))
    assert image.size[0] > 0 and len(set(image.convert("L").getdata())) > 2  # a real picture, not blank
    assert client_for(world["bob"]).get(f"/jobs/{job.pk}/").status_code == 404
    assert client_for(world["bob"]).get(f"/jobs/{job.pk}/qc/6.png").status_code == 404
    # reject needs a reason: without one nothing changes
    page = alice.post(f"/jobs/{job.pk}/reject/", {"reason": ""}, follow=True).content.decode()
    assert "reason" in page and Job.objects.get(pk=job.pk).status != "failed"
    from dicomflow.processing import tasks

    tasks_dispatch = tasks.dispatch
    try:  # the approval's export runs here instead of on a worker
        tasks.dispatch = lambda job_id, stage: services.run_job_inline(job_id)
        alice.post(f"/jobs/{job.pk}/approve/")
    finally:
        tasks.dispatch = tasks_dispatch
    job.refresh_from_db()
    assert job.status == "finished"
    page = alice.get(f"/jobs/{job.pk}/").content.decode()
    assert "Download results" in page and "approved by alice" in page
    [result_series] = Series.objects.filter(modality="RTSTRUCT")  # the result, catalogued and linked from the job
    assert f'href="/series/{result_series.series_instance_uid}/"' in page
    before = AuditEntry.objects.count()
    response = alice.get(f"/jobs/{job.pk}/results.zip")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist()
    assert names and all(n.endswith(".dcm") for n in names)
    assert AuditEntry.objects.count() == before + 1
    logs = alice.get("/processing/logs/", {"q": "DESK-1"}).content.decode()
    assert "approved by alice" in logs and "Desk^Dora" in logs
    assert "approved by alice" not in alice.get("/processing/logs/", {"q": "OTHER-3"}).content.decode()
    assert "job finished" in alice.get("/processing/logs/", {"q": f"#{job.pk}", "level": "INFO"}).content.decode()
    assert "job finished" not in client_for(world["bob"]).get("/processing/logs/").content.decode()
    jobs = alice.get("/jobs/", {"status": "finished"}).content.decode()
    assert f"#{job.pk}" in jobs and f"#{job.pk}" in alice.get("/jobs/", {"q": "DESK-1"}).content.decode()


def test_templates_form_saves_rois_destinations_and_blocking_findings(world, tmp_path, processors_registry):
    processors_registry(export_roots=[tmp_path])  # folder destinations live under the operator's export roots
    alice, admin = client_for(world["alice"]), client_for(world["admin"])
    form = {"name": "lungs-to-folder", "description": "d", "processor": "builtin.ct_body_lungs", "modalities": "ct",
            "min_images": "10", "roi-key": ["body", ""], "roi-name": ["Body", ""], "roi-color": ["#00ff00", "#ff0000"],
            "roi-type": ["EXTERNAL", "ORGAN"], "roi-label": ["1", ""], "dest-type": ["folder"],
            "dest-target": [str(tmp_path / "out")], "param-name": ["body_threshold_hu"], "param-value": ["-450"],
            "quality_control": "on", "blocking_findings": ["COMPLETENESS_MISSING_SLICES"]}
    assert alice.post("/processing/templates/new/", form).status_code == 403 or not Template.objects.filter(
        name="lungs-to-folder").exists()
    assert not Template.objects.filter(name="lungs-to-folder").exists()  # alice may read, not write
    admin.post("/processing/templates/new/", form)
    saved = Template.objects.get(name="lungs-to-folder").definition
    assert saved["rois"][0]["name"] == "Body" and saved["rois"][0]["color"] == [0, 255, 0]
    assert saved["destinations"] == [{"type": "folder", "path": str(tmp_path / "out")}]
    assert saved["requires"]["modalities"] == ["CT"] and saved["requires"]["min_images"] == 10
    assert saved["parameters"]["quality_control"] is True and saved["parameters"]["body_threshold_hu"] == -450
    assert saved["blocking_findings"] == ["COMPLETENESS_MISSING_SLICES"]
    page = admin.get("/processing/templates/lungs-to-folder/").content.decode()
    assert 'value="#00ff00"' in page and "COMPLETENESS_MISSING_SLICES\" checked" in page
    # a folder outside the export roots is refused with the reason, nothing saved
    outside = {**form, "name": "lungs-to-etc", "dest-target": ["/etc/dicomflow-out"]}
    page = admin.post("/processing/templates/new/", outside, follow=True).content.decode()
    assert "outside the allowed export roots" in page
    assert not Template.objects.filter(name="lungs-to-etc").exists()


def test_rule_builder_dry_run_explains_before_saving(world):
    admin = client_for(world["admin"])
    uid = world["cts"]["DESK-1"].series_uid
    match = {"and": [{"attribute": "Modality", "operator": "equals", "value": "MR"}]}
    form = {"name": "mr-only", "template": "ct-body-lungs", "enabled": "on", "order": "5", "match": json.dumps(match),
            "series_uid": uid, "action": "dry-run"}
    page = admin.post("/processing/rulesets/new/", form).content.decode()
    assert "no value of Modality (&#x27;CT&#x27;) = &#x27;MR&#x27;" in page and not Ruleset.objects.filter(name="mr-only").exists()
    form["match"] = json.dumps({"or": [{"attribute": "Modality", "operator": "equals", "value": "CT"}]})
    page = admin.post("/processing/rulesets/new/", form).content.decode()
    assert "Modality value &#x27;CT&#x27; = &#x27;CT&#x27;" in page
    admin.post("/processing/rulesets/new/", {**form, "action": "save"})
    assert Ruleset.objects.get(name="mr-only").definition["match"] == {
        "or": [{"attribute": "Modality", "operator": "equals", "value": "CT"}]}
    alice = client_for(world["alice"])
    assert alice.post("/processing/rulesets/mr-only/", {**form, "action": "save", "order": "9"}).status_code == 403
    assert Ruleset.objects.get(name="mr-only").order == 5


def test_zip_upload_list_process_now_progress_and_result(world, tmp_path, monkeypatch, settings):
    settings.DICOMFLOW_IMPORT_WORKERS = 1  # no forked readers inside the test's transaction
    queued = []
    monkeypatch.setattr("dicomflow.intake.tasks.process_zip_upload.apply_async",
                        lambda args, task_id: queued.append(args[0]))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in world["cts"]["OTHER-3"].paths[:3]:
            zf.write(p, p.name)
    buf.seek(0)
    buf.name = "ward.zip"
    alice = client_for(world["alice"])
    alice.post("/uploads/zip/", {"files": [buf]})
    upload = ZipUpload.objects.get()
    assert upload.uploaded_by == world["alice"] and upload.status == "pending"
    assert "ward.zip" in alice.get("/uploads/zip/").content.decode()
    response = alice.post("/uploads/zip/process/", {"upload": [upload.pk]})
    assert response.status_code == 302 and response["Location"].endswith(f"?id={upload.pk}")
    from django.db import connection

    for fn in connection.run_on_commit:
        fn[1]()
    assert queued == [upload.pk]
    doc = alice.get(f"/uploads/zip/progress.json?id={upload.pk}").json()["uploads"]
    assert [u["id"] for u in doc] == [upload.pk]
    from dicomflow.intake.uploads import process_upload

    process_upload(upload.pk)
    page = alice.get(f"/uploads/zip/{upload.pk}/").content.decode()
    assert "new instances" in page
    # others' uploads are not found; charlie may not upload
    assert client_for(world["bob"]).get(f"/uploads/zip/{upload.pk}/").status_code == 403
    assert client_for(world["charlie"]).post("/uploads/zip/process/", {"upload": [upload.pk]}).status_code == 403


def test_datastore_admin_adds_and_pauses_a_folder_alice_reads(world, tmp_path):
    source = tmp_path / "incoming"
    source.mkdir()
    admin, alice = client_for(world["admin"]), client_for(world["alice"])
    admin.post("/datastore/add/", {"name": "tps export", "path": str(source), "stable_minutes": "0"})
    folder = WatchedFolder.objects.get(name="tps-export")
    assert folder.enabled and folder.stable_minutes == 0
    admin.post(f"/datastore/{folder.pk}/toggle/", {"enabled": "0"})
    assert not WatchedFolder.objects.get(pk=folder.pk).enabled
    page = alice.get("/datastore/").content.decode()
    assert str(source) in page and "paused" in page and "Add watched folder" not in page
    assert alice.post("/datastore/add/", {"name": "x", "path": str(source)}).status_code == 403
    page = admin.post("/datastore/add/", {"name": "rel", "path": "relative/path"}, follow=True).content.decode()
    assert "absolute path" in page and not WatchedFolder.objects.filter(name="rel").exists()


def test_malformed_input_is_a_message_or_a_404_never_a_server_error(world):
    admin = Client()  # no exception re-raised: the answer's status is what is checked
    admin.force_login(world["admin"])
    uid = world["cts"]["DESK-1"].series_uid
    for match in ("5", "[]", '{"and": 5}', '{"attribute": "Modality"}', '{"or": [{"attribute": "Modality", '
                  '"operator": "gt", "value": "CT"}]}', "not json", '{"and": [{"attribute": "(0010,", '
                  '"operator": "equals", "value": "x"}]}'):
        for action in ("dry-run", "save"):
            response = admin.post("/processing/rulesets/new/", {"name": "bad", "match": match, "series_uid": uid,
                                                                 "action": action})
            assert response.status_code == 200, (match, action)
    assert not Ruleset.objects.filter(name="bad").exists()
    for form in ({"name": "bad", "roi-name": ["X"], "roi-color": ["#zzzzzz"]}, {"name": "bad", "min_images": "ten"},
                 {"name": "", "processor": "builtin.ct_body_lungs"}):
        assert admin.post("/processing/templates/new/", form).status_code == 200, form
    assert not Template.objects.filter(name="bad").exists()
    assert admin.get("/jobs/999/qc/1.png").status_code == 404
    assert admin.get("/jobs/999/").status_code == 404
    assert admin.get("/processing/series/not-a-uid/why/").status_code == 404
    for url in ("/processing/series/?sort=nope&page=x&status=zzz", "/jobs/?status=nope&page=-1",
                "/processing/logs/?level=nope", "/datastore/?folder=abc&status=nope", "/uploads/zip/?status=nope",
                "/uploads/zip/progress/?id=x&id=9999", "/processing/templates/no-such/", "/processing/rulesets/no-such/"):
        assert admin.get(url).status_code in (200, 404), url
    assert admin.post("/datastore/999/toggle/", {"enabled": "1"}).status_code == 404
    assert admin.post("/uploads/zip/process/", {"upload": ["999"]}).status_code == 404
