"""The operator's registry (:mod:`dicomflow.core.operator_registry`) as this installation has it.

Read from ``settings.DICOMFLOW_PROCESSORS`` each time it is asked for (the file is small; an
operator's edit applies to the next job without a restart, and tests point the setting elsewhere).
"""

from __future__ import annotations

from django.conf import settings

from dicomflow.core.operator_registry import OperatorRegistry, load_registry


def operator_registry() -> OperatorRegistry:
    return load_registry(settings.DICOMFLOW_PROCESSORS)
