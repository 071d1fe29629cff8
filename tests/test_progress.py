"""The one long-running-job model (dicomflow.progress): reporter throttling and the failure policy.

A ZIP upload row stands for every kind of long job (they all share ``LongJob``); a processing job's
stage row shows the reporter on a model without a ``stage`` column. Real database, no mocks.
"""

from __future__ import annotations

import logging

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dicomflow import progress
from dicomflow.errors import ArchiveError
from dicomflow.intake.models import FolderIntake, UploadSession, UploadStage, ZipUpload
from dicomflow.processing.models import Job, JobStage
from dicomflow.progress import ProgressReporter, Status, run_long_job
from dicomflow.projects.models import StagingJob

pytestmark = pytest.mark.django_db


def updates(queries) -> int:
    return sum(1 for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("UPDATE"))


@pytest.fixture
def upload() -> ZipUpload:
    return ZipUpload.objects.create(original_name="scan.zip")


def test_every_kind_is_a_long_job_with_one_vocabulary():
    for model in (ZipUpload, UploadSession, FolderIntake, StagingJob, Job):
        assert issubclass(model, progress.LongJob)
        assert [value for value, _ in model._meta.get_field("status").choices] == Status.values
    # labels may differ per kind (the web contract of ZIP uploads), values never do
    assert ZipUpload(status=Status.RUNNING).get_status_display() == "In progress"
    assert ZipUpload(status=Status.FINISHED).get_status_display() == "Completed"
    assert Job(status=Status.WAITING).get_status_display() == "Waiting for quality control"


def test_reporter_writes_about_a_hundred_times_per_stage_and_always_the_end(upload):
    report = ProgressReporter.for_row(ZipUpload, upload.pk)
    with CaptureQueriesContext(connection) as queries:
        for done in range(10_001):
            report(UploadStage.IMPORT, done, 10_000)
    assert 95 <= updates(queries) <= 102
    upload.refresh_from_db()
    assert (upload.stage, upload.done, upload.total) == (UploadStage.IMPORT, 10_000, 10_000)

    with CaptureQueriesContext(connection) as queries:
        report(UploadStage.IMPORT, 10_000, 10_000)  # unchanged: nothing to write
        report(UploadStage.CLEAN_UP, 0, 1)  # a new stage is written at once
    assert updates(queries) == 1
    upload.refresh_from_db()
    assert (upload.stage, upload.done, upload.total) == (UploadStage.CLEAN_UP, 0, 1)


def test_flush_commits_the_last_value_a_throttled_call_skipped(upload):
    report = ProgressReporter.for_row(ZipUpload, upload.pk)
    report(UploadStage.IMPORT, 0, 1000)
    report(UploadStage.IMPORT, 5, 1000)  # within one step (10) of 0: skipped
    upload.refresh_from_db()
    assert upload.done == 0
    report.flush()
    upload.refresh_from_db()
    assert (upload.done, upload.total) == (5, 1000)
    assert upload.percent == 10 + int(80 * 5 / 1000)  # the import stage spans 10-90 % of the bar


def test_reporter_on_a_stage_row_writes_done_and_total_only():
    job = Job.objects.create(project_key="p")
    stage = JobStage.objects.create(job=job, name="checking", order=2)
    report = ProgressReporter(Job.objects.filter(pk=job.pk), JobStage.objects.filter(pk=stage.pk))
    report("checking", 3, 3)
    stage.refresh_from_db()
    job.refresh_from_db()
    assert (stage.done, stage.total) == (3, 3)
    assert (job.stage, job.done, job.total) == ("checking", 3, 3)


def test_run_long_job_claims_once_reports_and_finishes(upload):
    calls = []

    def body(job, report):
        calls.append(job.status)
        report(UploadStage.IMPORT, 7, 7)
        return {"stage": UploadStage.DONE, "instances_new": 7}

    done = run_long_job(ZipUpload, upload.pk, body, stage=UploadStage.INITIALISE)
    assert calls == [Status.RUNNING]
    assert (done.status, done.stage, done.instances_new, done.error) == (Status.FINISHED, UploadStage.DONE, 7, "")
    assert done.started_at <= done.finished_at
    assert done.progress_dict() == {
        "status": "finished", "stage": "done", "done": 7, "total": 7, "percent": 100,
        "started_at": done.started_at.isoformat(), "finished_at": done.finished_at.isoformat(), "error": "",
    }

    # a second run (a re-delivered task) of the finished job does nothing
    assert run_long_job(ZipUpload, upload.pk, body, stage=UploadStage.INITIALISE) is None
    assert calls == [Status.RUNNING]
    again = ZipUpload.objects.get(pk=upload.pk)
    assert (again.status, again.finished_at) == (Status.FINISHED, done.finished_at)


