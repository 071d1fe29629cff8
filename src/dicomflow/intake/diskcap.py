"""The disk cap of the file store at import time (:mod:`dicomflow.core.store_capacity`).

``DICOMFLOW_STORE_MAX_BYTES`` caps what the store may hold (the bytes held are the catalogue's
instance sizes when an import starts); ``DICOMFLOW_STORE_MIN_FREE_BYTES`` is the free space that
must remain on the store's disk. Every import (CLI, uploads, watched folders, staging, Q/R) goes
through :func:`dicomflow.intake.services.import_paths`, whose ingestion refuses a new file that
does not fit — an ignored file with the reason, counted in the import's report — before writing it.
An import that refused files raises the alarm once: an ERROR in the log and the :data:`store_full`
signal (the notifications listen and mail the administrators).

The C-STORE receiver keeps the free-space reserve too: a new data set that would leave less than
``DICOMFLOW_STORE_MIN_FREE_BYTES`` free is answered 0xA700 (out of resources) and recorded as
ignored with the reason (intake/network/scp.py); the cap on the store's size is checked by imports.

Upload sessions check their own quotas and free space when they are created (separate module,
``DICOMFLOW_UPLOAD_*``); this one guards the store itself, whatever feeds it.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db.models import Sum
from django.dispatch import Signal

from dicomflow.core.store_capacity import StoreCapacity, human_bytes

log = logging.getLogger(__name__)

#: sent once per import that refused files: ``refused`` (count), ``reason`` (one of them), ``source``
store_full = Signal()


def store_used_bytes() -> int:
    from dicomflow.catalog.models import Instance

    return int(Instance.objects.aggregate(total=Sum("size"))["total"] or 0)


def store_capacity() -> StoreCapacity | None:
    """The capacity for a new import (None when neither limit is set)."""
    max_bytes = settings.DICOMFLOW_STORE_MAX_BYTES
    min_free = settings.DICOMFLOW_STORE_MIN_FREE_BYTES
    if not max_bytes and not min_free:
        return None
    return StoreCapacity(settings.STORE_DIR, max_bytes, min_free, store_used_bytes() if max_bytes else 0)


def usage() -> dict:
    """The store's figures for reports: bytes held, cap, free space and reserve."""
    import shutil

    free = shutil.disk_usage(settings.STORE_DIR).free
    return {"store_bytes": store_used_bytes(), "max_bytes": settings.DICOMFLOW_STORE_MAX_BYTES,
            "free_bytes": free, "min_free_bytes": settings.DICOMFLOW_STORE_MIN_FREE_BYTES}


def alarm(capacity: StoreCapacity | None, report, source: str) -> None:
    """After an import: if the capacity refused files, log it and send :data:`store_full` once."""
    if capacity is None or not capacity.refused:
        return
    reason = next((i["reason"] for i in report.ignored if str(i.get("reason", "")).startswith("refused: the store")),
                  "the store is full")
    log.error("store full: %d file(s) of an import refused (%s); store %s, cap %s", capacity.refused, reason,
              human_bytes(capacity.used_bytes), human_bytes(capacity.max_bytes) if capacity.max_bytes else "none")
    store_full.send(sender=StoreCapacity, refused=capacity.refused, reason=reason, source=source)
