"""Several workers on a shared broker (issue 15): two SEPARATE worker processes on Redis, then on
RabbitMQ, sharing the test database and the file store; 20 jobs (10 ZIP imports, 10 processing
jobs of the whole chain) are submitted, every one finishes, every task ran exactly once (each task
id appears once in the two workers' logs, every processing stage ran once) and both workers took
work.

The brokers: ``DICOMFLOW_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``) and
``DICOMFLOW_TEST_AMQP_URL`` (default ``amqp://guest:guest@127.0.0.1:5672//``), each test with a
queue of its own (purged and deleted afterwards), so concurrent runs do not take each other's tasks.
Skipped when the broker does not answer, failed instead in CI (``DICOMFLOW_REQUIRE_TOOLS=1``).
"""

from __future__ import annotations

import os
import re
import uuid
from collections import Counter

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction

from dicomflow.catalog.models import Series
from dicomflow.core.rules import CT_BODY_LUNGS
from dicomflow.intake import uploads
from dicomflow.intake.models import UploadStatus, ZipUpload
from dicomflow.intake.services import import_paths
from dicomflow.processing import services, tasks
from dicomflow.processing.models import Job, JobStage, JobStatus
from dicomflow.testing.synth import PatientSpec, write_image_series, write_multi_patient_zip
from fixtures_celery import start_worker, stop_worker, wait_for, worker_database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BROKERS = {
    "redis": os.environ.get("DICOMFLOW_TEST_REDIS_URL") or "redis://127.0.0.1:6379/15",
    "amqp": os.environ.get("DICOMFLOW_TEST_AMQP_URL") or "amqp://guest:guest@127.0.0.1:5672//",
}
DONE_LINE = re.compile(r"Task (\S+)\[([0-9a-f-]+)\] (succeeded|raised|retry)")
RECEIVED_LINE = re.compile(r"Task (\S+)\[([0-9a-f-]+)\] received")


def _answers(url: str) -> str | None:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
        return None
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(params=sorted(BROKERS))
def shared_broker(request, monkeypatch, django_db_blocker):
    """(name, url, queue): this process sends every task to ``queue`` on that broker."""
    from dicomflow.celery_app import app

    name, url = request.param, BROKERS[request.param]
    if problem := _answers(url):
        message = f"the {name} broker at {url.split('@')[-1]} does not answer ({problem})"
        if os.environ.get("DICOMFLOW_REQUIRE_TOOLS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    queue = f"dicomflow-2w-{name}-{uuid.uuid4().hex[:10]}"
    connection = app.connection_for_write(url)
    producer = app.amqp.Producer(connection)
    send_task = app.send_task

    def send_to_shared_queue(task_name, args=None, kwargs=None, **options):
        options.update(producer=producer, queue=queue)
        return send_task(task_name, args, kwargs, **options)

    monkeypatch.setattr(app, "send_task", send_to_shared_queue)
    yield name, url, queue
    monkeypatch.undo()
    try:
        channel = connection.channel()
        channel.queue_purge(queue)
        channel.queue_delete(queue)
    except Exception:  # noqa: BLE001  already gone
        pass
    connection.release()


def _task_lines(log: str, pattern: re.Pattern) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in pattern.finditer(log)]


