"""Crash recovery (issue 14, item 5): work claimed by a worker has a lease; a worker killed with
SIGKILL mid-import leaves a job that the next worker takes over and finishes exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
import zipfile

import pytest
from django.utils import timezone

from dicomflow import progress
from dicomflow.catalog.models import Instance
from dicomflow.intake import resumable
from dicomflow.intake.models import UploadFile, UploadSession, UploadSessionStage, UploadSessionStatus
from dicomflow.intake.tasks import import_upload_session
from dicomflow.testing.synth import PatientSpec, write_image_series
from fixtures_celery import start_worker, stop_worker, wait_for

N_FILES = 400


def _database_url() -> str:
    from django.db import connection

    conf = connection.settings_dict
    if connection.vendor == "postgresql":
        return f"postgres://{conf['USER']}@{conf['HOST'] or '127.0.0.1'}:{conf['PORT'] or 5432}/{conf['NAME']}"
    return f"sqlite:///{conf['NAME']}"


def _session_with_zip(tmp_path) -> tuple[UploadSession, list[str]]:
    """A received (waiting) upload session holding one ZIP of N_FILES small CT slices."""
    series = write_image_series(tmp_path / "s", patient=PatientSpec("CRASH-1", "Crash^Test"), n_slices=N_FILES,
                                rows=16, cols=16, seed="crash")
    archive = tmp_path / "slices.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in series.paths:
            zf.write(path, path.name)
    data = archive.read_bytes()
    session = UploadSession.objects.create(id=uuid.uuid4(), file_count=1, files_complete=1, total_size=len(data),
                                           received_size=len(data))
    UploadFile.objects.create(session=session, index=0, name="slices.zip", size=len(data), received=len(data),
                              complete=True)
    path = resumable.file_path(session, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return session, series.sop_instance_uids


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_upload_import_is_taken_over_and_the_count_is_exact(tmp_path, monkeypatch):
    session, uids = _session_with_zip(tmp_path)
    queue = f"crash-{uuid.uuid4().hex[:8]}"  # only our first worker takes the import
    monkeypatch.setenv("DICOMFLOW_IMPORT_BATCH", "10")  # commit often: the kill lands mid-import
    monkeypatch.setenv("DICOMFLOW_IMPORT_WORKERS", "1")
    url = _database_url()
    first = start_worker(url, concurrency=1, log_name="crash-first.log", queues=queue, name=f"{queue}-a@%h")
    try:
        UploadSession.objects.filter(pk=session.pk).update(status=UploadSessionStatus.PENDING,
                                                          stage=UploadSessionStage.IMPORT)
        import_upload_session.apply_async((str(session.pk),), queue=queue)
        wait_for(lambda: Instance.objects.filter(sop_instance_uid__in=uids).count() >= 30, timeout=120,
                 interval=0.05, worker=first, what="the import to be under way")
        os.killpg(first.process.pid, signal.SIGKILL)  # the worker and its pool process, mid-import
        first.process.wait(10)
    finally:
        stop_worker(first)
    crashed = UploadSession.objects.get(pk=session.pk)
    catalogued = Instance.objects.filter(sop_instance_uid__in=uids).count()
    assert crashed.status == UploadSessionStatus.RUNNING, "the kill must land mid-import"
    assert 0 < catalogued < N_FILES
    assert crashed.lease_owner and progress.owner_alive(crashed.lease_owner) is False

    # a new worker (listening on the default queue too) takes the dead worker's session over
    second = start_worker(url, concurrency=1, log_name="crash-second.log", queues=f"{queue},celery",
                          name=f"{queue}-b@%h")
    try:
        done = wait_for(lambda: UploadSession.objects.filter(pk=session.pk, status__in=["finished", "failed"]).first(),
                        timeout=180, worker=second, what="the session to finish after the restart")
    finally:
        stop_worker(second)
    assert done.status == UploadSessionStatus.FINISHED, done.error
    assert Instance.objects.filter(sop_instance_uid__in=uids).count() == N_FILES  # exactly, no doubles
    assert done.done == done.total == done.result["files_seen"] == N_FILES
    assert done.result["instances_new"] + done.result.get("instances_duplicate", 0) >= N_FILES - catalogued
    assert done.lease_owner != crashed.lease_owner


@pytest.mark.django_db(transaction=True)
def test_a_job_held_by_a_live_worker_is_left_alone_and_a_dead_ones_is_taken_over():
    session = UploadSession.objects.create(id=uuid.uuid4(), status=UploadSessionStatus.PENDING)
    rows = UploadSession.objects.filter(pk=session.pk)
    ran = []
    # a live owner (this very process) with a valid lease: a re-delivered task does nothing
    rows.update(status="running", lease_owner=progress.lease_owner(),
                lease_until=timezone.now() + progress.lease_duration())
    assert progress.run_long_job(UploadSession, session.pk, lambda job, report: ran.append(1)) is None
    assert ran == [] and progress.abandoned(UploadSession) == []
    # a process that has exited: taken over at once, without waiting for the lease to run out
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = progress.lease_owner().split("/")[0]
    rows.update(lease_owner=f"{host}/{dead.stdout.strip()}/1.00")
    assert progress.abandoned(UploadSession) == [session.pk]
    ended = progress.run_long_job(UploadSession, session.pk, lambda job, report: ran.append(1) or {})
    assert ran == [1] and ended.status == "finished" and ended.lease_owner == progress.lease_owner()
    # another host's worker whose lease ran out
    rows.update(status="running", lease_owner="elsewhere/1/1.00", lease_until=timezone.now())
    assert progress.abandoned(UploadSession) == [session.pk]
    # ...and one whose lease is still valid is not ours to judge
    rows.update(lease_until=timezone.now() + progress.lease_duration())
    assert progress.abandoned(UploadSession) == []
    # running rows without a lease (claimed by code that keeps none) are never taken over
    rows.update(lease_owner="", lease_until=None)
    assert progress.abandoned(UploadSession) == []
