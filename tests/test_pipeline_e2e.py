"""The whole pipeline with a REAL Celery worker (filesystem broker, same SQLite test database).

A generated CT is imported; the import hook has the worker evaluate the rules (ct-images →
ct-body-lungs); a job then runs every stage on the worker: checks, de-identification, built-in
segmentation, verification, re-identification, export to a folder and to a real DCMTK storescp.
A failing external command leaves the job Failed with the reason; retry succeeds once fixed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import require_tool
from dicomflow.accounts.actors import cli_operator
from dicomflow.catalog.models import Series
from dicomflow.core.rules import CT_BODY_LUNGS, SeriesStatus
from dicomflow.core.segmentation import read_image_series, read_rtstruct_masks
from dicomflow.export.models import DicomNode
from dicomflow.intake.services import import_paths
from dicomflow.processing import selectors, services, tasks
from dicomflow.processing.models import STAGE_ORDER, Job, JobStage, JobStatus, LogEntry, Result, SeriesState, Template
from dicomflow.testing.synth import PatientSpec, phantom_masks, write_image_series
from fixtures_celery import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PEER_AET = "STORESCP"
PATIENT = PatientSpec("E2E-PAT-4711", "Tester^Erika", "F", "19711111")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def storescp(tmp_path):
    """A real DCMTK storescp writing into a folder; yields (port, folder)."""
    exe, echoscu = require_tool("storescp"), require_tool("echoscu")
    env = {**os.environ, "TCP_NODELAY": "1"}
    out = tmp_path / "storescp-out"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen([exe, "-aet", PEER_AET, "+xa", "-od", str(out), str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while subprocess.run([echoscu, "-aec", PEER_AET, "127.0.0.1", str(port)], capture_output=True,
                         env=env).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"storescp did not start: {proc.stderr.read().decode(errors='replace')}")
        time.sleep(0.1)
    yield port, out
    proc.terminate()
    proc.wait(10)


@pytest.fixture(autouse=True)
def builtins():
    services.ensure_builtin_templates()  # transactional tests flush the data migration's rows


def _references(ds) -> tuple[set[str], set[str]]:
    series, instances = set(), set()
    for frame in ds.ReferencedFrameOfReferenceSequence:
        for study in frame.RTReferencedStudySequence:
            for s in study.RTReferencedSeriesSequence:
                series.add(str(s.SeriesInstanceUID))
                instances |= {str(i.ReferencedSOPInstanceUID) for i in s.ContourImageSequence}
    for roi in ds.ROIContourSequence:
        for contour in roi.get("ContourSequence", []):
            instances |= {str(i.ReferencedSOPInstanceUID) for i in contour.ContourImageSequence}
    return series, instances


def _wait_job(job_id: int, worker, statuses=(JobStatus.FINISHED, JobStatus.FAILED)) -> Job:
    return wait_for(lambda: Job.objects.filter(pk=job_id, status__in=statuses).first(), timeout=120,
                    worker=worker, what=f"job {job_id} to reach {statuses}")


def test_ct_to_reidentified_rtstruct_on_folder_and_node(tmp_path, celery_worker_process, storescp):
    port, received = storescp
    DicomNode.objects.create(name="pacs", ae_title=PEER_AET, host="127.0.0.1", port=port, our_ae_title="DFTEST")
    template = Template.objects.get(name=CT_BODY_LUNGS)
    template.definition = {**template.definition, "destinations": [{"type": "dicom", "node": "pacs"}]}
    template.save()
    info = write_image_series(tmp_path / "ct", patient=PATIENT, n_slices=12, rows=64, cols=64, seed="e2e-ct")

    import_paths([tmp_path / "ct"], workers=1)
    series = Series.objects.get(series_instance_uid=info.series_uid)
    # the import hook queued the rule evaluation; the worker ran it
    state = wait_for(lambda: SeriesState.objects.filter(series=series).exclude(status="UNPROCESSED").first(),
                     timeout=60, worker=celery_worker_process, what="the rules to be evaluated after the import")
    assert state.status == SeriesStatus.RULE_MATCHED.value and state.template.name == CT_BODY_LUNGS

    out = tmp_path / "out"
    job = services.create_job(project_key="E2E", series_id=series.id, out_dir=out)
    assert job.template.name == CT_BODY_LUNGS  # from the rules
    tasks.start_job(job.pk)
    job = _wait_job(job.pk, celery_worker_process)
    assert job.status == JobStatus.FINISHED, job.error

    stages = {s.name: s.status for s in job.stages.all()}
    assert stages == {name: ("skipped" if name in ("uploading", "importing", "quality_control") else "done")
                      for name in STAGE_ORDER}
    assert SeriesState.objects.get(series=series).status == SeriesStatus.RESULT_EXPORTED.value

    [result] = Result.objects.filter(job=job)
    assert result.verified and result.reidentified and result.kind == "RTSTRUCT"
    [exported] = out.iterdir()
    assert selectors.job_summary(job.pk)["results"] == [str(exported)]
    ds = pydicom.dcmread(exported)
    assert (ds.PatientID, str(ds.PatientName)) == (PATIENT.patient_id, PATIENT.name)
    assert ds.StudyInstanceUID == info.study_uid
    original = pydicom.dcmread(info.paths[0], stop_before_pixels=True)
    for keyword in ("StudyDate", "StudyTime", "AccessionNumber", "StudyID", "PatientBirthDate", "PatientSex"):
        assert ds.get(keyword) == original.get(keyword), keyword  # the study's own values, not shifted ones
    referenced_series, referenced_instances = _references(ds)
    assert referenced_series == {info.series_uid}
    assert referenced_instances and referenced_instances <= set(info.sop_instance_uids)
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["Body", "Lung_L", "Lung_R"]
    # the segmentation is right on the ORIGINAL CT (lungs split in two halves of the phantom)
    masks = read_rtstruct_masks(ds, read_image_series(info.paths))
    truth = phantom_masks(info)
    dice = 2 * (masks["Body"] & truth.body).sum() / (masks["Body"].sum() + truth.body.sum())
    assert dice >= 0.95
    # re-identification and restyling keep the object valid
    verdict = subprocess.run([require_tool("dciodvfy"), str(exported)], capture_output=True, text=True)
    assert not [line for line in (verdict.stdout + verdict.stderr).splitlines() if line.startswith("Error")]
    # the DICOM node received the same re-identified object
    [stored] = list(received.iterdir())
    copy = pydicom.dcmread(stored)
    assert (copy.SOPInstanceUID, copy.PatientID) == (ds.SOPInstanceUID, PATIENT.patient_id)

    log = list(LogEntry.objects.filter(job=job))
    for stage in ("checking", "deidentifying", "processing", "verifying", "reidentifying", "exporting"):
        messages = [e.message for e in log if e.stage == stage]
        assert any(m.endswith("started") for m in messages) and any(m.endswith("done") for m in messages), stage
    text = "\n".join(e.message for e in LogEntry.objects.all())
    for value in (PATIENT.patient_id, "Tester", PATIENT.birth_date, info.study_uid):
        assert value not in text  # the log never carries identifying values

    # a re-delivered task for a finished stage does nothing
    entries = LogEntry.objects.count()
    assert tasks.run_stage.delay(job.pk, "processing").get(timeout=60) is None
    assert JobStage.objects.get(job=job, name="processing").attempts == 1
    assert LogEntry.objects.count() == entries
    assert services.job_results_zip(job.pk).stat().st_size > 0


FAILING_UNTIL_FIXED = textwrap.dedent("""
    import pathlib, sys
    import nibabel as nib
    import numpy as np
    image, out, model = sys.argv[1:4]
    if not pathlib.Path(model).exists():
        print("model weights not found", file=sys.stderr)
        sys.exit(1)
    img = nib.load(image)
    labels = (np.asarray(img.dataobj) > -500).astype(np.uint8)
    nib.save(nib.Nifti1Image(labels, img.affine), str(pathlib.Path(out) / "labels.nii.gz"))
    print("segmented", int(labels.sum()), "voxels")
