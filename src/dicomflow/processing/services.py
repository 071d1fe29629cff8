"""Processing services (writes): built-in definitions, rule evaluation, jobs and their stages.

Every change of a job goes through here; Celery tasks, the admin and the CLI only call these.
Stages are claimed with conditional updates (``pending`` → ``running``), so a re-delivered task for
a stage that is running or done changes nothing. The work of each stage is in :mod:`.pipeline`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from dicomflow.core.rules import (
    SeriesContext,
    SeriesStatus,
    builtin_templates,
    default_rulesets,
    evaluate_series as core_evaluate_series,
    template_problems,
)
from dicomflow.errors import DicomflowError, InputError
from dicomflow.processing.models import (
    STAGE_ORDER,
    Job,
    JobStage,
    JobStatus,
    LogEntry,
    LogLevel,
    Ruleset,
    SeriesState,
    Stage,
    StageStatus,
    Template,
)

log = logging.getLogger(__name__)


# --- processing log -------------------------------------------------------------------------------
def write_log(message: str, *, level: str = LogLevel.INFO, job: Job | int | None = None, series_id: int | None = None,
              stage: str = "") -> LogEntry:
    """One processing-log line. Callers pass messages without identifying values."""
    job_id = job.pk if isinstance(job, Job) else job
    entry = LogEntry.objects.create(level=level, job_id=job_id, series_id=series_id, stage=stage, message=message)
    log.log(logging.getLevelName(level) if isinstance(logging.getLevelName(level), int) else logging.INFO,
            "job %s %s: %s", job_id, stage or "-", message.splitlines()[0] if message else "")
    return entry


# --- built-in definitions -------------------------------------------------------------------------
def ensure_builtin_templates() -> tuple[int, int]:
    """Create the shipped templates and rulesets when missing (never overwrites edits); idempotent."""
    made_templates = made_rulesets = 0
    for name, template in builtin_templates().items():
        _, created = Template.objects.get_or_create(name=name, defaults={"definition": template.to_dict(),
                                                                          "builtin": True})
        made_templates += created
    for order, ruleset in enumerate(default_rulesets()):
        _, created = Ruleset.objects.get_or_create(
            name=ruleset.name,
            defaults={"definition": ruleset.to_dict(), "enabled": ruleset.enabled, "order": order, "builtin": True},
        )
        made_rulesets += created
    return made_templates, made_rulesets


def get_template(name: str) -> Template:
    try:
        return Template.objects.get(name=name)
    except Template.DoesNotExist:
        known = ", ".join(Template.objects.values_list("name", flat=True)) or "none"
        raise InputError(f"no template named '{name}' (known: {known})") from None


# --- rules ---------------------------------------------------------------------------------------------
def instance_paths(series_id: int) -> list[Path]:
    """Stored files of a series in instance-number order."""
    from dicomflow.catalog.models import Instance

    rows = (Instance.objects.filter(series_id=series_id).order_by("instance_number", "sop_instance_uid")
            .values_list("stored_path", flat=True))
    return [Path(settings.STORE_DIR) / rel for rel in rows]


def series_context(series_id: int) -> SeriesContext:
    """What rules see of a catalogued series: its first instance's header and the instance count."""
    paths = instance_paths(series_id)
    if not paths:
        raise InputError(f"series #{series_id} has no catalogued instances")
    return SeriesContext.from_file(paths[0], instance_count=len(paths))


def _state(series_id: int) -> SeriesState:
    state, _ = SeriesState.objects.get_or_create(series_id=series_id)
    return state


def set_series_status(series_id: int | None, status: SeriesStatus) -> None:
    if series_id is None:
        return
    SeriesState.objects.update_or_create(series_id=series_id, defaults={"status": status.value})


