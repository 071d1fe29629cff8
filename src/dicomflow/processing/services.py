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
from dicomflow.errors import DicomflowError, InputError, NotFoundError, PermissionDeniedError
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
from dicomflow.projects.models import Capability
from dicomflow.progress import Lease, ProgressReporter, failure_policy, lease_dead, lease_duration, lease_owner
from dicomflow.progress import fail as fail_rows
from dicomflow.progress import finish as finish_rows

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


# Statuses in which the rules' decision may still change: no job took the series on yet.
_UNDECIDED = frozenset({SeriesStatus.UNPROCESSED.value, SeriesStatus.RULE_MATCHED.value,
                        SeriesStatus.RULE_NOT_MATCHED.value, SeriesStatus.MULTIPLE_RULES_MATCHED.value,
                        SeriesStatus.NO_TEMPLATE_FOUND.value, SeriesStatus.CHECK_FAILED.value})


def _clinical_input(series_qs):
    """Series that are processing input: the clinical pool, not project copies nor our own results."""
    return (series_qs.filter(project__isnull=True)  # de-identified project copies are not clinical input
            .exclude(instances__received_from__startswith=RESULTS_SOURCE)  # our own results are no input
            .filter(processing_excluded=""))  # kept out by the source's intake filter (localizers, scouts)


def _last_received(series_ref: str = "pk"):
    """Subquery: when the newest instance of the series (``OuterRef(series_ref)``) arrived."""
    from django.db.models import OuterRef, Subquery

    from dicomflow.catalog.models import Instance

    return Subquery(Instance.objects.filter(series_id=OuterRef(series_ref)).order_by("-received_at")
                    .values("received_at")[:1])


def series_to_evaluate(series_ids: Iterable[int] | None = None) -> list[int]:
    """Clinical series (of ``series_ids``, or all) the rules have not decided on yet, or whose decision
    is older than their newest instance (more of the series arrived since), and that no person and no
    job has taken on. Each series is decided once; a series arriving in parts is decided again on the
    whole."""
    from django.db.models import Exists, F, OuterRef, Q

    from dicomflow.catalog.models import Series

    qs = Series.objects.all() if series_ids is None else Series.objects.filter(pk__in=list(series_ids))
    qs = (_clinical_input(qs).annotate(last_received=_last_received(),
                                       has_job=Exists(Job.objects.filter(series_id=OuterRef("pk"))))
          .filter(Q(processing_state__isnull=True)
                  | Q(processing_state__status__in=_UNDECIDED, processing_state__chosen_by__isnull=True,
                      processing_state__evaluated_at__lt=F("last_received"), has_job=False)))
    return sorted(set(qs.values_list("id", flat=True)))


def evaluate_new_series(series_ids: Iterable[int] | None = None) -> list[SeriesState]:
    """Evaluate the series :func:`series_to_evaluate` names (hook after imports)."""
    return evaluate_series(series_to_evaluate(series_ids))


# --- the automatic path ---------------------------------------------------------------------------------------
def automatic_project(template: Template) -> str:
    """The project whose keys de-identify the template's automatically processed series ('' = none)."""
    return template.auto_project or settings.DICOMFLOW_AUTO_PROCESS_PROJECT


def automatic_candidates(series_ids: Iterable[int] | None = None):
    """States of clinical series the rules gave a template with automatic processing, catalogued since
    it was switched on, with no job yet and no template chosen by hand (a person decides those),
    annotated with ``last_received``."""
    from django.db.models import Exists, F, OuterRef, Q

    from dicomflow.catalog.models import Series

    qs = (SeriesState.objects.filter(status=SeriesStatus.RULE_MATCHED.value, template__auto_process=True,
                                     chosen_by__isnull=True,
                                     series__in=_clinical_input(Series.objects.all()))
          .filter(Q(template__auto_since__isnull=True) | Q(series__created_at__gte=F("template__auto_since")))
          .filter(~Exists(Job.objects.filter(series_id=OuterRef("series_id"))))
          .select_related("template").annotate(last_received=_last_received("series_id")))
    if series_ids is not None:
        qs = qs.filter(series_id__in=list(series_ids))
    return qs.order_by("series_id")