""")


def test_failing_external_command_fails_the_job_and_retry_succeeds(tmp_path, celery_worker_process,
                                                                   processors_registry):
    script = tmp_path / "segment.py"
    script.write_text(FAILING_UNTIL_FIXED)
    model = tmp_path / "model.bin"
    processors_registry(commands={"body-seg": {  # the worker reads the same registry file
        "argv": [sys.executable, str(script), "{input_file}", "{output}", str(model)],
        "nifti": True, "timeout_seconds": 60}})
    Template.objects.create(name="ext-body", definition={
        "processor": "external.command",
        "parameters": {"command": "body-seg"},
        "requires": {"modalities": ["CT"], "min_images": 10},
        "rois": [{"key": "body", "name": "BODY_EXT", "color": [255, 0, 0], "type": "EXTERNAL", "label": 1}],
    })
    info = write_image_series(tmp_path / "ct", patient=PATIENT, n_slices=12, rows=32, cols=32, seed="e2e-ext")
    import_paths([tmp_path / "ct"], workers=1)
    series = Series.objects.get(series_instance_uid=info.series_uid)
    job = services.create_job(project_key="E2E", series_id=series.id, template_name="ext-body")
    tasks.start_job(job.pk)
    job = _wait_job(job.pk, celery_worker_process)
    assert job.status == JobStatus.FAILED
    assert "exited with status 1" in job.error
    assert JobStage.objects.get(job=job, name="processing").status == "failed"
    assert LogEntry.objects.filter(job=job, stage="processing", message__contains="model weights not found").exists()

    model.write_bytes(b"weights")  # the cause is fixed
    services.retry_job(cli_operator(), job.pk)  # enqueued for the worker
    job = _wait_job(job.pk, celery_worker_process, statuses=(JobStatus.FINISHED,))
    stage = JobStage.objects.get(job=job, name="processing")
    assert (stage.status, stage.attempts) == ("done", 2)
    [result] = Result.objects.filter(job=job)
    ds = pydicom.dcmread(result.path)
    assert ds.PatientID == PATIENT.patient_id
    [roi] = ds.StructureSetROISequence
    assert roi.ROIName == "BODY_EXT"
    assert [int(c) for c in ds.ROIContourSequence[0].ROIDisplayColor] == [255, 0, 0]
    # through NIfTI and back onto the original CT: the body is where the phantom's is
    mask = read_rtstruct_masks(ds, read_image_series(info.paths))["BODY_EXT"]
    truth = phantom_masks(info).body
    assert 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) >= 0.9
    assert np.any(mask)


def test_folder_job_waits_for_quality_control_then_exports(tmp_path, celery_worker_process, django_user_model):
    reviewer = django_user_model.objects.create_superuser("qc-reviewer")
    write_image_series(tmp_path / "in", patient=PATIENT, n_slices=12, rows=32, cols=32, seed="e2e-qc")
    out = tmp_path / "out"
    job = services.create_job(project_key="E2E", input_path=tmp_path / "in", template_name=CT_BODY_LUNGS,
                              out_dir=out, require_qc=True)
    tasks.start_job(job.pk)
    job = _wait_job(job.pk, celery_worker_process, statuses=(JobStatus.WAITING, JobStatus.FAILED))
    assert job.status == JobStatus.WAITING, job.error
    assert JobStage.objects.get(job=job, name="importing").status == "done"
    assert job.series is not None and not out.exists()
    services.approve_qc(reviewer, job.pk)  # export is enqueued for the worker
    job = _wait_job(job.pk, celery_worker_process)
    assert job.status == JobStatus.FINISHED, job.error
    [exported] = out.iterdir()
    assert pydicom.dcmread(exported).PatientID == PATIENT.patient_id
