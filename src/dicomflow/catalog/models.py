"""The catalog: Patient → Study → Series → Instance, with image and RT details.

Every way data comes in ends here (see ``dicomflow.intake.services``). Rows are written in
batches by ``dicomflow.catalog.services``; reads go through ``dicomflow.catalog.selectors``.
Files themselves live in the store (``$DICOMFLOW_HOME/store``); ``Instance.stored_path`` is
relative to it.
"""

from django.db import models


class Patient(models.Model):
    patient_id = models.CharField(max_length=64, db_index=True)
    issuer_of_patient_id = models.CharField(max_length=64, blank=True, default="")
    patient_name = models.CharField(max_length=324, blank=True, default="", db_index=True)
    birth_date = models.DateField(null=True, blank=True)
    sex = models.CharField(max_length=16, blank=True, default="")
    project = models.ForeignKey(
        "projects.Project", null=True, blank=True, on_delete=models.PROTECT, related_name="patients",
        help_text="Null: the clinical pool (Study0); else the research project holding this de-identified copy.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["patient_id", "issuer_of_patient_id"], name="uniq_patient_id_issuer")
        ]
        ordering = ["patient_id"]

    def __str__(self) -> str:
        return self.patient_id or f"patient #{self.pk}"


class Study(models.Model):
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="studies")
    study_instance_uid = models.CharField(max_length=64, unique=True)
    study_date = models.DateField(null=True, blank=True, db_index=True)
    study_time = models.CharField(max_length=16, blank=True, default="")
    study_id = models.CharField(max_length=16, blank=True, default="")
    accession_number = models.CharField(max_length=64, blank=True, default="", db_index=True)
    description = models.CharField(max_length=256, blank=True, default="")
    project = models.ForeignKey(
        "projects.Project", null=True, blank=True, on_delete=models.PROTECT, related_name="studies",
        help_text="Null: the clinical pool (Study0); else the research project holding this de-identified copy.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "studies"
        ordering = ["-study_date", "study_instance_uid"]

    def __str__(self) -> str:
        return self.description or self.study_instance_uid


class Series(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="series")
    series_instance_uid = models.CharField(max_length=64, unique=True)
    modality = models.CharField(max_length=16, db_index=True)
    series_number = models.IntegerField(null=True, blank=True)
    description = models.CharField(max_length=256, blank=True, default="")
    series_date = models.DateField(null=True, blank=True, db_index=True)
    body_part_examined = models.CharField(max_length=64, blank=True, default="")
    frame_of_reference_uid = models.CharField(max_length=64, blank=True, default="", db_index=True)
    project = models.ForeignKey(
        "projects.Project", null=True, blank=True, on_delete=models.PROTECT, related_name="series",
        help_text="Null: the clinical pool (Study0); else the research project holding this de-identified copy.",
    )
    processing_excluded = models.CharField(
        max_length=200, blank=True, default="",
        help_text="Why the source's intake filter keeps this series out of processing (e.g. a localizer); "
                  "empty: not excluded.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "series"
        ordering = ["study_id", "series_number", "series_instance_uid"]

    def __str__(self) -> str:
        return f"{self.modality} {self.description or self.series_instance_uid}"


class Instance(models.Model):
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="instances")
    sop_class_uid = models.CharField(max_length=64, db_index=True)
    sop_instance_uid = models.CharField(max_length=64, unique=True)
    instance_number = models.IntegerField(null=True, blank=True)
    transfer_syntax_uid = models.CharField(max_length=64, blank=True, default="")
    sha256 = models.CharField(max_length=64, db_index=True)
    size = models.BigIntegerField()
    stored_path = models.CharField(max_length=512, help_text="Relative to the file store.")
    received_from = models.CharField(max_length=512, blank=True, default="", help_text="Source kind and origin.")
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["series_id", "instance_number", "sop_instance_uid"]

    def __str__(self) -> str:
        return self.sop_instance_uid


class InstanceConflict(models.Model):
    """A file arrived whose SOP Instance UID is catalogued with different bytes. The stored copy is kept."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="conflicts")
    sha256 = models.CharField(max_length=64)
    size = models.BigIntegerField()
    source = models.CharField(max_length=1024, help_text="Where the conflicting copy came from.")
    detected_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-detected_at"]


class ImageInformation(models.Model):
    instance = models.OneToOneField(Instance, on_delete=models.CASCADE, related_name="image")
    rows = models.IntegerField(null=True)
    columns = models.IntegerField(null=True)
    number_of_frames = models.IntegerField(default=1)
    bits_allocated = models.IntegerField(null=True)
    photometric_interpretation = models.CharField(max_length=16, blank=True, default="")
    pixel_spacing = models.JSONField(null=True, blank=True, help_text="[row spacing, column spacing] in mm")
    slice_thickness = models.FloatField(null=True, blank=True)
    image_position_patient = models.JSONField(null=True, blank=True)
    image_orientation_patient = models.JSONField(null=True, blank=True)
    slice_location = models.FloatField(null=True, blank=True)


class RTStructureSet(models.Model):
    instance = models.OneToOneField(Instance, on_delete=models.CASCADE, related_name="structure_set")
    label = models.CharField(max_length=64, blank=True, default="")
    name = models.CharField(max_length=64, blank=True, default="")
    structure_set_date = models.DateField(null=True, blank=True)
    approval_status = models.CharField(max_length=16, blank=True, default="")
    referenced_frame_of_reference_uid = models.CharField(max_length=64, blank=True, default="", db_index=True)
    referenced_series_uid = models.CharField(max_length=64, blank=True, default="", db_index=True)

    class Meta:
        verbose_name = "RT structure set"


class ROI(models.Model):
    structure_set = models.ForeignKey(RTStructureSet, on_delete=models.CASCADE, related_name="rois")
    number = models.IntegerField()
    name = models.CharField(max_length=64, db_index=True)
    interpreted_type = models.CharField(max_length=16, blank=True, default="")
    color = models.CharField(max_length=7, blank=True, default="", help_text="#rrggbb")
    contour_count = models.IntegerField(default=0)
    referenced_frame_of_reference_uid = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        verbose_name = "ROI"
        ordering = ["structure_set_id", "number"]


class RTPlan(models.Model):
    instance = models.OneToOneField(Instance, on_delete=models.CASCADE, related_name="plan")
    label = models.CharField(max_length=64, blank=True, default="")
    name = models.CharField(max_length=64, blank=True, default="")
    approval_status = models.CharField(max_length=16, blank=True, default="", db_index=True)
    review_date = models.DateField(null=True, blank=True)
    reviewer_name = models.CharField(max_length=324, blank=True, default="")
    referenced_structure_set_uid = models.CharField(max_length=64, blank=True, default="", db_index=True)
    fractions_planned = models.IntegerField(null=True, blank=True)
    beam_count = models.IntegerField(default=0)

    class Meta:
        verbose_name = "RT plan"


class RTDose(models.Model):
    instance = models.OneToOneField(Instance, on_delete=models.CASCADE, related_name="dose")
    dose_type = models.CharField(max_length=16, blank=True, default="")
    dose_summation_type = models.CharField(max_length=16, blank=True, default="")
    dose_units = models.CharField(max_length=16, blank=True, default="")
    referenced_plan_uid = models.CharField(max_length=64, blank=True, default="", db_index=True)

    class Meta:
        verbose_name = "RT dose"


class RTImage(models.Model):
    instance = models.OneToOneField(Instance, on_delete=models.CASCADE, related_name="rt_image")
    label = models.CharField(max_length=64, blank=True, default="")
    referenced_plan_uid = models.CharField(max_length=64, blank=True, default="", db_index=True)
    referenced_beam_number = models.IntegerField(null=True, blank=True)

    class Meta:
        verbose_name = "RT image"


from dicomflow.catalog.models_rt import *  # noqa: E402,F401,F403  RT edges, check results, sanity (see there)
