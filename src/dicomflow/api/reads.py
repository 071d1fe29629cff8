"""Catalog reads as the API modules first named them: they live in ``dicomflow.catalog.selectors``.

A re-export only (no logic here), so API code written against this name keeps working; new code
imports ``dicomflow.catalog.selectors`` directly.
"""

from dicomflow.catalog.selectors import (  # noqa: F401
    FILTERS,
    check_series_files,
    filter_instances,
    filter_patients,
    filter_series,
    filter_studies,
    image_geometry,
    member_name,
    rt_details,
    series_checks,
    stream_series_zip,
)
