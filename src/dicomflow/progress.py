"""One model of long-running work: ZIP uploads, resumable uploads, watched-folder intakes, staging
jobs and processing jobs are all a :class:`LongJob`.

- one **status vocabulary** (:class:`Status`): ``pending`` (queued for a worker), ``running``,
  ``waiting`` (for someone outside: a person's quality control, a client's bytes, a folder to become
  quiet), ``finished``, ``failed``, ``cancelled``. A kind may show other *labels* (ZIP uploads say
  "In progress" and "Completed"), never other values;
- one **progress** shape: the current ``stage`` and its ``done``/``total``, committed by one
  reporter (:class:`ProgressReporter`) and read as one JSON document (:meth:`LongJob.progress_dict`)
  by the API, the web pages and the CLI;
- one **failure policy** (:func:`run_long_job`, :class:`failure_policy`): a worker claims a pending
  job with a conditional update (a re-delivered task for a job someone alive runs does nothing), a :class:`DicomflowError` ends it
  with its message, anything else with "<what> failed unexpectedly (ClassName)" — never the
  exception's text, which may hold identifying values — and the traceback goes to the log only.
  Nothing is raised into the worker.
- one **lease**: the worker running a job writes who it is (``lease_owner``: host/pid/start time)
  and renews ``lease_until`` while it works (:class:`Lease`). When that worker dies (kill -9, power
  cut, out of memory), the job's lease runs out, or at once when its process is seen gone on this
  host; a re-delivered task then takes the job over and runs it again from the start, and every
  worker that starts, and beat every minute, sends the task again for such jobs
  (:func:`recover_abandoned`). Bodies are idempotent: an import run again makes the files already
  catalogued duplicates, counters are set from the final report, never added to.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from django.db import models, transaction
from django.db.models import QuerySet
from django.dispatch import Signal
from django.utils import timezone
from django.utils.html import format_html

from dicomflow.errors import DicomflowError

log = logging.getLogger(__name__)


class Status(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    WAITING = "waiting", "Waiting"
    FINISHED = "finished", "Finished"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


#: Sent once for every long job that ends (finished or failed; cancelled ones are not news), after the
#: ending commits: ``sender`` is the LongJob model, ``pk`` and ``status`` the row's. Notifications
#: (:mod:`dicomflow.projects.notifications`) listen: every kind of long job is covered here, once.
long_job_ended = Signal()

RunStatus = Status  # the name earlier code imported
ENDED = (Status.FINISHED, Status.FAILED, Status.CANCELLED)
STATUS_COLOURS = {Status.PENDING: "#6c757d", Status.RUNNING: "#0d6efd", Status.WAITING: "#fd7e14",
                  Status.FINISHED: "#198754", Status.FAILED: "#dc3545", Status.CANCELLED: "#6c757d"}
MAX_ERROR = 4000


def status_field(default: str = Status.PENDING, **labels: str) -> models.CharField:
    """The status column of a kind of job; ``labels`` (``running="In progress"``) rename values for it."""
    choices = [(s.value, labels.get(s.value, s.label)) for s in Status]
    return models.CharField(max_length=16, choices=choices, default=default, db_index=True)


def stages(name: str, *steps: tuple[str, str], bookends: bool = True, module: str | None = None):
    """A kind's stages in order, as TextChoices: ``steps`` are (value, label) pairs; members are named
    after the values (``"clean_up"`` → ``CLEAN_UP``). With ``bookends`` the shared ``waiting`` (not
    started) and ``done`` (after the last) stand first and last."""
    ordered = ((("waiting", "Waiting"),) if bookends else ()) + steps + ((("done", "Done"),) if bookends else ())
    return models.TextChoices(name, [(value.upper(), (value, label)) for value, label in ordered], module=module)


def stage_field(stages: type[models.TextChoices] | None = None, default: str = "") -> models.CharField:
    """The stage column; each kind names its own stages (they differ), the column is the same."""
    return models.CharField(max_length=24, choices=stages.choices if stages else None, blank=True, default=default)


class LongJob(models.Model):
    """Status, stage, done/total, start, end and error of one piece of long-running work."""

    status = status_field()
    stage = stage_field()
    done = models.IntegerField(default=0, help_text="Work done in the current stage.")
    total = models.IntegerField(default=0, help_text="Work of the current stage (0: not known yet).")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="", help_text="Why it failed (no identifying values).")
    lease_owner = models.CharField(max_length=255, blank=True, default="",
                                   help_text="The worker process running it (host/pid/start time).")
    lease_until = models.DateTimeField(null=True, blank=True, help_text="Renewed while its worker lives.")

    #: what failure messages call this kind of job ("ZIP upload failed unexpectedly (KeyError)")
    what: ClassVar[str] = "job"
    #: the Celery task (called with the job's pk) that runs a job of this kind: sent again for a
    #: running job whose worker died (:func:`recover_abandoned`); "" for kinds not recovered that way
    resume_task: ClassVar[str] = ""
    def resume_args(self) -> tuple:
        """The arguments of ``resume_task`` for this job."""
        return (self.pk if isinstance(self.pk, int) else str(self.pk),)

    #: for kinds that show one bar over all stages: the share of 0-100 % each stage covers
    stage_spans: ClassVar[dict[str, tuple[int, int]]] = {}

    class Meta:
        abstract = True

    @property
    def percent(self) -> int:
        """Overall progress: 100 when finished, else the current stage's done/total within its span."""
        if self.status == Status.FINISHED:
            return 100
        fraction = min(1.0, self.done / self.total) if self.total > 0 else 0.0
        low, high = self.stage_spans.get(self.stage, (0, 100))
        return int(low + (high - low) * fraction)

    @property
    def is_over(self) -> bool:
        return self.status in ENDED

    def progress_dict(self) -> dict[str, Any]:
        """The one JSON progress format every interface serves and reads."""
        return {
            "status": self.status,
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "percent": self.percent,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "error": self.error,
        }

    def status_badge(self):
        """The status as a coloured label (admin lists)."""
        return format_html(
            '<span style="background:{};color:#fff;border-radius:4px;padding:2px 8px;white-space:nowrap">{}</span>',
            STATUS_COLOURS.get(self.status, "#6c757d"), self.get_status_display(),
        )