def start_automatic_jobs(series_ids: Iterable[int] | None = None, *, quiet_seconds: float | None = None
                         ) -> tuple[list[Job], float | None]:
    """Start the automatic job of every candidate series (:func:`automatic_candidates`) whose newest
    instance arrived at least ``quiet_seconds`` ago (default ``DICOMFLOW_AUTO_PROCESS_QUIET_SECONDS``).

    A series decided on part of itself is evaluated again first; one whose template's blocking
    check findings fail gets ``CHECK_FAILED`` and no job (a person decides). Returns the jobs
    started (enqueued on commit) and, when candidates are not quiet yet, the seconds until the
    first of them will be (None when none waits). One job per series, also when several workers
    ask at once: the database's unique constraint on automatic jobs decides.
    """
    quiet = settings.DICOMFLOW_AUTO_PROCESS_QUIET_SECONDS if quiet_seconds is None else max(float(quiet_seconds), 0)
    now = timezone.now()
    cutoff = now - timedelta(seconds=quiet)
    started, wait = [], None
    for state in automatic_candidates(series_ids):
        if (state.explanation or {}).get("chosen_by_hand") or state.last_received is None:
            continue
        if state.last_received > cutoff:  # still arriving: wait until it has been quiet long enough
            remaining = (state.last_received - cutoff).total_seconds()
            wait = remaining if wait is None else min(wait, remaining)
            continue
        if state.evaluated_at is None or state.evaluated_at < state.last_received:
            [state] = evaluate_series([state.series_id])  # decided on a part: decide on the whole series
            if state.status != SeriesStatus.RULE_MATCHED.value or not (state.template and state.template.auto_process):
                continue
        job = _start_automatic_job(state)
        if job is not None:
            started.append(job)
    return started, wait


def _start_automatic_job(state: SeriesState) -> Job | None:
    from django.db import IntegrityError

    from dicomflow.accounts import audit
    from dicomflow.accounts.models import AuditAction
    from dicomflow.processing import pipeline, tasks

    template, series_id = state.template, state.series_id
    project_key = automatic_project(template)
    if not project_key:
        write_log(f"automatic processing: template '{template.name}' names no project and "
                  "DICOMFLOW_AUTO_PROCESS_PROJECT is empty; the series waits for a person", level=LogLevel.WARNING,
                  series_id=series_id)
        return None
    blockers = pipeline.blocking_findings(series_id, template)
    if blockers:
        state.status = SeriesStatus.CHECK_FAILED.value
        state.explanation = {**(state.explanation or {}), "summary": f"{len(blockers)} finding(s) block template "
                             f"'{template.name}': " + "; ".join(blockers[:5]), "blocking_findings": blockers[:20]}
        state.save(update_fields=["status", "explanation", "updated_at"])
        write_log(f"automatic processing: not started, {len(blockers)} check finding(s) block template "
                  f"'{template.name}': " + "; ".join(blockers[:5]), level=LogLevel.WARNING, series_id=series_id)
        return None
    try:
        with transaction.atomic():
            job = create_job(project_key=project_key, series_id=series_id, template_name=template.name,
                             automatic=True)
            write_log(f"started automatically: the rules chose template '{template.name}', de-identified with "
                      f"the keys of project '{project_key}'", job=job, series_id=series_id)
            audit.record(None, AuditAction.AUTO_PROCESS, project=project_key, obj=f"job #{job.pk}",
                         detail=f"series #{series_id} sent for processing automatically (template '{template.name}')")
            tasks.dispatch(job.pk, next_stage(job.pk))
    except IntegrityError:  # another worker started this series' job first
        return None
    return job


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
               created_by=None, automatic: bool = False) -> Job:
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
            created_by=created_by, automatic=automatic,
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
    """pending → running for this stage of a live job, under this process's lease; a stage running
    under the lease of a dead worker is taken over. False when someone alive has it or it is over."""
    now = timezone.now()
    lease = {"lease_owner": lease_owner(), "lease_until": now + lease_duration()}
    with transaction.atomic():
        job = Job.objects.filter(pk=job_id).first()
        if job is None or job.is_over:
            return False
        earlier = JobStage.objects.filter(job_id=job_id, order__lt=STAGE_ORDER.index(name)).exclude(
            status__in=(StageStatus.DONE, StageStatus.SKIPPED))
        if earlier.exists():
            return False  # out of order (a stale message): the stage before must finish first
        taken = JobStage.objects.filter(job_id=job_id, name=name, status=StageStatus.PENDING).update(
            status=StageStatus.RUNNING, started_at=now, finished_at=None, error="", done=0, total=0,
            attempts=F("attempts") + 1)
        if not taken:
            if job.stage != name or not lease_dead(job):
                return False
            # its worker died mid-stage: run the stage again from the start under our lease
            if not Job.objects.filter(pk=job_id, lease_owner=job.lease_owner, lease_until=job.lease_until).update(
                    done=0, total=0, updated_at=now, **lease):
                return False
            JobStage.objects.filter(job_id=job_id, name=name, status=StageStatus.RUNNING).update(
                started_at=now, error="", done=0, total=0, attempts=F("attempts") + 1)
            log.warning("processing job %s: the worker of stage %s died; taken over", job_id, name)
            return True
        Job.objects.filter(pk=job_id).update(status=JobStatus.RUNNING, stage=name, done=0, total=0, updated_at=now,
                                             **lease)
        Job.objects.filter(pk=job_id, started_at__isnull=True).update(started_at=now)
    return True


