"""The automatic path end to end, on a REAL Celery worker with REAL DCMTK peers.

A CT is pushed by ``storescu`` to the receiver in two associations; the template the rules choose
processes automatically, so after the quiet time ONE job runs on the whole series and its result
goes to a real ``storescp``. The same series imported again by the command line starts no second
job; a series that two rulesets match starts none and shows "Multiple matches" on the desk.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pydicom
import pytest

from conftest import require_tool
from dicomflow.accounts.actors import cli_operator
from dicomflow.catalog.models import Series
from dicomflow.core.rules import CT_BODY_LUNGS, SeriesStatus
from dicomflow.export.models import DicomNode
from dicomflow.processing import services, tasks
from dicomflow.processing.models import Job, JobStatus, Result, Ruleset, SeriesState, Template
from dicomflow.testing.synth import PatientSpec, write_image_series
from fixtures_celery import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.dcmtk]

AET, PEER_AET = "DFAUTO", "AUTOPACS"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
QUIET = 4.0  # seconds without a new instance before a series' automatic job starts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def storescp(tmp_path):
    """A real DCMTK storescp (the export destination) writing into a folder; yields (port, folder)."""
    exe, echoscu = require_tool("storescp"), require_tool("echoscu")
    out = tmp_path / "pacs"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen([exe, "-aet", PEER_AET, "+xa", "-od", str(out), str(port)], env=DCMTK_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while subprocess.run([echoscu, "-aec", PEER_AET, "127.0.0.1", str(port)], capture_output=True,
                         env=DCMTK_ENV).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"storescp did not start: {proc.stderr.read().decode(errors='replace')}")
        time.sleep(0.1)
    yield port, out
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def receiver():
    """Our C-STORE receiver on a free loopback port (every finished association signals its import)."""
    from dicomflow.intake.network.scp import StorageSCP

    scp = StorageSCP(AET, 0, [], host="127.0.0.1").start()
    yield scp
    scp.stop(grace=5)


def storescu(port: int, files) -> None:
    done = subprocess.run([require_tool("storescu"), "-aet", "MODALITY", "-aec", AET, "127.0.0.1", str(port),
                           *map(str, files)], env=DCMTK_ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_storescu_in_two_associations_gives_one_exported_job(tmp_path, settings, celery_worker_process, storescp,
                                                            receiver, client, django_user_model):
    worker = celery_worker_process
    settings.DICOMFLOW_AUTO_PROCESS_QUIET_SECONDS = QUIET  # read by the import hook, sent with the task
    services.ensure_builtin_templates()  # transactional tests flush the data migration's rows
    pacs_port, pacs_folder = storescp
    DicomNode.objects.create(name="pacs", ae_title=PEER_AET, host="127.0.0.1", port=pacs_port, our_ae_title=AET)
    template = Template.objects.get(name=CT_BODY_LUNGS)
    definition = {**template.definition, "destinations": [{"type": "dicom", "node": "pacs"}]}
    services.update_template(cli_operator(), CT_BODY_LUNGS, definition=definition, auto_process=True,
                             auto_project="auto-e2e")
    # a second template with automatic processing, and a ruleset choosing it for the "TWIN" series only
    services.create_template(cli_operator(), name="ct-twin", definition=definition, auto_process=True,
                             auto_project="auto-e2e")
    services.create_ruleset(cli_operator(), name="twin-ct", order=5, definition={
        "template": "ct-twin", "match": {"attribute": "SeriesDescription", "operator": "equals", "value": "TWIN"}})

    twin = write_image_series(tmp_path / "twin", PatientSpec("AUTO-TWIN-1"), n_slices=12, rows=32, cols=32,
                              series_description="TWIN", seed="auto-twin")
    ct = write_image_series(tmp_path / "ct", PatientSpec("AUTO-CT-1", "Auto^Anna"), n_slices=24, rows=64, cols=64,
                            series_description="Thorax", seed="auto-ct")
    storescu(receiver.port, twin.paths)
    storescu(receiver.port, ct.paths[:12])  # a first association: 12 images, enough for the rule alone ...
    storescu(receiver.port, ct.paths[12:])  # ... and the rest in a second one, within the quiet time

    series = wait_for(lambda: Series.objects.filter(series_instance_uid=ct.series_uid).first(), timeout=30,
                      worker=worker, what="the CT in the catalog")
    job = wait_for(lambda: Job.objects.filter(series=series).first(), timeout=90, worker=worker,
                   what="the automatic job")
    assert (job.automatic, job.project_key, job.template.name, job.created_by) == (True, "auto-e2e", CT_BODY_LUNGS,
                                                                                   None)
    job = wait_for(lambda: Job.objects.filter(pk=job.pk, status__in=(JobStatus.FINISHED, JobStatus.FAILED)).first(),
                   timeout=180, worker=worker, what="the automatic job to end")
    assert job.status == JobStatus.FINISHED, job.error
    assert Job.objects.filter(series=series).count() == 1
    assert len(job.state["deid_files"]) == 24  # the whole series, not the first association's part
    assert SeriesState.objects.get(series=series).status == SeriesStatus.RESULT_EXPORTED.value

    # the result went to the DICOM node, re-identified, referencing the pushed series
    [result] = Result.objects.filter(job=job)
    assert [o["ok"] for o in result.exported_to] == [True]
    received = [pydicom.dcmread(p) for p in pacs_folder.rglob("*") if p.is_file()]
    assert [ds.Modality for ds in received] == ["RTSTRUCT"]
    assert received[0].PatientID == "AUTO-CT-1"
    referenced = {str(s.SeriesInstanceUID) for f in received[0].ReferencedFrameOfReferenceSequence
                  for st in f.RTReferencedStudySequence for s in st.RTReferencedSeriesSequence}
    assert referenced == {ct.series_uid}

    # the same series again through the command line: duplicates, and no second job
    env = {**os.environ, "DATABASE_URL": worker.database, "DICOMFLOW_HOME": str(settings.HOME)}
    again = subprocess.run([sys.executable, "-m", "dicomflow.cli", "import", str(tmp_path / "ct"), "--json"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["instances_new"] == 0, report
    assert report["instances_duplicate"] + len(report["conflicts"]) == 24, report
    # and even when the worker is asked to start every quiet series now: still one job
    tasks.evaluate_imported.delay([series.pk], 0).get(timeout=60)
    tasks.start_automatic_jobs.delay(quiet_seconds=0).get(timeout=60)
    assert Job.objects.filter(series=series).count() == 1

    # the series two rulesets match: no job, "Multiple matches" on the desk for a person to decide
    twin_series = Series.objects.get(series_instance_uid=twin.series_uid)
    state = SeriesState.objects.get(series=twin_series)
    assert state.status == SeriesStatus.MULTIPLE_RULES_MATCHED.value
    assert sorted(state.explanation["matched_rulesets"]) == ["ct-images", "twin-ct"]
    assert not Job.objects.filter(series=twin_series).exists()
    assert Job.objects.filter(series__in=[series, twin_series]).count() == 1
    client.force_login(django_user_model.objects.create_superuser("desk-admin", "a@example.org", None))
    page = client.get("/processing/series/?status=multiple").content.decode()
    assert twin.series_uid in page and "Multiple matches" in page and ct.series_uid not in page