# --- the transitions every kind makes the same way --------------------------------------------------
def claim(rows: QuerySet, stage: str = "", from_status: str = Status.PENDING, **fields) -> bool:
    """``from_status`` → running for these rows (one row: True for exactly one of concurrent callers).
    ``lease_owner``/``lease_until`` in ``fields`` give the job a lease (:func:`run_long_job` does)."""
    fields.setdefault("lease_owner", "")
    return bool(rows.filter(status=from_status).update(
        status=Status.RUNNING, stage=stage, done=0, total=0, started_at=timezone.now(), finished_at=None, error="",
        **fields,
    ))


def finish(rows: QuerySet, status: str = Status.FINISHED, **fields) -> int:
    """Running → finished (or another ending, e.g. pending for the next step); rows taken away meanwhile
    (an administrator failed a lost job) are left as they are."""
    if status not in ENDED:
        return rows.filter(status=Status.RUNNING).update(status=status, **fields)
    now = timezone.now()
    candidates = list(rows.filter(status=Status.RUNNING).values_list("pk", flat=True))
    changed = rows.filter(pk__in=candidates, status=Status.RUNNING).update(status=status, finished_at=now, **fields)
    _announce(rows.model, candidates, status, now)
    return changed


def fail(rows: QuerySet, message: str, **fields) -> int:
    """Mark rows failed with ``message`` (which must hold no identifying values)."""
    now = timezone.now()
    candidates = list(rows.values_list("pk", flat=True))
    changed = rows.model.objects.filter(pk__in=candidates).update(status=Status.FAILED, finished_at=now,
                                                                   error=message[:MAX_ERROR], **fields)
    _announce(rows.model, candidates, Status.FAILED, now)
    return changed


def _announce(model, candidates: list, status: str, at) -> None:
    """:data:`long_job_ended` for the rows this call ended (their ``finished_at`` is ``at``), on commit."""
    if not candidates or status == Status.CANCELLED:
        return
    ended = list(model.objects.filter(pk__in=candidates, status=status, finished_at=at).values_list("pk", flat=True))

    def send() -> None:
        for pk in ended:
            long_job_ended.send_robust(sender=model, pk=pk, status=str(status))

    transaction.on_commit(send)


def reset(rows: QuerySet, stage: str = "", status: str = Status.PENDING, **fields) -> int:
    """Back to the start (a retry): no progress, times or error."""
    return rows.update(status=status, stage=stage, done=0, total=0, started_at=None, finished_at=None, error="",
                       **fields)


