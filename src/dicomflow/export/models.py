"""Export destinations: the remote DICOM nodes we send to."""

from django.db import models


class DicomNode(models.Model):
    """A remote DICOM application entity we send to (C-STORE) — export destinations, processors.

    The table keeps the name it had when the model lived in intake (``intake_dicomnode``): the model
    moved, the rows did not (migrations ``intake.0005`` / ``export.0001``, state only).
    """

    name = models.CharField(max_length=64, unique=True)
    ae_title = models.CharField(max_length=16)
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField()
    our_ae_title = models.CharField(max_length=16, default="DICOMFLOW", help_text="Calling AE title we use.")
    enabled = models.BooleanField(default=True)

    class Meta:
        db_table = "intake_dicomnode"
        ordering = ["name"]
        verbose_name = "DICOM node"

    def __str__(self) -> str:
        return f"{self.name} ({self.ae_title}@{self.host}:{self.port})"
