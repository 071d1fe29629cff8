"""Processing: rulesets and templates (stored as the core's JSON forms), series states, jobs.

Rulesets and templates are kept as the dicts of :mod:`dicomflow.core.rules` (validated by the core
on save, so a broken definition never reaches the evaluator). A :class:`Job` moves one series
through the stages of :class:`Stage`; every stage has its own :class:`JobStage` row (status,
progress, error) and writes :class:`LogEntry` rows, which never hold identifying values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from dicomflow.core.rules.status import SeriesStatus

if TYPE_CHECKING:  # the rule engine loads pydicom: import it where rules are used, not at start-up
    from dicomflow.core.rules.model import Ruleset as CoreRuleset
    from dicomflow.core.rules.model import Template as CoreTemplate

from dicomflow.errors import RuleDefinitionError
from dicomflow.progress import LongJob, Status, stage_field, status_field

SERIES_STATUS_CHOICES = [(s.value, s.value.replace("_", " ").capitalize()) for s in SeriesStatus]


class Template(models.Model):
    """A processing template: ``definition`` is a core Template dict (processor, parameters, ...)."""

    name = models.CharField(max_length=100, unique=True)
    definition = models.JSONField(help_text="dicomflow.core.rules Template: processor, parameters, requires, rois, "
                                            "destinations.")
    builtin = models.BooleanField(default=False, help_text="Shipped with dicomflow (re-created if missing).")
    # The automatic path: a new series the rules give this template is de-identified with the keys of
    # ``auto_project`` and processed with no one clicking (processing.services.start_automatic_jobs).
    auto_process = models.BooleanField(default=False, help_text="A rule match starts processing by itself.")
    auto_project = models.CharField(max_length=64, blank=True, default="",
                                    help_text="Research project whose keys de-identify automatically processed "
                                              "series (empty: DICOMFLOW_AUTO_PROCESS_PROJECT).")
    auto_since = models.DateTimeField(null=True, blank=True, editable=False,
                                      help_text="When automatic processing was switched on: only series catalogued "
                                                "since are processed automatically (not the backlog).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        try:
            from dicomflow.core.rules.model import Template as CoreTemplate

            core = CoreTemplate.from_dict({**(self.definition or {}), "name": self.name})
        except RuleDefinitionError as exc:
            raise ValidationError({"definition": str(exc)}) from None
        from dicomflow.processing.registry import template_reach_problems

        problems = template_reach_problems(core.to_dict())  # only what the operator configured, by name
        if problems:
            raise ValidationError({"definition": problems})
        self.definition = core.to_dict()

    def save(self, *args, **kwargs) -> None:
        self.clean()  # the core validates every definition before it is stored
        super().save(*args, **kwargs)

    def core(self) -> CoreTemplate:
        from dicomflow.core.rules.model import Template as CoreTemplate

        return CoreTemplate.from_dict({**self.definition, "name": self.name})


class Ruleset(models.Model):
    """Rules on attributes combined with AND/OR, linked to a template by name."""

    name = models.CharField(max_length=100, unique=True)
    definition = models.JSONField(help_text="dicomflow.core.rules Ruleset: match clause and template name.")
    enabled = models.BooleanField(default=True)
    order = models.IntegerField(default=0, help_text="Evaluation and display order.")
    builtin = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["order", "name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        try:
            from dicomflow.core.rules.model import Ruleset as CoreRuleset

            core = CoreRuleset.from_dict({**(self.definition or {}), "name": self.name, "enabled": self.enabled})
        except RuleDefinitionError as exc:
            raise ValidationError({"definition": str(exc)}) from None
        self.definition = core.to_dict()

    def save(self, *args, **kwargs) -> None:
        self.clean()
        super().save(*args, **kwargs)

    def core(self) -> CoreRuleset:
        from dicomflow.core.rules.model import Ruleset as CoreRuleset

        return CoreRuleset.from_dict({**self.definition, "name": self.name, "enabled": self.enabled})


class SeriesState(models.Model):
    """Where a catalogued series is on its way to a processing result, and why."""

    series = models.OneToOneField("catalog.Series", on_delete=models.CASCADE, related_name="processing_state")
    status = models.CharField(max_length=32, choices=SERIES_STATUS_CHOICES, default=SeriesStatus.UNPROCESSED.value,
                              db_index=True)
    template = models.ForeignKey(Template, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    explanation = models.JSONField(default=dict, blank=True,
                                   help_text="The rule engine's explanation (actual values: staff only).")
    chosen_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="+", help_text="Set when a person chose the template by hand.")
    evaluated_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "series states"

    def __str__(self) -> str:
        return f"series #{self.series_id}: {self.status}"


JobStatus = Status  # the one vocabulary of long jobs (dicomflow.progress); waiting: for quality control


class Stage(models.TextChoices):
    """The stages of a job, in order (``STAGE_ORDER``)."""

    UPLOADING = "uploading", "Uploading"
    IMPORTING = "importing", "Importing"
    CHECKING = "checking", "Checking"
    DEIDENTIFYING = "deidentifying", "De-identifying"
    PROCESSING = "processing", "Processing"
    VERIFYING = "verifying", "Verifying"
    REIDENTIFYING = "reidentifying", "Re-identifying"
    QUALITY_CONTROL = "quality_control", "Quality control"
    EXPORTING = "exporting", "Exporting"


STAGE_ORDER = [s.value for s in Stage]


class StageStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    WAITING = "waiting", "Waiting for a person"
    DONE = "done", "Done"
    SKIPPED = "skipped", "Skipped"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class Job(LongJob):
    """One series (or a folder to import first) through the whole processing chain.

    ``stage`` is the stage running (or waiting, failed); ``done``/``total`` its progress, also on its
    :class:`JobStage` row.
    """

    what = "processing job"
    resume_task = "dicomflow.processing.tasks.run_stage"  # (pk, stage): its worker died mid-stage

    def resume_args(self) -> tuple:
        return (self.pk, self.stage)

    series = models.ForeignKey("catalog.Series", null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="processing_jobs")
    input_path = models.CharField(max_length=1024, blank=True, default="",
                                  help_text="Folder to import first (folder jobs); empty for catalogued series.")
    template = models.ForeignKey(Template, null=True, blank=True, on_delete=models.PROTECT, related_name="jobs",
                                 help_text="Empty: the rules choose.")
    project_key = models.CharField(max_length=64, help_text="Research project whose keys de-identify the series.")
    status = status_field(waiting="Waiting for quality control")
    stage = stage_field(Stage)
    require_qc = models.BooleanField(default=False, help_text="A person approves the result before export.")
    automatic = models.BooleanField(default=False, help_text="Started by a rule match (the template's automatic "
                                                             "processing), not by a person.")
    out_dir = models.CharField(max_length=1024, blank=True, default="", help_text="Extra folder destination.")
    cancel_requested = models.BooleanField(default=False)
    state = models.JSONField(default=dict, blank=True,
                             help_text="What stages hand on: de-identified UIDs, work folders (no identities).")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [  # the automatic path starts one job per series, whoever asks and however often
            models.UniqueConstraint(fields=["series"], condition=models.Q(automatic=True),
                                    name="uniq_automatic_job_per_series"),
        ]
        indexes = [
            # the jobs lists (newest first, LIMIT n) read this index instead of sorting every job
            models.Index(fields=["-created_at", "-id"], name="job_newest_first"),
            # a series' latest job (the processing page, per row) is one probe
            models.Index(fields=["series", "-created_at", "-id"], name="job_series_latest"),
        ]

    def __str__(self) -> str:
        return f"job #{self.pk} ({self.get_status_display()})"


class JobStage(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="stages")
    name = models.CharField(max_length=24, choices=Stage.choices)
    order = models.IntegerField()
    status = models.CharField(max_length=16, choices=StageStatus.choices, default=StageStatus.PENDING, db_index=True)
    done = models.IntegerField(default=0)
    total = models.IntegerField(default=0)
    attempts = models.IntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["job_id", "order"]
        constraints = [models.UniqueConstraint(fields=["job", "name"], name="uniq_job_stage")]

    def __str__(self) -> str:
        return f"{self.get_name_display()}: {self.get_status_display()}"


class LogLevel(models.TextChoices):
    DEBUG = "DEBUG", "Debug"
    INFO = "INFO", "Info"
    WARNING = "WARNING", "Warning"
    ERROR = "ERROR", "Error"


class LogEntry(models.Model):
    """A processing-log line. Messages name stages, counts, paths of work files, never identities."""

    time = models.DateTimeField(auto_now_add=True, db_index=True)
    level = models.CharField(max_length=8, choices=LogLevel.choices, default=LogLevel.INFO, db_index=True)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.CASCADE, related_name="log")
    series = models.ForeignKey("catalog.Series", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    stage = models.CharField(max_length=24, choices=Stage.choices, blank=True, default="", db_index=True)
    message = models.TextField()

    class Meta:
        ordering = ["time", "id"]
        verbose_name_plural = "log entries"

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.level} {self.stage}: {self.message[:80]}"


class ResultKind(models.TextChoices):
    RTSTRUCT = "RTSTRUCT", "RT Structure Set"
    SEG = "SEG", "Segmentation"
    DICOM = "DICOM", "Other DICOM"


class Result(models.Model):
    """A result file of a job: as the processor gave it (de-identified) and re-identified."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="results")
    kind = models.CharField(max_length=16, choices=ResultKind.choices, default=ResultKind.DICOM)
    deidentified_path = models.CharField(max_length=1024, help_text="The processor's output (de-identified).")
    path = models.CharField(max_length=1024, blank=True, default="", help_text="The re-identified result.")
    verified = models.BooleanField(default=False)
    reidentified = models.BooleanField(default=False)
    exported_to = models.JSONField(default=list, blank=True, help_text="[{destination, path or node, ok, reason}]")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job_id", "id"]

    def __str__(self) -> str:
        return f"{self.kind} of job #{self.job_id}"