# The reporter of each stage running in this process (``run_stage`` sets it up, the pipeline reports).
_reporters: dict[tuple[int, str], ProgressReporter] = {}


def _stage_reporter(job_id: int, name: str) -> ProgressReporter:
    """The shared reporter, writing done/total on the stage's row and the job's."""
    return ProgressReporter(Job.objects.filter(pk=job_id), JobStage.objects.filter(job_id=job_id, name=name),
                            start=(name, 0, 0))


def update_progress(job_id: int, name: str, done: int, total: int) -> None:
    """Progress of a running stage (throttled: about 100 writes per stage, the last one always)."""
    (_reporters.get((job_id, name)) or _stage_reporter(job_id, name))(name, done, total)


def run_stage(job_id: int, name: str) -> str | None:
    """Run one stage if it is pending; returns the next stage to run (None: stop here)."""
    from dicomflow.processing import pipeline

    if name == Stage.QUALITY_CONTROL.value:
        return None  # a person decides (approve_qc / reject_qc); no message may pass it
    if not _claim(job_id, name):
        return None
    job = Job.objects.get(pk=job_id)
    if job.cancel_requested:
        _cancel_now(job)
        return None
    write_log(f"{Stage(name).label}: started", job=job, series_id=job.series_id, stage=name)
    report = _reporters[(job_id, name)] = _stage_reporter(job_id, name)
    try:  # the shared failure policy: a DicomflowError's message, else the class name only
        with Lease(Job.objects.filter(pk=job_id), lease_owner()), failure_policy(
                Stage(name).label, lambda reason: fail_stage(job_id, name, reason), ref=f"of job {job_id}") as outcome:
            pipeline.STAGES[name](job)
    finally:
        _reporters.pop((job_id, name), None)
        report.flush()
    return None if outcome.failed else _finish_stage(job_id, name)


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
            Job.objects.filter(pk=job_id).update(status=JobStatus.WAITING, stage=upcoming, done=0, total=0)
            write_log("Quality control: waiting for a person to approve or reject the result", job=job,
                      series_id=job.series_id, stage=upcoming)
            return None
        if upcoming is None:
            finish_rows(Job.objects.filter(pk=job_id), stage="")
            write_log("job finished", job=job, series_id=job.series_id)
        return upcoming


def fail_stage(job_id: int, name: str, reason: str) -> None:
    now = timezone.now()
    with transaction.atomic():
        JobStage.objects.filter(job_id=job_id, name=name).update(status=StageStatus.FAILED, finished_at=now,
                                                                  error=reason)
        fail_rows(Job.objects.filter(pk=job_id), reason, stage=name)
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


def _retry_job(job_id: int) -> str:
    """Put the failed stage back to pending; returns it (the caller runs or enqueues it).

    The engine's step; people act through :func:`retry_job` (permission-checked).
    """
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


def _cancel_job(job_id: int) -> Job:
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


def _decide_quality_control(job_id: int, approved: bool, user=None, reason: str = "") -> str | None:
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


# --- what people do: permission-checked, audited ------------------------------------------------------------
# The admin, the CLI, the API and the web pages call these (and nothing else) to act on jobs,
# templates and rulesets. Each takes the acting user (or the CLI operator) first.
def _active(actor) -> bool:
    from dicomflow.accounts.actors import is_active_user

    return is_active_user(actor)


def _everywhere(actor) -> bool:
    """Superusers and the command-line operator act in every project (re-identification aside)."""
    from dicomflow.accounts.actors import is_operator

    return _active(actor) and (actor.is_superuser or is_operator(actor))


def _creator(actor):
    """The user to store as ``created_by`` (the operator is no database user)."""
    return actor if getattr(actor, "pk", None) else None


def require_project(actor, project_key: str, capability: str):
    """The project ``project_key`` checked for ``capability`` (None for a key-store-only project).

    Jobs of a key with no Project row (made on the command line before projects existed) belong to
    superusers and the operator only; everybody else gets NotFoundError, as for foreign projects.
    """
    from dicomflow.projects.models import Project
    from dicomflow.projects.selectors import require

    project = Project.objects.filter(key=project_key).first()
    if project is not None:
        require(actor, project, capability)
        return project
    if _everywhere(actor):
        return None
    raise NotFoundError(f"no project '{project_key}'")


