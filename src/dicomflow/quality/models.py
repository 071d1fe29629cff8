"""Ratings of a job's returned contours and comparisons with the structure set people approved."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class Rating(models.TextChoices):
    """How much a returned contour had to be changed (DRAW's scale, plus 'not usable')."""

    NO_EDIT = "no_edit", "No edit"
    MINOR = "minor", "Minor edits"
    MAJOR = "major", "Major edits"
    NOT_USABLE = "not_usable", "Not usable"
    NOT_SEGMENTED = "not_segmented", "Not segmented"


class JobRating(models.Model):
    """One assessor's overall judgement of a finished job's result."""

    job = models.ForeignKey("processing.Job", on_delete=models.CASCADE, related_name="ratings")
    assessor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    assessor_name = models.CharField(max_length=150, help_text="The assessor's login when rated (kept if the user goes).")
    overall_score = models.PositiveSmallIntegerField(validators=[MinValueValidator(0), MaxValueValidator(10)],
                                                     help_text="0 (unusable) to 10 (perfect).")
    comment = models.TextField(blank=True, default="")
    rated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "assessor_name"], name="one_rating_per_assessor")]
        ordering = ["job_id", "assessor_name"]


class RoiRating(models.Model):
    rating = models.ForeignKey(JobRating, on_delete=models.CASCADE, related_name="rois")
    roi_name = models.CharField(max_length=64)
    rating_value = models.CharField("rating", max_length=16, choices=Rating.choices)
    minutes = models.PositiveIntegerField(null=True, blank=True, help_text="Minutes spent editing the contour.")
    comment = models.TextField(blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rating", "roi_name"], name="one_rating_per_roi")]
        ordering = ["rating_id", "roi_name"]


class StructureComparison(models.Model):
    """Metrics of a job's result (test) against a structure set that came back for its series."""

    job = models.ForeignKey("processing.Job", on_delete=models.CASCADE, related_name="comparisons")
    reference = models.ForeignKey("catalog.Instance", null=True, on_delete=models.SET_NULL, related_name="+",
                                  help_text="The edited structure set (catalog instance).")
    computed_at = models.DateTimeField(auto_now_add=True)
    tolerance_mm = models.FloatField(default=2.0)
    rois = models.JSONField(default=list, help_text='[{"name", "dice", "jaccard", "hd95_mm", "msd_mm", '
                                                   '"surface_dice", "apl_mm", "volume_a_cc", "volume_b_cc"}]')
    only_in_result = models.JSONField(default=list)
    only_in_reference = models.JSONField(default=list)
    error = models.TextField(blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "reference"], name="one_comparison_per_reference")]
        ordering = ["-computed_at"]