def test_claim_is_won_by_one_caller_only(upload):
    rows = ZipUpload.objects.filter(pk=upload.pk)
    assert [progress.claim(rows, stage=UploadStage.INITIALISE) for _ in range(3)] == [True, False, False]
    ran = []
    assert run_long_job(ZipUpload, upload.pk, lambda job, report: ran.append(job)) is None  # running: not taken
    assert ran == []


def test_a_dicomflow_error_fails_the_job_with_its_own_message(upload, caplog):
    def body(job, report):
        report(UploadStage.IMPORT, 3, 10)
        raise ArchiveError("scan.zip is not a readable ZIP archive")

    failed = run_long_job(ZipUpload, upload.pk, body, stage=UploadStage.INITIALISE)  # does not raise
    assert (failed.status, failed.error) == (Status.FAILED, "scan.zip is not a readable ZIP archive")
    assert failed.finished_at is not None
    assert (failed.stage, failed.done, failed.total) == (UploadStage.IMPORT, 3, 10)  # where it stopped


def test_an_unexpected_error_gets_a_generic_message_and_the_traceback_goes_to_the_log(upload, caplog):
    def body(job, report):
        raise KeyError("Doe^Jane 19610203")  # an exception text may quote identifying values

    with caplog.at_level(logging.ERROR, logger="dicomflow.progress"):
        failed = run_long_job(ZipUpload, upload.pk, body)
    assert failed.status == Status.FAILED
    assert failed.error == "ZIP upload failed unexpectedly (KeyError)"
    assert "Doe" not in failed.error and "1961" not in failed.error
    record = next(r for r in caplog.records if r.name == "dicomflow.progress")
    assert record.exc_info and record.exc_info[0] is KeyError


def test_failure_policy_reports_through_the_callback():
    seen = []
    with progress.failure_policy("Checking", seen.append) as outcome:
        raise ValueError("secret value")
    assert outcome.failed and seen == ["Checking failed unexpectedly (ValueError)"]
    with progress.failure_policy("Checking", seen.append) as fine:
        pass
    assert not fine.failed and len(seen) == 1


@pytest.mark.django_db(transaction=True)
def test_migrations_map_the_old_statuses_of_existing_rows():
    """Rows written before the one model keep their meaning: old values become the shared ones."""
    from django.db.migrations.executor import MigrationExecutor

    before = [("intake", "0004_uploadsession_uploadfile"), ("projects", "0002_alter_projectmembership_role"),
              ("processing", "0002_builtin_templates")]
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()  # every app: going back unapplied what depends on these too
    executor.migrate(before)
    old = MigrationExecutor(connection).loader.project_state(before).apps
    OldZip, OldSession = old.get_model("intake", "ZipUpload"), old.get_model("intake", "UploadSession")
    OldJob = old.get_model("processing", "Job")
    zip_id = OldZip.objects.create(status="in_progress", stage="import", percent=50, error_message="").pk
    OldSession.objects.create(id="00000000-0000-0000-0000-000000000001", status="queued", import_done=3,
                              import_total=9, error_message="")
    job_id = OldJob.objects.create(project_key="p", status="waiting_qc", current_stage="quality_control").pk

    MigrationExecutor(connection).migrate(latest)
    upload = ZipUpload.objects.get(pk=zip_id)
    assert (upload.status, upload.stage, upload.percent) == (Status.RUNNING, "import", 50)
    session = UploadSession.objects.get()
    assert (session.status, session.stage, session.done, session.total) == (Status.PENDING, "import", 3, 9)
    job = Job.objects.get(pk=job_id)
    assert (job.status, job.stage) == (Status.WAITING, "quality_control")