def _visible_job(actor, job_id: int, capability: str, audit_action: str | None = None) -> Job:
    """The job if ``actor`` may do ``capability`` in its project; NotFoundError when not visible.

    With ``audit_action`` a refusal of an existing job is audited as denied.
    """
    from dicomflow.accounts import audit
    from dicomflow.processing.selectors import visible_jobs

    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        raise NotFoundError(f"no job #{job_id}")
    try:
        if not visible_jobs(actor).filter(pk=job_id).exists():
            raise NotFoundError(f"no job #{job_id}")
        require_project(actor, job.project_key, capability)
    except (NotFoundError, PermissionDeniedError) as exc:
        if audit_action and _active(actor):
            audit.denied(actor, audit_action, project=job.project_key, obj=f"job #{job.pk}", detail=str(exc))
        raise
    return job


def _release(job_id: int, stage: str | None, inline: bool, on_stage=None) -> None:
    """Run what an action released: on a Celery worker after the commit, or here (the CLI;
    ``on_stage(job_id, stage)`` is called before each stage)."""
    if inline:
        while stage:
            if on_stage:
                on_stage(job_id, stage)
            stage = run_stage(job_id, stage)
        return
    from dicomflow.processing import tasks

    tasks.dispatch(job_id, stage)


def _step_then_release(job_id: int, step, inline: bool) -> Job:
    """``step()`` (returns the stage it released) in one transaction, then that stage runs: enqueued
    on commit, or here with ``inline``."""
    with transaction.atomic():
        stage = step()
        if not inline:
            _release(job_id, stage, inline=False)
    if inline:
        _release(job_id, stage, inline=True)
    return Job.objects.get(pk=job_id)


def _series_to_send(actor, project, series_uids, study_uid):
    """The catalogued series named (or every series of the study), visible to ``actor`` for ``project``:
    the clinical pool for those who may see it, and the project's own copies."""
    from django.db.models import Q

    from dicomflow.catalog.models import Series, Study
    from dicomflow.projects.selectors import can_see_clinical

    if (series_uids is None) == (study_uid is None):
        raise InputError("give either series UIDs or a study UID")
    scope = Q(project__isnull=True) if can_see_clinical(actor) else Q(pk__in=[])
    if project is not None:
        scope |= Q(project=project)
    if study_uid is not None:
        study = Study.objects.filter(scope, study_instance_uid=study_uid).first()
        if study is None:
            raise NotFoundError("no study with that UID that you may see")
        found = list(Series.objects.filter(study=study).order_by("series_number", "pk"))
        if not found:
            raise InputError("the study has no catalogued series")
        return found, True
    uids = list(dict.fromkeys(series_uids))
    if not uids:
        raise InputError("give at least one series UID")
    visible = {s.series_instance_uid: s for s in Series.objects.filter(scope, series_instance_uid__in=uids)}
    missing = [i for i, uid in enumerate(uids) if uid not in visible]
    if missing:  # the position, never the UID: clinical UIDs stay out of messages
        raise NotFoundError(f"no series that you may see for UID number {missing[0] + 1} of {len(uids)}")
    return [visible[uid] for uid in uids], False


def _template_for(series, template: Template | None) -> Template | None:
    """The template to process ``series`` with (given, chosen by hand, or the rules'); InputError saying why not."""
    if template is not None:
        problems = template_problems(template.core(), series_context(series.pk))
        if problems:
            raise InputError(f"series #{series.pk} does not fit template '{template.name}': " + "; ".join(problems))
        return template
    state = SeriesState.objects.filter(series_id=series.pk).select_related("template").first()
    if state is not None and state.template_id:
        by_hand = bool(state.chosen_by_id or (state.explanation or {}).get("chosen_by_hand"))
        if by_hand or state.status == SeriesStatus.RULE_MATCHED.value:
            return state.template
    # not evaluated yet, or processed before (the status tells how far it got): the rules' choice now,
    # stored nowhere (the checking stage evaluates and stores it)
    evaluation = _rules_decision(series.pk)
    if evaluation.status == SeriesStatus.RULE_MATCHED and evaluation.template:
        return get_template(evaluation.template)
    raise InputError(f"series #{series.pk}: the rules chose no template ({evaluation.status.value}: "
                     f"{evaluation.summary}); name a template or choose one by hand")


def _rules_decision(series_id: int, rulesets=None):
    """The rules' decision for a series (stored rulesets unless given), written nowhere."""
    rulesets = [r.core() for r in Ruleset.objects.all()] if rulesets is None else rulesets
    names = set(Template.objects.values_list("name", flat=True))
    return core_evaluate_series(series_context(series_id), rulesets, names)


