"""Transitional re-export (no logic): who may see what, under the names API code first used.

The rules live in ``dicomflow.projects.selectors`` (catalog visibility, upload and import
permissions) and ``dicomflow.processing.selectors`` (jobs); the web UI and the API views import
them from there. Nothing in the product imports this module any more: it only keeps code written
against the old name in parallel branches working until it moves, then it can be deleted.
"""

from dicomflow.catalog import rt_selectors as _rt_selectors
from dicomflow.processing.selectors import VIEW_JOBS_PERMISSION  # noqa: F401
from dicomflow.processing.selectors import series_processing_state as processing_state  # noqa: F401
from dicomflow.processing.selectors import visible_jobs as jobs  # noqa: F401
from dicomflow.projects.selectors import UPLOAD_PERMISSION, VIEW_IMPORTS_PERMISSION  # noqa: F401
from dicomflow.projects.selectors import can_see_clinical as can_see_review  # noqa: F401
from dicomflow.projects.selectors import can_upload, can_view_imports  # noqa: F401
from dicomflow.projects.selectors import projects_for as projects  # noqa: F401
from dicomflow.projects.selectors import visible_instances as instances  # noqa: F401
from dicomflow.projects.selectors import visible_patients as patients  # noqa: F401
from dicomflow.projects.selectors import visible_series as series  # noqa: F401
from dicomflow.projects.selectors import visible_studies as studies  # noqa: F401


def rt_selectors():
    """``dicomflow.catalog.rt_selectors`` (kept callable for the API views written against it)."""
    return _rt_selectors
