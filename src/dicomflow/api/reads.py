"""Transitional re-export (no logic): the catalog reads live in ``dicomflow.catalog.selectors``.

Nothing in the product imports this module any more: it only keeps code written against the old
name in parallel branches working until it moves, then it can be deleted.
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