def _out_dir_for(actor, out_dir: str | Path | None) -> Path | None:
    """The job's extra output folder: anywhere for the command-line operator (``process --out``), inside
    an export root of the operator's registry for everybody else (web, admin, API)."""
    from dicomflow.accounts.actors import is_operator
    from dicomflow.processing.registry import require_export_folder

    if not out_dir:
        return None
    if is_operator(actor):
        return Path(out_dir)
    if not Path(out_dir).is_absolute():
        raise InputError(f"output folder {str(out_dir)[:200]!r} must be an absolute path inside an export root")
    return require_export_folder(out_dir)


def send_for_processing(actor, *, project_key: str, series_uids: Iterable[str] | None = None,
                        study_uid: str | None = None, template_name: str | None = None,
                        out_dir: str | Path | None = None, require_qc: bool = False,
                        inline: bool = False) -> list[Job]:
    """Jobs for catalogued series (or every series of a study) in ``project_key``; enqueued on commit.

    Needs the Manage capability in the project and sight of each series (the clinical pool, or the
    project's own copy). With no template the rules' choice is used; a series they matched no
    template for is refused. For a study, the series the template (or the rules) does not fit are
    left out; a study none of whose series fits is refused. ``inline`` runs the jobs here (the CLI).
    """
    project = require_project(actor, project_key, Capability.MANAGE)
    out_dir = _out_dir_for(actor, out_dir)
    template = get_template(template_name) if template_name else None
    candidates, whole_study = _series_to_send(actor, project, series_uids, study_uid)
    chosen, reasons = [], []
    for series in candidates:
        try:
            chosen.append((series, _template_for(series, template)))
        except InputError as exc:
            if not whole_study:
                raise
            reasons.append(str(exc))
    if not chosen:
        raise InputError("no series of the study can be processed: " + "; ".join(reasons[:5]))
    with transaction.atomic():
        jobs = [create_job(project_key=project_key, series_id=series.pk, template_name=tpl.name, out_dir=out_dir,
                           require_qc=require_qc, created_by=_creator(actor)) for series, tpl in chosen]
        for job in jobs:
            write_log(f"sent for processing by {_who(actor)}", job=job, series_id=job.series_id)
            if not inline:
                _release(job.pk, next_stage(job.pk), inline=False)
    if inline:
        for job in jobs:
            _release(job.pk, next_stage(job.pk), inline=True)
    return [Job.objects.get(pk=job.pk) for job in jobs]


def process_folder(actor, *, project_key: str, path: str | Path, template_name: str | None = None,
                   out_dir: str | Path | None = None, require_qc: bool = False, inline: bool = False,
                   on_stage=None) -> Job:
    """A job that imports a folder first, then processes its one series (``dicomflow process``).

    Needs Manage in the project; enqueued on commit, or run here with ``inline`` (``on_stage``
    is told each stage before it runs)."""
    require_project(actor, project_key, Capability.MANAGE)
    if not _everywhere(actor):  # a folder of the server's disk: its operator's (and superusers') choice only
        raise PermissionDeniedError("only superusers and the command-line operator may process a folder on the "
                                    "server; send catalogued series instead")
    out_dir = _out_dir_for(actor, out_dir)
    with transaction.atomic():
        job = create_job(project_key=project_key, input_path=path, template_name=template_name, out_dir=out_dir,
                         require_qc=require_qc, created_by=_creator(actor))
        write_log(f"folder sent for processing by {_who(actor)}", job=job)
        if not inline:
            _release(job.pk, next_stage(job.pk), inline=False)
    if inline:
        _release(job.pk, next_stage(job.pk), inline=True, on_stage=on_stage)
    return Job.objects.get(pk=job.pk)


def _who(actor) -> str:
    from dicomflow.accounts.actors import actor_name

    return actor_name(actor)


def retry_job(actor, job_id: int, *, inline: bool = False) -> Job:
    """Retry the failed stage of a job (Manage in its project) and run on from there."""
    _visible_job(actor, job_id, Capability.MANAGE)

    def step() -> str:
        write_log(f"retry requested by {_who(actor)}", job=job_id)
        return _retry_job(job_id)

    return _step_then_release(job_id, step, inline)


def cancel_job(actor, job_id: int) -> Job:
    """Cancel a job (Manage in its project): at once, or after its running stage."""
    _visible_job(actor, job_id, Capability.MANAGE)
    return _cancel_job(job_id)


def approve_qc(actor, job_id: int, *, inline: bool = False) -> Job:
    """Quality control: approve the result (Manage in the job's project); export follows. Audited."""
    from dicomflow.accounts import audit
    from dicomflow.accounts.models import AuditAction

    job = _visible_job(actor, job_id, Capability.MANAGE)

    def step() -> str | None:
        following = _decide_quality_control(job_id, True, actor)
        audit.record(actor, AuditAction.QC_APPROVE, project=job.project_key, obj=f"job #{job_id}",
                     detail="result approved in quality control")
        return following

    return _step_then_release(job_id, step, inline)


