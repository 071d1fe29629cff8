"""Stored analysis of the catalog: RT reference edges, check results, per-instance records, sanity.

Written only by ``dicomflow.catalog.analysis`` (rebuilt per study, atomically); read through
``dicomflow.catalog.rt_selectors``. The values mirror ``dicomflow.core.rt`` / ``dicomflow.core.checks``
(stable codes, RefKind values, approval statuses), so a study analysed from the catalog gives the
same answers as the folder commands.

Why per-instance records: :class:`InstanceRefRecord` keeps what the core needs from one header
(``InstanceRef.to_dict()``, patient attributes, slice geometry, validity findings, dose grid box),
so re-analysing a study after more files arrive reads only the new files. Structure-set contour
points are NOT stored (they can be megabytes): the RT QC re-reads the few RTSTRUCT files from the
store when it runs.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from dicomflow.catalog.models import Instance, Patient, Series, Study

__all__ = [
    "CheckFinding",
    "ExpectedSource",
    "InstanceRefRecord",
    "SanityOverride",
    "SanityResult",
    "SanityStatusChoice",
    "SeriesCheck",
    "SeriesReference",
]

REF_KIND_CHOICES = [
    (v, v) for v in ("series", "image", "structure_set", "plan", "instance", "frame_of_reference")
]
SEVERITY_CHOICES = [(v, v) for v in ("INFO", "WARNING", "ERROR")]


class InstanceRefRecord(models.Model):
    """What the RT graph and the checks need from one instance's header (JSON, see module doc)."""

    instance = models.OneToOneField(Instance, on_delete=models.CASCADE, related_name="ref_record")
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="+", help_text="Denormalised for one query per study.")
    format_version = models.PositiveSmallIntegerField()
    ref = models.JSONField(help_text="InstanceRef.to_dict()")
    patient = models.JSONField(help_text="PatientHeader fields (for consistency and sanity checks).")
    slices = models.JSONField(default=list, blank=True, help_text="Slice geometry per plane (frame).")
    validity = models.JSONField(default=list, blank=True, help_text="Validity findings of this instance.")
    dose_grid = models.JSONField(null=True, blank=True, help_text="RTDOSE grid box and frame of reference.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "instance reference record"


class SeriesReference(models.Model):
    """One edge of the RT tree: ``source`` references ``target`` (RTDOSE → RTPLAN → RTSTRUCT → CT).

    ``missing`` edges name a series (or, when its series is unknown, an instance) that is not in the
    catalog, or a frame of reference no image series has (``via`` = frame_of_reference); ``target``
    is then null and ``target_uid`` says what was referenced.
    """

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="series_references", help_text="The source's study.")
    source = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="outgoing_references")
    target = models.ForeignKey(Series, on_delete=models.CASCADE, null=True, blank=True, related_name="incoming_references")
    target_uid = models.CharField(max_length=64, db_index=True)
    via = models.CharField(max_length=32, choices=REF_KIND_CHOICES)
    missing = models.BooleanField(default=False, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "target_uid", "via"], name="uniq_series_reference")
        ]
        ordering = ["study_id", "source_id", "target_uid"]

    def __str__(self) -> str:
        return f"{self.source_id} -> {self.target_uid}{' (missing)' if self.missing else ''}"


class SeriesCheck(models.Model):
    """The latest analysis of one series: completeness, RT graph facts (approval) and findings.

    Review date/time and reviewer are stored but shown only to users allowed to see them
    (``rt_selectors.approval_statuses(..., include_review=True)``).
    """

    series = models.OneToOneField(Series, on_delete=models.CASCADE, related_name="check_result")
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="series_checks")
    checked_at = models.DateTimeField(db_index=True)
    modality = models.CharField(max_length=16)
    instances = models.IntegerField(default=0)
    complete = models.BooleanField(null=True, help_text="Null for series that are not image stacks.")
    missing_slices = models.JSONField(default=list, blank=True, help_text="Positions (mm along the slice normal).")
    worst_severity = models.CharField(max_length=8, blank=True, default="", choices=SEVERITY_CHOICES, db_index=True)
    approval_status = models.CharField(max_length=16, blank=True, default="", db_index=True)
    review_date = models.CharField(max_length=16, blank=True, default="")
    review_time = models.CharField(max_length=32, blank=True, default="")
    reviewer_name = models.CharField(max_length=324, blank=True, default="")
    missing_frames_of_reference = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["study_id", "series_id"]

    def __str__(self) -> str:
        return f"check of series {self.series_id}"


class CheckFinding(models.Model):
    """One finding of a series check; ``code`` is the stable ``dicomflow.core.checks.Code`` value."""

    series_check = models.ForeignKey(SeriesCheck, on_delete=models.CASCADE, related_name="findings")
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="check_findings")
    position = models.IntegerField(default=0, help_text="Order as reported (worst first).")
    severity = models.CharField(max_length=8, choices=SEVERITY_CHOICES, db_index=True)
    code = models.CharField(max_length=64, db_index=True)
    message = models.TextField()

    class Meta:
        ordering = ["series_check_id", "position"]


class ExpectedSource(models.TextChoices):
    SUBJECT = "subject", "research subject"
    USER = "user", "given by a user"


class SanityStatusChoice(models.TextChoices):
    MATCHES = "MATCHES"
    CONFLICT = "CONFLICT"
    INCONSISTENT = "INCONSISTENT"


class SanityResult(models.Model):
    """Headers compared with the expected subject (study level, or patient level when ``study`` is null).

    Never changed after creation: overrides are separate rows, the original result stays.
    """

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="sanity_results")
    study = models.ForeignKey(Study, on_delete=models.CASCADE, null=True, blank=True, related_name="sanity_results")
    expected_source = models.CharField(max_length=16, choices=ExpectedSource.choices)
    subject = models.ForeignKey(
        "projects.Subject", on_delete=models.SET_NULL, null=True, blank=True, related_name="sanity_results",
        help_text="The research subject the expectation came from, if any.",
    )
    subject_ref = models.CharField(max_length=128, blank=True, default="", help_text="An outside reference to the subject, if any.")
    expected_sex = models.CharField(max_length=16, blank=True, default="")
    expected_birth_date = models.CharField(max_length=8, blank=True, default="", help_text="YYYYMMDD")
    expected_birth_year = models.IntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=SanityStatusChoice.choices, db_index=True)
    compared = models.JSONField(default=list, blank=True)
    findings = models.JSONField(default=list, blank=True)
    checked_at = models.DateTimeField(auto_now_add=True, db_index=True)
    checked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-checked_at", "-id"]

    def __str__(self) -> str:
        return f"sanity {self.status} ({'study' if self.study_id else 'patient'} level)"


class SanityOverride(models.Model):
    """A user's decision to accept a sanity result as ``status`` (MATCHES by default), with a reason."""

    result = models.ForeignKey(SanityResult, on_delete=models.CASCADE, related_name="overrides")
    status = models.CharField(max_length=16, choices=SanityStatusChoice.choices, default=SanityStatusChoice.MATCHES)
    reason = models.TextField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    username = models.CharField(max_length=150, help_text="The user's name at the time (kept if renamed).")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.CheckConstraint(condition=~models.Q(reason=""), name="sanity_override_reason_required")]
