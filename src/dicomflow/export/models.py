"""Export destinations: the remote DICOM nodes we send to."""

from django.conf import settings
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
    qr_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        verbose_name="Q/R peer account",
        help_text="When this node queries or retrieves from dicomflow (C-FIND, C-GET, C-MOVE) it acts as this "
                  "account: the account's roles decide what it finds and retrieves. Empty: it gets nothing.",
    )
    intake_filter = models.ForeignKey(
        "intake.IntakeFilter", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Intake filter of pulls from this node (C-GET); empty: the default filter.",
    )

    class Meta:
        db_table = "intake_dicomnode"
        ordering = ["name"]
        verbose_name = "DICOM node"

    def __str__(self) -> str:
        return f"{self.name} ({self.ae_title}@{self.host}:{self.port})"