def reject_qc(actor, job_id: int, reason: str) -> Job:
    """Quality control: reject the result with a reason (Manage in the job's project); the job fails. Audited."""
    from dicomflow.accounts import audit
    from dicomflow.accounts.models import AuditAction

    job = _visible_job(actor, job_id, Capability.MANAGE)
    reason = (reason or "").strip()
    if not reason:
        raise InputError("give the reason for rejecting the result")
    with transaction.atomic():
        _decide_quality_control(job_id, False, actor, reason)
        audit.record(actor, AuditAction.QC_REJECT, project=job.project_key, obj=f"job #{job_id}",
                     detail="result rejected in quality control; the reason is in the job's log")
    return Job.objects.get(pk=job_id)


def override_blocking_finding(actor, job_id: int, code: str, reason: str) -> Job:
    """Let one blocking check finding pass for this job (Manage; reason required; audited).

    Kept in ``Job.state["overrides"]``; the checking stage reads it when the job is retried.
    """
    from dicomflow.accounts import audit
    from dicomflow.accounts.models import AuditAction
    from dicomflow.core.checks.findings import Code

    job = _visible_job(actor, job_id, Capability.MANAGE)
    code, reason = (code or "").strip(), (reason or "").strip()
    if code not in {c.value for c in Code}:
        raise InputError(f"unknown check finding code '{code[:60]}'")
    if not reason:
        raise InputError("give the reason for overriding the finding")
    if job.status in (JobStatus.FINISHED, JobStatus.CANCELLED):
        raise InputError(f"job #{job_id} is {job.get_status_display().lower()}; nothing to override")
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        overrides = [o for o in (job.state or {}).get("overrides", []) if o.get("code") != code]
        overrides.append({"code": code, "reason": reason, "by": _who(actor), "at": timezone.now().isoformat()})
        job.state = {**(job.state or {}), "overrides": overrides}
        job.save(update_fields=["state", "updated_at"])
        write_log(f"check {code}: blocking finding overridden by {_who(actor)}", level=LogLevel.WARNING, job=job,
                  series_id=job.series_id, stage=Stage.CHECKING)
        audit.record(actor, AuditAction.OVERRIDE, project=job.project_key, obj=f"job #{job_id}",
                     detail=f"blocking check finding {code} overridden")
    return job


def may_download_results(actor, project_key: str) -> bool:
    """Re-identified results are identifying: Re-identifiers of the project, or its managers who
    may see the clinical pool (superusers and the operator for key-store-only projects)."""
    from dicomflow.projects.models import Project
    from dicomflow.projects.selectors import can, can_see_clinical

    project = Project.objects.filter(key=project_key).first()
    if project is None:
        return _everywhere(actor)
    if can(actor, project, Capability.REIDENTIFY):
        return True
    return can(actor, project, Capability.MANAGE) and can_see_clinical(actor)


def download_results(actor, job_id: int) -> Path:
    """The ZIP of a job's re-identified results, for those who may see identities. Audited (allowed,
    denied or failed: one entry)."""
    from dicomflow.accounts import audit
    from dicomflow.accounts.models import AuditAction, AuditOutcome

    job = _visible_job(actor, job_id, Capability.VIEW, audit_action=AuditAction.RESULT_DOWNLOAD)
    where = {"project": job.project_key, "obj": f"job #{job_id}"}
    if not may_download_results(actor, job.project_key):
        reason = "results are re-identified: a Re-identifier, or a data manager who may see the clinical pool"
        audit.denied(actor, AuditAction.RESULT_DOWNLOAD, detail=reason, **where)
        raise PermissionDeniedError(f"you may not download the results of job #{job_id} ({reason})")
    try:
        path = job_results_zip(job_id)
    except DicomflowError as exc:
        audit.record(actor, AuditAction.RESULT_DOWNLOAD, outcome=AuditOutcome.FAILED, detail=str(exc), **where)
        raise
    audit.record(actor, AuditAction.RESULT_DOWNLOAD, detail="re-identified results (ZIP)", **where)
    return path


# --- templates and rulesets: superusers or holders of the model permissions -------------------------------
DEFINITION_MODELS = {"template": Template, "ruleset": Ruleset}
MALFORMED = (TypeError, ValueError, AttributeError, KeyError)  # what the core's loaders raise on wrong JSON types