# --- progress ---------------------------------------------------------------------------------------
class ProgressReporter:
    """Commits (stage, done, total) on rows when they change: about ``steps`` writes per stage at most.

    Call it as ``report(stage, done, total)``. A value is skipped only while it is within one step of
    the last one written in the same stage; the end of a stage (done == total) is always written, and
    :meth:`flush` writes the last value seen, so the row ends with the final count. Rows whose model
    has no ``stage`` column (a processing job's stage row) get done/total only.
    """

    def __init__(self, *targets: QuerySet, steps: int = 100, start: tuple[str, int, int] | None = None):
        self.targets = [(rows, any(f.name == "stage" for f in rows.model._meta.concrete_fields)) for rows in targets]
        self.steps = steps
        self.written: tuple[str, int, int] | None = start  # what the rows hold already
        self.seen: tuple[str, int, int] | None = start

    @classmethod
    def for_row(cls, model: type[models.Model], pk, **kwargs) -> ProgressReporter:
        return cls(model.objects.filter(pk=pk), **kwargs)

    def __call__(self, stage: str, done: int, total: int = 0) -> None:
        self.seen = (stage, done, total)
        last = self.written
        if last is not None and last[0] == stage and last[2] == total and done != total:
            if abs(done - last[1]) < max(1, total // self.steps):
                return
        self._write()

    def flush(self) -> None:
        """Write the last value seen, if it was skipped."""
        self._write()

    def _write(self) -> None:
        if self.seen is None or self.seen == self.written:
            return
        stage, done, total = self.written = self.seen
        for rows, has_stage in self.targets:
            rows.update(done=done, total=total, **({"stage": stage} if has_stage else {}))


# --- failures ---------------------------------------------------------------------------------------
def failure_message(exc: BaseException, what: str) -> str:
    """A DicomflowError's own message (written for users, without values); for anything else the
    class name only, since its text may quote identifying values."""
    if isinstance(exc, DicomflowError):
        return str(exc)
    return f"{what} failed unexpectedly ({type(exc).__name__})"


class failure_policy:  # noqa: N801 (used as a context manager: ``with failure_policy(...)``)
    """Turn an exception in the block into ``on_failure(message)``; nothing leaves the block.

    ``failed`` and ``error`` tell the caller what happened. The traceback of an unexpected error is
    logged (the log is for operators); a DicomflowError is logged as one line.
    """

    def __init__(self, what: str, on_failure: Callable[[str], Any], ref: object = ""):
        self.what, self.on_failure, self.ref = what, on_failure, ref
        self.failed, self.error = False, ""

    def __enter__(self) -> failure_policy:
        return self

    def __exit__(self, kind, exc, traceback) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        self.failed, self.error = True, failure_message(exc, self.what)
        if isinstance(exc, DicomflowError):
            log.warning("%s %s failed: %s", self.what, self.ref, self.error)
        else:
            log.error("%s %s failed unexpectedly", self.what, self.ref, exc_info=(kind, exc, traceback))
        self.on_failure(self.error)
        return True


def run_long_job(model: type[LongJob], pk, body: Callable[[Any, ProgressReporter], dict | None], *,
                 stage: str = "", from_status: str = Status.PENDING) -> Any | None:
    """Claim job ``pk`` (pending → running), run ``body(job, report)``, record how it ended. Never raises.

    ``body`` returns the fields to store with the ending (counters; ``status`` to end other than
    finished, e.g. pending for a next step). The job is held by a :class:`Lease` while ``body`` runs;
    a job running under the lease of a dead worker is taken over (run again from the start). Returns
    the row as it ended, or None when the job was not ``from_status`` and not abandoned (another
    live worker has it, it is over, or it is gone): such a re-delivered task does nothing.
    """
    rows = model.objects.filter(pk=pk)
    owner = lease_owner()
    lease = {"lease_owner": owner, "lease_until": timezone.now() + lease_duration()}
    if not claim(rows, stage=stage, from_status=from_status, **lease):
        if not take_over(rows, owner, stage=stage):
            log.info("%s %s is not %s (taken, over or gone); nothing to do", model.what, pk, from_status)
            return None
        log.warning("%s %s: its worker died; taken over and run again", model.what, pk)
    report = ProgressReporter(rows, start=(stage, 0, 0))
    ending: dict | None = None
    with Lease(rows, owner), failure_policy(model.what, lambda message: fail(rows, message), ref=pk) as outcome:
        ending = body(rows.get(), report) or {}
    report.flush()
    if not outcome.failed:
        finish(rows, **ending)
    return rows.first()


# --- leases: who runs a job, and taking over the jobs of dead workers -------------------------------
_OWNER: tuple[int, str] | None = None


def lease_owner() -> str:
    """This process as a lease owner: ``host/pid/start time`` (the start time tells a reused pid)."""
    global _OWNER
    pid = os.getpid()
    if _OWNER is None or _OWNER[0] != pid:  # a forked pool process is another owner
        _OWNER = (pid, f"{socket.gethostname()}/{pid}/{_start_time(pid)}")
    return _OWNER[1]


def _start_time(pid: int) -> str:
    try:
        import psutil

        return f"{psutil.Process(pid).create_time():.2f}"
    except Exception:  # gone (or no psutil): no start time
        return ""


def lease_duration() -> datetime.timedelta:
    from django.conf import settings

    return datetime.timedelta(seconds=getattr(settings, "DICOMFLOW_LEASE_SECONDS", 120))


def owner_alive(owner: str) -> bool | None:
    """Whether the lease owner's process lives: None when it runs on another host (not knowable here)."""
    host, _, rest = owner.partition("/")
    pid_text, _, started = rest.partition("/")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        import psutil

        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped
            return False
    except ImportError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    except Exception:  # psutil.NoSuchProcess: gone
        return False
    return _start_time(pid) == started if started else True


def lease_dead(job: LongJob, now=None) -> bool:
    """A running job whose worker is gone: its lease ran out, or its process is gone from this host.
    Jobs running without a lease (claimed by code that keeps none) are never called dead."""
    if job.status != Status.RUNNING or not job.lease_owner:
        return False
    if job.lease_until is None or job.lease_until < (now or timezone.now()):
        return True
    return owner_alive(job.lease_owner) is False


def take_over(rows: QuerySet, owner: str, stage: str = "") -> bool:
    """Running → running under ``owner`` from the start of ``stage``, if the job's worker is dead;
    True for exactly one of concurrent callers."""
    job = rows.filter(status=Status.RUNNING).first()
    if job is None or not lease_dead(job):
        return False
    return bool(rows.filter(status=Status.RUNNING, lease_owner=job.lease_owner, lease_until=job.lease_until).update(
        lease_owner=owner, lease_until=timezone.now() + lease_duration(), stage=stage, done=0, total=0, error="",
    ))


class Lease:
    """Renew ``rows``' lease for ``owner`` every quarter lease from a thread while the block runs."""

    def __init__(self, rows: QuerySet, owner: str):
        self.rows, self.owner = rows, owner
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> Lease:
        self.thread = threading.Thread(target=self._renew, name="dicomflow-lease", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join(timeout=30)
        return False

    def _renew(self) -> None:
        from django.db import connection

        duration = lease_duration()
        try:
            while not self.stopped.wait(max(0.5, duration.total_seconds() / 4)):
                try:
                    self.rows.filter(status=Status.RUNNING, lease_owner=self.owner).update(
                        lease_until=timezone.now() + duration)
                except Exception:  # a busy database: the next renewal tries again
                    log.warning("renewing a lease failed", exc_info=True)
        finally:
            connection.close()


def abandoned(model: type[LongJob]) -> list:
    """The pks of ``model``'s running jobs whose worker is dead."""
    return [job.pk for job in _abandoned_jobs(model)]


def _abandoned_jobs(model: type[LongJob]) -> list:
    now = timezone.now()
    return [job for job in model.objects.filter(status=Status.RUNNING).exclude(lease_owner="") if lease_dead(job, now)]


def recover_abandoned() -> dict[str, list]:
    """Send the task again for every running job whose worker died (each kind's ``resume_task``);
    the task takes the job over (:func:`take_over`). Run when a worker starts and every minute."""
    from celery import current_app
    from django.apps import apps

    sent: dict[str, list] = {}
    for model in apps.get_models():
        if not issubclass(model, LongJob) or not model.resume_task:
            continue
        for job in _abandoned_jobs(model):
            current_app.send_task(model.resume_task, args=job.resume_args())
            sent.setdefault(model._meta.label, []).append(str(job.pk))
            log.warning("%s %s: its worker died; sent to a worker again", model.what, job.pk)
    return sent