def evaluate_series(series_ids: Iterable[int], job: Job | None = None, *, override_manual: bool = False
                    ) -> list[SeriesState]:
    """Apply every enabled ruleset to each series; store status, template and explanation.

    A template chosen by hand stays (its state is returned as it is) unless ``override_manual``.
    """
    rows = list(Ruleset.objects.all())
    rulesets = [r.core() for r in rows]
    templates = {t.name: t for t in Template.objects.all()}
    states = []
    for series_id in series_ids:
        existing = SeriesState.objects.filter(series_id=series_id).first()
        if existing and not override_manual and (existing.explanation or {}).get("chosen_by_hand"):
            states.append(existing)
            continue
        try:
            context = series_context(series_id)
        except DicomflowError as exc:
            state = _state(series_id)
            state.status, state.template = SeriesStatus.ERROR.value, None
            state.explanation = {"summary": str(exc)}
            state.evaluated_at = timezone.now()
            state.save()
            write_log(f"rules: series cannot be evaluated ({exc})", level=LogLevel.ERROR, series_id=series_id, job=job,
                      stage=Stage.CHECKING if job else "")
            states.append(state)
            continue
        evaluation = core_evaluate_series(context, rulesets, templates)
        state = _state(series_id)
        state.status = evaluation.status.value
        state.template = templates.get(evaluation.template) if evaluation.template else None
        state.explanation = evaluation.explanation()
        state.chosen_by = None
        state.evaluated_at = timezone.now()
        state.save()
        write_log(f"rules: {evaluation.status.value}: {evaluation.summary}", series_id=series_id, job=job,
                  stage=Stage.CHECKING if job else "")
        states.append(state)
    return states


def evaluate_new_series() -> list[SeriesState]:
    """Evaluate every clinical series that has no processing state yet (hook after imports)."""
    from dicomflow.catalog.models import Series

    pending = Series.objects.filter(processing_state__isnull=True)
    if any(f.name == "project" for f in Series._meta.get_fields()):
        pending = pending.filter(project__isnull=True)  # de-identified project copies are not clinical input
    return evaluate_series(list(pending.values_list("id", flat=True)))


def auto_project_key() -> str:
    """The project new rule-matched series are processed for automatically ('' = off).

    ``DICOMFLOW_AUTO_PROCESS_PROJECT``: the DRAW way — a series arrives, its rule matches, the job
    starts with no one clicking. Off by default: processing needs a project chosen on purpose.
    """
    return settings.DICOMFLOW_AUTO_PROCESS_PROJECT


def auto_start_jobs(states: Iterable[SeriesState], project_key: str) -> list[Job]:
    """A job for every RULE_MATCHED series that never had one (idempotent); the caller starts them."""
    jobs = []
    for state in states:
        if state.status != SeriesStatus.RULE_MATCHED.value or state.template_id is None:
            continue
        if Job.objects.filter(series_id=state.series_id).exists():
            continue
        jobs.append(create_job(project_key=project_key, series_id=state.series_id, template_name=state.template.name))
    return jobs


def choose_template(series_id: int, template_name: str, user=None) -> SeriesState:
    """A person picks the template for a series by hand (checked against the template's requirements)."""
    template = get_template(template_name)
    problems = template_problems(template.core(), series_context(series_id))
    if problems:
        raise InputError("; ".join(problems))
    state = _state(series_id)
    state.status = SeriesStatus.RULE_MATCHED.value
    state.template = template
    state.chosen_by = user
    state.explanation = {**(state.explanation or {}), "summary": f"template '{template.name}' chosen by hand",
                         "chosen_by_hand": True}
    state.evaluated_at = timezone.now()
    state.save()
    write_log(f"rules: template '{template.name}' chosen by hand", series_id=series_id)
    return state