def _require_definition_permission(actor, kind: str, verb: str) -> None:
    if not _active(actor):
        raise PermissionDeniedError("log in first")
    if _everywhere(actor) or actor.has_perm(f"processing.{verb}_{kind}"):
        return
    raise PermissionDeniedError(f"you may not {verb} {kind}s (ask for the '{verb} {kind}' permission)")


def _definition(kind: str, name: str):
    row = DEFINITION_MODELS[kind].objects.filter(name=name).first()
    if row is None:
        raise NotFoundError(f"no {kind} named '{name[:100]}'")
    return row


def _save_definition(row) -> None:
    from django.core.exceptions import ValidationError

    if not (row.name or "").strip():
        raise InputError("a name is needed")
    clash = type(row).objects.filter(name=row.name).exclude(pk=row.pk)
    if clash.exists():
        raise InputError(f"a {type(row).__name__.lower()} named '{row.name}' exists already")
    if not isinstance(row.definition, dict):
        raise InputError("the definition must be a JSON object")
    try:
        row.clean()  # the core's validation (save runs it again)
    except ValidationError as exc:
        raise InputError("; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())) from None
    except MALFORMED as exc:  # a value of the wrong JSON type where the core expects another
        raise InputError(f"definition: malformed ({exc.__class__.__name__}); see the documented format") from None
    if isinstance(row, Template):  # structure names, labels and types: TG-263 unless the template says "local"
        problems = row.core().structure_problems()
        if problems:
            raise InputError("structures: " + "; ".join(problems))
    row.save()


def _automatic_settings(actor, row: Template, auto_process: bool | None, auto_project: str | None) -> str | None:
    """Apply the automatic-path fields to ``row`` (unsaved); returns what changed in words (None: nothing).

    Switching automatic processing on, or naming its project, is a send for processing made once
    for every future match: it needs the Manage capability in the project, as a manual send does
    (refusals audited)."""
    from dicomflow.accounts import audit
    from dicomflow.accounts.models import AuditAction
    from dicomflow.core.deid import KeyStore

    before = (row.auto_process, row.auto_project)
    if auto_process is not None:
        if not isinstance(auto_process, bool):
            raise InputError("auto_process must be true or false")
        row.auto_process = auto_process
    if auto_project is not None:
        if not isinstance(auto_project, str):
            raise InputError("auto_project must be a project key")
        row.auto_project = auto_project.strip()
    if (row.auto_process, row.auto_project) == before:
        return None
    if row.auto_process and not before[0]:
        row.auto_since = timezone.now()  # new series from now on: switching on never processes the backlog
    elif not row.auto_process:
        row.auto_since = None
    key = automatic_project(row)
    if row.auto_process and not key:
        raise InputError("automatic processing needs a research project whose keys de-identify the series: "
                         "set auto_project (or the operator sets DICOMFLOW_AUTO_PROCESS_PROJECT)")
    if row.auto_project:
        KeyStore(settings.PROJECT_KEYS_DIR)._path(row.auto_project, ".key")  # the key's spelling (InputError)
    if key and (row.auto_process or row.auto_project):
        try:
            require_project(actor, key, Capability.MANAGE)
        except (NotFoundError, PermissionDeniedError) as exc:
            audit.denied(actor, AuditAction.AUTO_PROCESS, project=key, obj=f"template '{row.name[:100]}'",
                         detail=str(exc))
            raise
    if row.auto_process:
        return f"automatic processing on, de-identified with the keys of project '{key}'"
    return "automatic processing off"


def _audit_automatic(actor, row: Template, change: str | None) -> None:
    from dicomflow.accounts import audit
    from dicomflow.accounts.models import AuditAction

    if change:
        audit.record(actor, AuditAction.AUTO_PROCESS, project=automatic_project(row), obj=f"template '{row.name}'",
                     detail=change)


def create_template(actor, *, name: str, definition: dict, auto_process: bool | None = None,
                    auto_project: str | None = None) -> Template:
    """A new template, validated by the core (InputError saying what is wrong)."""
    _require_definition_permission(actor, "template", "add")
    row = Template(name=name, definition=definition)
    change = _automatic_settings(actor, row, auto_process, auto_project)  # a refusal's audit entry stays
    with transaction.atomic():
        _save_definition(row)
        _audit_automatic(actor, row, change)
    return row


def update_template(actor, name: str, *, new_name: str | None = None, definition: dict | None = None,
                    auto_process: bool | None = None, auto_project: str | None = None) -> Template:
    """Edit a template (built-in ones too); validated by the core. ``auto_process`` and
    ``auto_project`` (None: unchanged) set the automatic path (Manage in the project; audited)."""
    _require_definition_permission(actor, "template", "change")
    row = _definition("template", name)
    if new_name is not None:
        row.name = new_name
    if definition is not None:
        row.definition = definition
    change = _automatic_settings(actor, row, auto_process, auto_project)  # a refusal's audit entry stays
    with transaction.atomic():
        _save_definition(row)
        _audit_automatic(actor, row, change)
    return row


def delete_template(actor, name: str) -> None:
    """Delete a template no job and no ruleset uses (InputError naming what uses it)."""
    _require_definition_permission(actor, "template", "delete")
    row = _definition("template", name)
    used = row.jobs.count()
    if used:
        raise InputError(f"template '{row.name}' is used by {used} job(s); it cannot be deleted")
    from dicomflow.processing.selectors import rulesets_naming

    naming = rulesets_naming(row.name)
    if naming:
        raise InputError(f"template '{row.name}' is named by ruleset(s) {', '.join(naming)}; change them first")
    row.delete()


def create_ruleset(actor, *, name: str, definition: dict, enabled: bool = True, order: int = 0) -> Ruleset:
    """A new ruleset, validated by the core."""
    _require_definition_permission(actor, "ruleset", "add")
    row = Ruleset(name=name, definition=definition, enabled=enabled, order=order)
    _save_definition(row)
    return row


def update_ruleset(actor, name: str, *, new_name: str | None = None, definition: dict | None = None,
                   enabled: bool | None = None, order: int | None = None) -> Ruleset:
    """Edit a ruleset (built-in ones too); validated by the core."""
    _require_definition_permission(actor, "ruleset", "change")
    row = _definition("ruleset", name)
    for field, value in (("name", new_name), ("definition", definition), ("enabled", enabled), ("order", order)):
        if value is not None:
            setattr(row, field, value)
    _save_definition(row)
    return row


def delete_ruleset(actor, name: str) -> None:
    _require_definition_permission(actor, "ruleset", "delete")
    _definition("ruleset", name).delete()


def rules_dry_run(actor, series_uid: str, ruleset_definitions: list[dict] | None = None) -> dict:
    """What the rules would decide for a visible series, with the explanation; writes nothing.

    ``ruleset_definitions`` (unsaved ruleset dicts) preview a change before it is saved; without
    them the stored rulesets are used. Identifying values are masked for users who may not see the
    clinical pool. ``{"series_uid", "status", "template", "explanation"}``.
    """
    from dicomflow.core.rules import Ruleset as CoreRuleset
    from dicomflow.errors import RuleDefinitionError
    from dicomflow.projects.selectors import can_see_clinical, visible_series

    series = visible_series(actor).filter(series_instance_uid=series_uid).first()
    if series is None:
        raise NotFoundError("no series with that UID that you may see")
    rulesets = None
    if ruleset_definitions is not None:
        if not isinstance(ruleset_definitions, list) or not all(isinstance(d, dict) for d in ruleset_definitions):
            raise InputError("rulesets must be a list of ruleset definitions (JSON objects)")
        try:
            rulesets = [CoreRuleset.from_dict({"name": f"preview-{i + 1}", **d})
                        for i, d in enumerate(ruleset_definitions)]
        except RuleDefinitionError as exc:
            raise InputError(f"rulesets: {exc}") from None
        except MALFORMED as exc:
            raise InputError(f"rulesets: malformed ({exc.__class__.__name__}); see the documented format") from None
    evaluation = _rules_decision(series.pk, rulesets)
    return {"series_uid": series.series_instance_uid, "status": evaluation.status.value,
            "template": evaluation.template, "explanation": evaluation.explanation(not can_see_clinical(actor))}


# --- results in the catalog ---------------------------------------------------------------------------------
RESULTS_SOURCE = "processing results of job"  # how catalogued results say where they came from


def catalogue_results(job: Job) -> int:
    """Import a job's re-identified results into the catalog, beside the series they were made from
    (the same project copy, or the clinical pool), so people find them there; returns how many
    instances were new. Called once a result is approved for export; importing twice adds nothing."""
    from dicomflow.catalog.models import Series
    from dicomflow.intake.models import SourceKind
    from dicomflow.intake.services import import_paths
    from dicomflow.processing.models import Result

    files = [p for p in Result.objects.filter(job=job, reidentified=True).values_list("path", flat=True)
             if p and Path(p).exists()]
    if not files:
        return 0
    source = Series.objects.filter(pk=job.series_id).select_related("project").first()
    report = import_paths(files, source_kind=SourceKind.CLI, received_from=f"{RESULTS_SOURCE} {job.pk}",
                          project=source.project if source else None, workers=1)
    write_log(f"results catalogued: {report.instances_new} new instance(s) in {len(report.series_ids)} series",
              job=job, series_id=job.series_id, stage=Stage.EXPORTING)
    return report.instances_new
