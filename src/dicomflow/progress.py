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
  job with a conditional update (a re-delivered task does nothing), a :class:`DicomflowError` ends it
  with its message, anything else with "<what> failed unexpectedly (ClassName)" — never the
  exception's text, which may hold identifying values — and the traceback goes to the log only.
  Nothing is raised into the worker.
"""

from __future__ import annotations

import logging
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

    #: what failure messages call this kind of job ("ZIP upload failed unexpectedly (KeyError)")
    what: ClassVar[str] = "job"
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
    """``from_status`` → running for these rows (one row: True for exactly one of concurrent callers)."""
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
    finished, e.g. pending for a next step). Returns the row as it ended, or None when the job was not
    ``from_status`` (another worker has it, it is over, or it is gone): a re-delivered task does nothing.
    """
    rows = model.objects.filter(pk=pk)
    if not claim(rows, stage=stage, from_status=from_status):
        log.info("%s %s is not %s (taken, over or gone); nothing to do", model.what, pk, from_status)
        return None
    report = ProgressReporter(rows, start=(stage, 0, 0))
    ending: dict | None = None
    with failure_policy(model.what, lambda message: fail(rows, message), ref=pk) as outcome:
        ending = body(rows.get(), report) or {}
    report.flush()
    if not outcome.failed:
        finish(rows, **ending)
    return rows.first()