# --- jobs ------------------------------------------------------------------------------------------------
def create_job(*, project_key: str, series_id: int | None = None, input_path: str | Path | None = None,
               template_name: str | None = None, out_dir: str | Path | None = None, require_qc: bool = False,
               created_by=None) -> Job:
    """A job for a catalogued series or for a folder to import first; stages created pending."""
    from dicomflow.core.deid import KeyStore

    if (series_id is None) == (input_path is None):
        raise InputError("a job needs either a catalogued series or a folder to import, not both")
    KeyStore(settings.PROJECT_KEYS_DIR)._path(project_key, ".key")  # validates the key's spelling (raises InputError)
    if input_path is not None and not Path(input_path).exists():
        raise InputError(f"{input_path} does not exist")
    template = get_template(template_name) if template_name else None
    if template is None and series_id is not None:
        state = SeriesState.objects.filter(series_id=series_id).first()
        template = state.template if state and state.status == SeriesStatus.RULE_MATCHED.value else None
    qc = require_qc or bool(template and template.definition.get("parameters", {}).get("quality_control"))
    with transaction.atomic():
        job = Job.objects.create(
            series_id=series_id, input_path=str(Path(input_path).resolve()) if input_path else "", template=template,
            project_key=project_key, out_dir=str(Path(out_dir).resolve()) if out_dir else "", require_qc=qc,
            created_by=created_by,
        )
        skipped = {Stage.UPLOADING.value}  # local files and catalogued series need no upload
        if series_id is not None:
            skipped.add(Stage.IMPORTING.value)
        JobStage.objects.bulk_create(
            JobStage(job=job, name=name, order=i,
                     status=StageStatus.SKIPPED if name in skipped else StageStatus.PENDING)
            for i, name in enumerate(STAGE_ORDER)
        )
        write_log("job created", job=job, series_id=series_id)
    return job


def next_stage(job_id: int) -> str | None:
    """The first pending stage of a job (None when none is left)."""
    row = JobStage.objects.filter(job_id=job_id, status=StageStatus.PENDING).order_by("order").first()
    return row.name if row else None


def _claim(job_id: int, name: str) -> bool:
    """pending → running for this stage of a live job; False when someone else has it or it is over."""
    now = timezone.now()
    with transaction.atomic():
        job = Job.objects.filter(pk=job_id).first()
        if job is None or job.status in (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.FINISHED):
            return False
        earlier = JobStage.objects.filter(job_id=job_id, order__lt=STAGE_ORDER.index(name)).exclude(
            status__in=(StageStatus.DONE, StageStatus.SKIPPED))
        if earlier.exists():
            return False  # out of order (a stale message): the stage before must finish first
        taken = JobStage.objects.filter(job_id=job_id, name=name, status=StageStatus.PENDING).update(
            status=StageStatus.RUNNING, started_at=now, finished_at=None, error="", attempts=F("attempts") + 1)
        if not taken:
            return False
        Job.objects.filter(pk=job_id).update(status=JobStatus.RUNNING, current_stage=name, updated_at=now)
        Job.objects.filter(pk=job_id, started_at__isnull=True).update(started_at=now)
    return True


def update_progress(job_id: int, name: str, done: int, total: int) -> None:
    JobStage.objects.filter(job_id=job_id, name=name).update(done=done, total=total)


def run_stage(job_id: int, name: str) -> str | None:
    """Run one stage if it is pending; returns the next stage to run (None: stop here)."""
    from dicomflow.processing import pipeline

    if name == Stage.QUALITY_CONTROL.value:
        return None  # a person decides (decide_quality_control); no message may pass it
    if not _claim(job_id, name):
        return None
    job = Job.objects.get(pk=job_id)
    if job.cancel_requested:
        _cancel_now(job)
        return None
    write_log(f"{Stage(name).label}: started", job=job, series_id=job.series_id, stage=name)
    try:
        pipeline.STAGES[name](job)
    except DicomflowError as exc:
        fail_stage(job_id, name, str(exc))
        return None
    except Exception as exc:  # never leak values: the class name only; details in the worker log
        log.exception("job %s stage %s crashed", job_id, name)
        fail_stage(job_id, name, f"internal error in {Stage(name).label.lower()} ({exc.__class__.__name__})")
        return None
    return _finish_stage(job_id, name)