def test_two_workers_share_twenty_jobs_each_runs_once(shared_broker, tmp_path, django_db_blocker):
    name, url, queue = shared_broker
    services.ensure_builtin_templates()  # transactional tests flush the data migration's rows
    database = worker_database_url(django_db_blocker)
    env = {"CELERY_BROKER_URL": url, "DICOMFLOW_CELERY_QUEUE": queue}
    workers = []
    try:
        for i in (1, 2):  # two separate worker processes (as on two hosts sharing the file store)
            workers.append(start_worker(database, concurrency=1, log_name=f"two-workers-{name}-{i}.log",
                                        node=f"w{i}-{uuid.uuid4().hex[:6]}@%h", env_extra=env))

        # 10 processing jobs: CT series imported here (the import hook's tasks go to the workers too)
        cts = []
        for k in range(10):
            patient = PatientSpec(f"2W-{name}-{k}", f"Worker^Test{k}", "F", "19700101")
            cts.append(write_image_series(tmp_path / f"ct{k}", patient=patient, n_slices=12, rows=32, cols=32,
                                          seed=f"2w-{name}-{k}"))
        import_paths([tmp_path / f"ct{k}" for k in range(10)], workers=1)
        jobs = []
        for info in cts:
            series = Series.objects.get(series_instance_uid=info.series_uid)
            job = services.create_job(project_key="TWO", series_id=series.id, template_name=CT_BODY_LUNGS)
            tasks.start_job(job.pk)
            jobs.append(job.pk)

        # 10 ZIP imports
        zips = []
        for k in range(10):
            info = write_multi_patient_zip(tmp_path / f"u{k}.zip", n_patients=1, n_slices=3, rows=16, cols=16,
                                           seed=f"2w-zip-{name}-{k}")
            upload = uploads.create_upload(SimpleUploadedFile(f"u{k}.zip", info.path.read_bytes()))
            zips.append((upload.pk, info.n_files))
        with transaction.atomic():
            assert uploads.request_processing([pk for pk, _ in zips]) == [pk for pk, _ in zips]

        def all_done():
            workers[0].assert_alive()
            workers[1].assert_alive()
            return (not ZipUpload.objects.filter(pk__in=[pk for pk, _ in zips])
                    .exclude(status__in=[UploadStatus.FINISHED, UploadStatus.FAILED]).exists()
                    and not Job.objects.filter(pk__in=jobs)
                    .exclude(status__in=[JobStatus.FINISHED, JobStatus.FAILED]).exists())

        wait_for(all_done, timeout=600, interval=0.5, what="the 20 jobs to finish on two workers")
        # Follow-up tasks (rule evaluation, RT analysis of catalogued results) drain too: every task
        # a worker received has finished and nothing new arrived for a few polls. A worker stopped
        # earlier would hand its prefetched message back (Redis restores it), a second delivery.
        quiet = {"polls": 0, "seen": -1}

        def drained():
            logs = [w.log_path.read_text(errors="replace") for w in workers]
            got = {t for log in logs for _, t in _task_lines(log, RECEIVED_LINE)}
            ran = {t for log in logs for _, t in _task_lines(log, DONE_LINE)}
            quiet["polls"] = quiet["polls"] + 1 if (got == ran and len(got) == quiet["seen"]) else 0
            quiet["seen"] = len(got)
            return quiet["polls"] >= 4

        wait_for(drained, timeout=300, interval=0.5, what="the follow-up tasks to drain")
    finally:
        for worker in workers:
            stop_worker(worker)

    for pk, n_files in zips:
        upload = ZipUpload.objects.get(pk=pk)
        assert upload.status == UploadStatus.FINISHED, upload.error
        assert (upload.files_seen, upload.instances_new, upload.instances_duplicate) == (n_files, n_files, 0)
    for pk in jobs:
        job = Job.objects.get(pk=pk)
        assert job.status == JobStatus.FINISHED, job.error
        stages = JobStage.objects.filter(job=job).exclude(status="skipped")
        assert stages.exists() and all(s.attempts == 1 for s in stages), [(s.name, s.attempts) for s in stages]

    logs = [w.log_path.read_text(errors="replace") for w in workers]
    done = [_task_lines(log, DONE_LINE) for log in logs]
    received = Counter(task_id for log in logs for _, task_id in _task_lines(log, RECEIVED_LINE))
    finished = Counter(task_id for lines in done for _, task_id in lines)
    assert received and set(received) == set(finished)
    assert max(received.values()) == 1, [t for t, n in received.items() if n > 1]  # no task delivered twice
    assert max(finished.values()) == 1  # and none ran twice
    assert all(lines for lines in done), "both workers took work"
    names = Counter(task for lines in done for task, _ in lines)
    assert names["dicomflow.intake.tasks.process_zip_upload"] == 10
    for lines in done:  # each worker ran tasks of both kinds or at least several tasks
        assert len(lines) >= 2
