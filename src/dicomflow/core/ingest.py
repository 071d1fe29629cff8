"""Per-file intake step, shared by every source: read the header, store the bytes.

Runs in worker processes (no database access here): it returns plain data that the catalog
writer turns into rows in batches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dicomflow.core.dicom.header import InstanceHeader, read_header, read_header_bytes
from dicomflow.core.store import FileStore, StoreResult, relative_store_path
from dicomflow.errors import InputError, StorageError


@dataclass
class StoredFile:
    """A readable DICOM instance, now present at ``stored.relpath`` in the store."""

    display_name: str
    header: InstanceHeader
    stored: StoreResult


@dataclass
class IgnoredFile:
    display_name: str
    reason: str


def store_path_for(header: InstanceHeader) -> str:
    return relative_store_path(
        header.patient_id, header.study_instance_uid, header.series_instance_uid, header.sop_instance_uid
    )


#: Files up to this size are read once into memory: header, hash and copy come from one read.
READ_ONCE_LIMIT = 16 * 1024 * 1024


def ingest_file(path: str | os.PathLike, display_name: str, store: FileStore) -> StoredFile | IgnoredFile:
    """Read ``path``'s header and copy it into the store (unless that name is taken)."""
    try:
        size = os.path.getsize(path)
        if size <= READ_ONCE_LIMIT:
            with open(path, "rb") as fh:
                data = fh.read()
            header = read_header_bytes(data)
            return StoredFile(display_name, header, store.store_bytes(data, store_path_for(header)))
        header = read_header(path)
    except InputError as exc:
        return IgnoredFile(display_name, str(exc))
    except OSError as exc:
        return IgnoredFile(display_name, f"unreadable ({exc.strerror or exc})")
    try:
        stored = store.store_file(path, store_path_for(header))
    except StorageError:
        raise
    except OSError as exc:
        return IgnoredFile(display_name, f"unreadable ({exc.strerror or exc})")
    return StoredFile(display_name, header, stored)
