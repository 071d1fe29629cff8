"""Job engine and results, run in this process through the same engine functions the worker runs:
invalid results, quality control, cancel, idempotent stages, export fallback and failures."""

from __future__ import annotations

import shutil
import socket
import sys
import zipfile

import pydicom
import pytest

from dicomflow.catalog.models import Series
from dicomflow.core.rules import CT_BODY_LUNGS, SeriesStatus
from dicomflow.errors import InputError
from dicomflow.export.models import DicomNode
from dicomflow.intake.services import import_paths
from dicomflow.processing import selectors, services
from dicomflow.processing.models import Job, JobStage, JobStatus, LogEntry, Result, SeriesState, Template
from dicomflow.processing.processors import processor_names
from dicomflow.testing.synth import PatientSpec, write_image_series, write_rtstruct

pytestmark = pytest.mark.django_db

PATIENT = PatientSpec("RES-PAT-0815", "Muster^Max", "M", "19600101")


@pytest.fixture(autouse=True)
def builtins():
    services.ensure_builtin_templates()


@pytest.fixture
def ct(tmp_path):
    info = write_image_series(tmp_path / "ct", patient=PATIENT, n_slices=12, rows=32, cols=32,
                              seed=f"results-{tmp_path.name}")
    import_paths([tmp_path / "ct"], workers=1)
    services.evaluate_series([Series.objects.get(series_instance_uid=info.series_uid).id])
    return info, Series.objects.get(series_instance_uid=info.series_uid)


def _template(name: str, **changes) -> Template:
    base = Template.objects.get(name=CT_BODY_LUNGS).definition
    return Template.objects.create(name=name, definition={**base, **changes})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_result_referencing_another_series_is_invalid(tmp_path, ct, processors_registry):
    info, series = ct
    other = write_image_series(tmp_path / "other", patient=PATIENT, n_slices=12, rows=32, cols=32, seed="other")
    rs = write_rtstruct(tmp_path / "other-rs", other)
    processors_registry(commands={"copy-other": {"argv": [shutil.which("cp"), str(rs.paths[0]), "{output}"]}})
    Template.objects.create(name="wrong-result", definition={
        "processor": "external.command", "parameters": {"command": "copy-other"}})
    job = services.create_job(project_key="RES", series_id=series.id, template_name="wrong-result")
    job = services.run_job_inline(job.pk)
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("result invalid:") and "references 1 other series" in job.error
    assert "references none of the instances sent" in job.error
    assert JobStage.objects.get(job=job, name="verifying").status == "failed"
    assert SeriesState.objects.get(series=series).status == SeriesStatus.RESULT_INVALID.value
    assert not Result.objects.filter(job=job, verified=True).exists()
    assert info.series_uid not in job.error and other.series_uid not in job.error


def test_quality_control_approve_then_export(tmp_path, ct, django_user_model):
    _, series = ct
    reviewer = django_user_model.objects.create_user("reviewer")
    job = services.create_job(project_key="RES", series_id=series.id, template_name=CT_BODY_LUNGS,
                              out_dir=tmp_path / "out", require_qc=True)
    job = services.run_job_inline(job.pk)
    assert job.status == JobStatus.WAITING
    assert JobStage.objects.get(job=job, name="quality_control").status == "waiting"
    assert JobStage.objects.get(job=job, name="exporting").status == "pending"
    assert not (tmp_path / "out").exists()  # nothing leaves before a person approves
    following = services._decide_quality_control(job.pk, True, reviewer)
    assert following == "exporting"
    services.run_stage(job.pk, following)
    job.refresh_from_db()
    assert job.status == JobStatus.FINISHED
    assert len(list((tmp_path / "out").iterdir())) == 1
    assert LogEntry.objects.filter(job=job, message__contains="approved by reviewer").exists()
    with pytest.raises(InputError, match="not waiting for quality control"):
        services._decide_quality_control(job.pk, True, reviewer)


def test_quality_control_reject_fails_the_job(tmp_path, ct):
    _, series = ct
    job = services.create_job(project_key="RES", series_id=series.id, template_name=CT_BODY_LUNGS, require_qc=True)
    services.run_job_inline(job.pk)
    assert services._decide_quality_control(job.pk, False, reason="lungs too small") is None
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "lungs too small" in job.error
    assert JobStage.objects.get(job=job, name="exporting").status == "pending"
    assert services.run_stage(job.pk, "quality_control") is None  # no message passes a review
    # retry makes the result again and asks for a new review: nothing is exported unreviewed
    assert services._retry_job(job.pk) == "processing"
    job = services.run_job_inline(job.pk)
    assert job.status == JobStatus.WAITING
    assert JobStage.objects.get(job=job, name="processing").attempts == 2