def _finish_stage(job_id: int, name: str) -> str | None:
    now = timezone.now()
    with transaction.atomic():
        JobStage.objects.filter(job_id=job_id, name=name, status=StageStatus.RUNNING).update(
            status=StageStatus.DONE, finished_at=now)
        job = Job.objects.get(pk=job_id)
        write_log(f"{Stage(name).label}: done", job=job, series_id=job.series_id, stage=name)
        if job.cancel_requested:
            _cancel_now(job)
            return None
        upcoming = next_stage(job_id)
        if upcoming == Stage.QUALITY_CONTROL.value and not job.require_qc:
            JobStage.objects.filter(job_id=job_id, name=upcoming).update(status=StageStatus.SKIPPED)
            upcoming = next_stage(job_id)
        if upcoming == Stage.QUALITY_CONTROL.value:
            JobStage.objects.filter(job_id=job_id, name=upcoming).update(status=StageStatus.WAITING, started_at=now)
            Job.objects.filter(pk=job_id).update(status=JobStatus.WAITING_QC, current_stage=upcoming)
            write_log("Quality control: waiting for a person to approve or reject the result", job=job,
                      series_id=job.series_id, stage=upcoming)
            return None
        if upcoming is None:
            Job.objects.filter(pk=job_id).update(status=JobStatus.FINISHED, finished_at=now, current_stage="")
            write_log("job finished", job=job, series_id=job.series_id)
        return upcoming


def fail_stage(job_id: int, name: str, reason: str) -> None:
    now = timezone.now()
    with transaction.atomic():
        JobStage.objects.filter(job_id=job_id, name=name).update(status=StageStatus.FAILED, finished_at=now,
                                                                  error=reason)
        Job.objects.filter(pk=job_id).update(status=JobStatus.FAILED, error=reason, finished_at=now,
                                             current_stage=name)
        job = Job.objects.get(pk=job_id)
        write_log(f"{Stage(name).label}: failed: {reason}", level=LogLevel.ERROR, job=job, series_id=job.series_id,
                  stage=name)
        state = SeriesState.objects.filter(series_id=job.series_id).first() if job.series_id else None
        failed_statuses = {SeriesStatus.DEIDENTIFICATION_FAILED.value, SeriesStatus.RESULT_INVALID.value,
                           SeriesStatus.EXPORT_FAILED.value}
        if state is not None and state.status not in failed_statuses:
            state.status = SeriesStatus.ERROR.value
            state.save(update_fields=["status", "updated_at"])


def fail_stale_stages(older_than_seconds: float) -> list[int]:
    """Fail stages 'running' for longer than allowed (their worker died): they can then be retried.

    A re-delivered message cannot tell a dead worker from a busy one, so it never takes a running
    stage over; this sweep does, once the stage is older than any stage may take.
    """
    limit = timezone.now() - timedelta(seconds=older_than_seconds)
    stale = list(JobStage.objects.filter(status=StageStatus.RUNNING, started_at__lt=limit)
                 .values_list("job_id", "name"))
    for job_id, name in stale:
        fail_stage(job_id, name, f"{Stage(name).label} did not finish within {older_than_seconds:.0f} s "
                                 "(the worker stopped?); retry the job")
    return [job_id for job_id, _ in stale]


