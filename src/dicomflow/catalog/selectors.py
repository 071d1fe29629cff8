"""Reads from the catalog."""

from __future__ import annotations

from dicomflow.catalog.models import Instance, Patient, Series, Study


def catalog_counts() -> dict[str, int]:
    return {
        "patients": Patient.objects.count(),
        "studies": Study.objects.count(),
        "series": Series.objects.count(),
        "instances": Instance.objects.count(),
    }
