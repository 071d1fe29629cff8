"""Notifications: a failed long job (any kind) sends one mail with its log attached to the project's
data managers or the administrators; success mails only for projects that opted in; no identifying
values in the mail. In process (Django's test outbox) and end to end (the CLI with the file backend)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_registry import processors_registry  # noqa: F401  (pytest fixture)
from django.core import mail

from dicomflow import progress
from dicomflow.catalog.models import Series
from dicomflow.errors import InputError
from dicomflow.intake.models import FolderIntake, WatchedFolder, ZipUpload
from dicomflow.intake.services import import_paths
from dicomflow.processing import services
from dicomflow.processing.models import JobStatus, Template
from dicomflow.projects.models import Project, ProjectMembership, Role
from dicomflow.testing.synth import PatientSpec, write_image_series

pytestmark = pytest.mark.django_db(transaction=True)
DICOMFLOW = str(Path(sys.executable).with_name("dicomflow"))
PATIENT = PatientSpec("MAIL-PAT-4711", "Linde^Lotte", "F", "19660606")


@pytest.fixture
def people(django_user_model, settings):
    settings.DICOMFLOW_ADMIN_EMAILS = ["ops@example.org"]
    settings.DICOMFLOW_NOTIFY = True
    project = Project.objects.create(key="MAILP", name="Mail project")
    dm = django_user_model.objects.create_user("dm", email="dm@example.org", password="x-Long-Passw0rd")
    viewer = django_user_model.objects.create_user("viewer", email="viewer@example.org", password="x-Long-Passw0rd")
    ProjectMembership.objects.create(project=project, user=dm, role=Role.DATA_MANAGER)
    ProjectMembership.objects.create(project=project, user=viewer, role=Role.VIEWER)
    services.ensure_builtin_templates()
    return project


def _job(tmp_path, template: str, n_slices: int = 12):
    write_image_series(tmp_path / "ct", patient=PATIENT, n_slices=n_slices, rows=32, cols=32, seed=template)
    report = import_paths([tmp_path / "ct"], workers=1)
    [series_id] = report.series_ids
    mail.outbox.clear()  # nothing before the job
    return services.run_job_inline(services.create_job(project_key="MAILP", series_id=series_id,
                                                       template_name=template).pk)


def _identifying(text: str) -> list[str]:
    series = Series.objects.first()
    values = [PATIENT.patient_id, "Linde", "Lotte", "19660606", series.series_instance_uid if series else "-"]
    return [v for v in values if v in text]


def _broken_template(name: str, processors_registry) -> None:
    """A remote.http template whose endpoint the operator has since removed: its job fails at processing."""
    processors_registry(http_endpoints={"gone": {"url": "http://127.0.0.1:9"}})
    Template.objects.create(name=name, definition={"processor": "remote.http", "parameters": {"endpoint": "gone"}})
    processors_registry()  # the endpoint is unregistered again


def test_a_failed_job_sends_one_mail_to_the_data_managers_with_the_log(tmp_path, people, processors_registry):
    _broken_template("broken", processors_registry)
    job = _job(tmp_path, "broken")
    assert job.status == JobStatus.FAILED
    [message] = mail.outbox
    assert message.to == ["dm@example.org"]  # the data manager, not the viewer nor the admins
    assert message.subject == f"[dicomflow] processing job #{job.pk} failed"
    assert f"Reason: {job.error}" in message.body and "Project: MAILP" in message.body
    [(name, log, mimetype)] = message.attachments
    assert name == f"job-{job.pk}.log" and mimetype == "text/plain"
    assert "Processing: failed" in log and "De-identifying: done" in log
    assert _identifying(message.body) == [] and _identifying(log) == []


def test_success_mails_only_for_projects_that_opted_in(tmp_path, people):
    job = _job(tmp_path / "a", "ct-body-lungs")
    assert job.status == JobStatus.FINISHED, job.error
    assert mail.outbox == []
    people.notify_on_success = True
    people.save()
    job = _job(tmp_path / "b", "ct-body-lungs")
    assert job.status == JobStatus.FINISHED, job.error
    [message] = mail.outbox
    assert message.to == ["dm@example.org"] and message.subject.endswith(f"#{job.pk} finished")
    assert _identifying(message.body + message.attachments[0][1]) == []


def test_notifications_can_be_turned_off(tmp_path, people, settings, processors_registry):
    settings.DICOMFLOW_NOTIFY = False
    _broken_template("broken2", processors_registry)
    assert _job(tmp_path, "broken2").status == JobStatus.FAILED
    assert mail.outbox == []


@pytest.mark.parametrize("kind", ["zip", "intake"])
def test_every_kind_of_long_job_is_covered_and_work_without_a_project_goes_to_the_admins(people, tmp_path, kind,
                                                                                          django_user_model):
    django_user_model.objects.create_superuser("root", email="root@example.org", password="x-Long-Passw0rd")
    if kind == "zip":
        row = ZipUpload.objects.create(file="zip_uploads/x.zip", original_name="Linde_Lotte.zip")
    else:
        watched = WatchedFolder.objects.create(name="w", path=str(tmp_path))
        row = FolderIntake.objects.create(watched_folder=watched, folder_name="Linde_Lotte", source_path=str(tmp_path),
                                          status=progress.Status.PENDING)
    mail.outbox.clear()

    def body(job, report):
        raise InputError("the archive is damaged")

    ended = progress.run_long_job(type(row), row.pk, body)  # the shared machinery every kind uses
    assert ended.status == progress.Status.FAILED
    [message] = mail.outbox
    assert message.to == ["ops@example.org", "root@example.org"]
    assert f"{row.what} #{row.pk} failed" in message.subject and "the archive is damaged" in message.body
    assert "Linde" not in message.body + message.attachments[0][1]  # not even the file name


def test_end_to_end_cli_job_failure_is_mailed_through_the_file_backend(tmp_path):
    """`dicomflow process` runs the whole chain in its own process; the mail goes to a folder."""
    write_image_series(tmp_path / "ct", patient=PATIENT, n_slices=3, rows=16, cols=16, seed="cli-mail")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(DICOMFLOW_HOME=str(tmp_path / "home"), EMAIL_BACKEND="file", EMAIL_FILE_PATH=str(tmp_path / "mail"),
               DICOMFLOW_ADMIN_EMAILS="ops@example.org")
    done = subprocess.run([DICOMFLOW, "process", str(tmp_path / "ct"), "--template", "ct-body-lungs", "--project",
                           "CLIMAIL", "--out", str(tmp_path / "out"), "--json"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    files = list((tmp_path / "mail").iterdir())
    assert len(files) == 1
    text = files[0].read_text()
    assert "Subject: [dicomflow] processing job #" in text and "failed" in text
    assert "To: ops@example.org" in text and 'filename="job-' in text
    assert PATIENT.patient_id not in text and "Linde" not in text