def retry_job(job_id: int) -> str:
    """Put the failed stage back to pending; returns it (the caller runs or enqueues it)."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.status != JobStatus.FAILED:
            raise InputError(f"job #{job_id} is {job.get_status_display().lower()}; only a failed job can be retried")
        stage = JobStage.objects.filter(job_id=job_id, status=StageStatus.FAILED).order_by("order").first()
        if stage is None:
            raise InputError(f"job #{job_id} has no failed stage")
        if stage.name == Stage.QUALITY_CONTROL:  # a rejected result is made again, then reviewed again
            JobStage.objects.filter(job_id=job_id, order__gte=STAGE_ORDER.index(Stage.PROCESSING.value)).exclude(
                status=StageStatus.SKIPPED).update(status=StageStatus.PENDING, error="", done=0)
            stage = JobStage.objects.get(job_id=job_id, name=Stage.PROCESSING)
        stage.status, stage.error, stage.done = StageStatus.PENDING, "", 0
        stage.save(update_fields=["status", "error", "done"])
        job.status, job.error, job.finished_at, job.cancel_requested = JobStatus.PENDING, "", None, False
        job.save(update_fields=["status", "error", "finished_at", "cancel_requested", "updated_at"])
        write_log(f"{stage.get_name_display()}: retry requested", job=job, series_id=job.series_id, stage=stage.name)
    return stage.name


def _cancel_now(job: Job) -> None:
    now = timezone.now()
    JobStage.objects.filter(job_id=job.pk, status__in=(StageStatus.PENDING, StageStatus.RUNNING,
                                                        StageStatus.WAITING)).update(
        status=StageStatus.CANCELLED, finished_at=now)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.CANCELLED, finished_at=now)
    write_log("job cancelled", level=LogLevel.WARNING, job=job, series_id=job.series_id)


def cancel_job(job_id: int) -> Job:
    """Stop a job: at once when nothing runs, else after the running stage (checked between stages)."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.status in (JobStatus.FINISHED, JobStatus.CANCELLED):
            return job
        job.cancel_requested = True
        job.save(update_fields=["cancel_requested", "updated_at"])
        if not JobStage.objects.filter(job_id=job_id, status=StageStatus.RUNNING).exists():
            _cancel_now(job)
        else:
            write_log("cancel requested: stopping after the running stage", level=LogLevel.WARNING, job=job,
                      series_id=job.series_id)
    job.refresh_from_db()
    return job


def decide_quality_control(job_id: int, approved: bool, user=None, reason: str = "") -> str | None:
    """A person approves (export follows; returns that stage) or rejects (job fails) the result."""
    now = timezone.now()
    with transaction.atomic():
        taken = JobStage.objects.filter(job_id=job_id, name=Stage.QUALITY_CONTROL, status=StageStatus.WAITING).update(
            status=StageStatus.DONE if approved else StageStatus.FAILED, finished_at=now,
            error="" if approved else (reason or "rejected in quality control"))
        if not taken:
            raise InputError(f"job #{job_id} is not waiting for quality control")
        job = Job.objects.get(pk=job_id)
        who = getattr(user, "username", "") or "a reviewer"
        if approved:
            Job.objects.filter(pk=job_id).update(status=JobStatus.PENDING)
            write_log(f"Quality control: approved by {who}", job=job, series_id=job.series_id,
                      stage=Stage.QUALITY_CONTROL)
            return next_stage(job_id)
    fail_stage(job_id, Stage.QUALITY_CONTROL.value, f"rejected in quality control by {who}"
               + (f": {reason}" if reason else ""))
    return None


def job_results_zip(job_id: int) -> Path:
    """The job's re-identified results as one ZIP (re-made on each call) for download."""
    from dicomflow.processing.models import Result
    from dicomflow.processing.pipeline import job_dir
    from dicomflow.processing.results import results_zip

    files = [Path(p) for p in Result.objects.filter(job_id=job_id, reidentified=True).values_list("path", flat=True)]
    if not files:
        raise InputError(f"job #{job_id} has no re-identified results yet")
    job = Job.objects.get(pk=job_id)
    return results_zip(files, job_dir(job) / f"results-job-{job_id}.zip")


def run_job_inline(job_id: int) -> Job:
    """Run every pending stage in this process (the CLI): the same services the worker runs."""
    stage = next_stage(job_id)
    while stage:
        stage = run_stage(job_id, stage)
    return Job.objects.get(pk=job_id)