def test_cancel_stops_the_job_and_stale_tasks_do_nothing(ct):
    _, series = ct
    job = services.create_job(project_key="RES", series_id=series.id)
    assert services.run_stage(job.pk, "checking") == "deidentifying"
    job = services._cancel_job(job.pk)
    assert job.status == JobStatus.CANCELLED
    assert services.run_stage(job.pk, "deidentifying") is None  # a queued message arriving late
    statuses = {s.name: s.status for s in job.stages.all()}
    assert statuses["checking"] == "done" and statuses["deidentifying"] == "cancelled"
    with pytest.raises(InputError, match="only a failed job"):
        services._retry_job(job.pk)


def test_stages_are_idempotent_and_in_order(ct):
    _, series = ct
    job = services.create_job(project_key="RES", series_id=series.id)
    assert services.run_stage(job.pk, "processing") is None  # out of order: its inputs do not exist yet
    assert JobStage.objects.get(job=job, name="processing").status == "pending"
    assert services.run_stage(job.pk, "checking") == "deidentifying"
    before = LogEntry.objects.filter(job=job).count()
    assert services.run_stage(job.pk, "checking") is None  # re-delivered
    assert LogEntry.objects.filter(job=job).count() == before
    assert JobStage.objects.get(job=job, name="checking").attempts == 1


def test_export_falls_back_when_the_node_is_unreachable(tmp_path, ct, processors_registry):
    info, series = ct
    processors_registry(export_roots=[tmp_path])
    DicomNode.objects.create(name="nobody", ae_title="NOBODY", host="127.0.0.1", port=free_port())
    _template("ct-fallback", destinations=[{
        "type": "dicom", "node": "nobody", "timeout": 5,
        "fallback": {"type": "folder", "path": str(tmp_path / "fallback")}}])
    job = services.create_job(project_key="RES", series_id=series.id, template_name="ct-fallback")
    job = services.run_job_inline(job.pk)
    assert job.status == JobStatus.FINISHED, job.error
    [copy] = (tmp_path / "fallback").iterdir()
    assert pydicom.dcmread(copy).PatientID == PATIENT.patient_id
    assert LogEntry.objects.filter(job=job, level="WARNING", message__contains="fallback destination used").exists()
    [result] = Result.objects.filter(job=job)
    assert result.exported_to[0]["fallback_used"] is True and result.exported_to[0]["ok"] is True
    assert selectors.job_summary(job.pk)["results"] == [str(copy)]
    with zipfile.ZipFile(services.job_results_zip(job.pk)) as zf:
        assert zf.namelist() == [copy.name]


def test_export_failure_without_fallback_is_export_failed_and_retry_works(tmp_path, ct, processors_registry):
    _, series = ct
    processors_registry(export_roots=[tmp_path])
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the export folder should be")
    _template("ct-bad-folder", destinations=[{"type": "folder", "path": str(blocker / "sub")}])
    job = services.create_job(project_key="RES", series_id=series.id, template_name="ct-bad-folder")
    job = services.run_job_inline(job.pk)
    assert job.status == JobStatus.FAILED and job.error.startswith("export failed:")
    assert SeriesState.objects.get(series=series).status == SeriesStatus.EXPORT_FAILED.value
    blocker.unlink()
    assert services._retry_job(job.pk) == "exporting"
    job = services.run_job_inline(job.pk)
    assert job.status == JobStatus.FINISHED
    assert len(list((blocker / "sub").iterdir())) == 1
    assert SeriesState.objects.get(series=series).status == SeriesStatus.RESULT_EXPORTED.value


def test_unknown_processor_and_template_mismatch_fail_with_reasons(tmp_path, ct):
    _, series = ct
    Template.objects.create(name="ghost", definition={"processor": "ghost.proc"})
    job = services.run_job_inline(services.create_job(project_key="RES", series_id=series.id,
                                                      template_name="ghost").pk)
    assert "unknown processor 'ghost.proc'" in job.error
    assert set(processor_names()) >= {"builtin.ct_body_lungs", "external.command"}
    mr = write_image_series(tmp_path / "mr", patient=PATIENT, modality="MR", n_slices=12, rows=16, cols=16, seed="mr")
    import_paths([tmp_path / "mr"], workers=1)
    mr_series = Series.objects.get(series_instance_uid=mr.series_uid)
    job = services.run_job_inline(services.create_job(project_key="RES", series_id=mr_series.id,
                                                      template_name=CT_BODY_LUNGS).pk)
    assert job.status == JobStatus.FAILED and "needs modality CT" in job.error
    job = services.run_job_inline(services.create_job(project_key="RES", series_id=mr_series.id).pk)
    assert job.status == JobStatus.FAILED and "RULE_NOT_MATCHED" in job.error


def test_external_command_timeout_is_reported(tmp_path, ct, processors_registry):
    _, series = ct
    processors_registry(commands={"slow": {"argv": [sys.executable, "-c", "import time; time.sleep(30)"],
                                           "timeout_seconds": 1}})
    Template.objects.create(name="slow", definition={"processor": "external.command", "parameters": {
        "command": "slow"}})
    job = services.run_job_inline(services.create_job(project_key="RES", series_id=series.id,
                                                      template_name="slow").pk)
    assert job.status == JobStatus.FAILED and "did not finish within 1 s" in job.error


def test_log_selectors_filter_by_level_stage_and_status(ct):
    _, series = ct
    Template.objects.create(name="ghost2", definition={"processor": "ghost.proc"})
    failed = services.run_job_inline(services.create_job(project_key="RES", series_id=series.id,
                                                         template_name="ghost2").pk)
    errors = selectors.log_entries(level="ERROR", job_status=JobStatus.FAILED)
    assert errors.filter(job=failed, stage="processing").count() == 1
    assert not selectors.log_entries(level="ERROR", job_status=JobStatus.FINISHED).filter(job=failed).exists()
    assert selectors.log_entries(job_id=failed.pk, stage="checking").filter(message__contains="RULE_MATCHED").exists()
    assert selectors.log_entries(series_status=SeriesStatus.ERROR.value, search="unknown processor").exists()


def test_job_needs_exactly_one_input(tmp_path):
    with pytest.raises(InputError, match="either a catalogued series or a folder"):
        services.create_job(project_key="RES")
    with pytest.raises(InputError, match="project key"):
        services.create_job(project_key="../evil", input_path=tmp_path)
    assert not Job.objects.exists()


def test_stale_running_stage_is_failed_and_can_be_retried(ct):
    from datetime import timedelta

    from django.utils import timezone

    _, series = ct
    job = services.create_job(project_key="RES", series_id=series.id)
    assert services._claim(job.pk, "checking")  # a worker took the stage ... and died
    assert services.run_stage(job.pk, "checking") is None  # the re-delivered message leaves it alone
    assert services.fail_stale_stages(3600) == []  # not old yet
    JobStage.objects.filter(job=job, name="checking").update(started_at=timezone.now() - timedelta(hours=2))
    assert services.fail_stale_stages(3600) == [job.pk]
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "did not finish within 3600 s" in job.error
    assert services._retry_job(job.pk) == "checking"
    assert services.run_job_inline(job.pk).status == JobStatus.FINISHED


def test_project_row_options_drive_the_deidentification(ct):
    from dicomflow.projects.models import Project

    _, series = ct
    Project.objects.create(key="RESPROJ", name="Results project", uid_root="1.2.826.0.1.3680043.10.543")
    job = services.run_job_inline(services.create_job(project_key="RESPROJ", series_id=series.id).pk)
    assert job.status == JobStatus.FINISHED, job.error
    assert job.state["deid_series_uid"].startswith("1.2.826.0.1.3680043.10.543.")
    other = services.run_job_inline(services.create_job(project_key="RES-NO-ROW", series_id=series.id).pk)
    assert not other.state["deid_series_uid"].startswith("1.2.826.0.1.3680043.10.543.")


def test_job_uses_the_template_chosen_by_hand(ct):
    from dicomflow.processing.models import Ruleset

    _, series = ct
    Ruleset.objects.filter(name="ct-images").update(enabled=False)
    services.evaluate_series([series.id], override_manual=True)
    assert SeriesState.objects.get(series=series).status == SeriesStatus.RULE_NOT_MATCHED.value
    services.choose_template(series.id, CT_BODY_LUNGS)
    job = services.create_job(project_key="RES", series_id=series.id)
    assert job.template.name == CT_BODY_LUNGS
    job = services.run_job_inline(job.pk)
    assert job.status == JobStatus.FINISHED, job.error
    assert SeriesState.objects.get(series=series).status == SeriesStatus.RESULT_RECEIVED.value  # no destination
