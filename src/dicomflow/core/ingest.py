"""Per-file intake step, shared by every source: read the header, store the bytes.

Runs in worker processes (no database access here): it returns plain data that the catalog
writer turns into rows in batches.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dicomflow.core.dicom.catalogable import refusal
from dicomflow.core.dicom.header import InstanceHeader, read_header, read_header_bytes
from dicomflow.core.store import FileStore, StoreResult, relative_store_path, sha256_of, variant_path
from dicomflow.core.store_capacity import StoreCapacity
from dicomflow.core.writeback import BackgroundFlush
from dicomflow.errors import InputError


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


def _occupied_by_other(store: FileStore, stored: StoreResult) -> bool:
    """The instance's path holds different bytes (a conflicting copy, or a leftover of a crash):
    ours then go beside it (``variant_path``), and the catalog decides — a conflict if the UID is
    catalogued, else a new instance. Only read when the name was taken (re-imports, conflicts)."""
    try:
        return sha256_of(store.path_of(stored.relpath))[0] != stored.sha256
    except OSError:
        return False


#: Files up to this size are read once into memory: header, hash and copy come from one read.
READ_ONCE_LIMIT = 16 * 1024 * 1024


def _placement(header, capacity: StoreCapacity | None, store: FileStore, size: int) -> tuple[str | None, str]:
    """(why the file is refused — values the catalog cannot hold, or no room — or None; its store path)."""
    problem = refusal(header)
    if problem is not None:
        return problem, ""
    relpath = store_path_for(header)
    return _refusal(capacity, store, relpath, size) or None, relpath


def ingest_file(path: str | os.PathLike, display_name: str, store: FileStore,
                capacity: StoreCapacity | None = None) -> StoredFile | IgnoredFile:
    """Read ``path``'s header and copy it into the store (unless that name is taken).

    With a ``capacity`` (disk cap, free-space reserve) a file that is new to the store is refused
    — ignored, with the reason — before any byte is written when it does not fit."""
    try:
        size = os.path.getsize(path)
        if size <= READ_ONCE_LIMIT:
            with open(path, "rb") as fh:
                data = fh.read()
            header = read_header_bytes(data)
            reason, relpath = _placement(header, capacity, store, size)
            if reason:
                return IgnoredFile(display_name, reason)
            stored = store.store_bytes(data, relpath)
            if not stored.created and _occupied_by_other(store, stored):
                stored = store.store_bytes(data, variant_path(stored.relpath, stored.sha256))
            return StoredFile(display_name, header, stored)
        header = read_header(path)
    except InputError as exc:
        return IgnoredFile(display_name, str(exc))
    except OSError as exc:
        return IgnoredFile(display_name, f"unreadable ({exc.strerror or exc})")
    reason, relpath = _placement(header, capacity, store, size)
    if reason:
        return IgnoredFile(display_name, reason)
    try:  # a StorageError (the store cannot be written) is not the file's fault: it propagates
        stored = store.store_file(path, relpath)
        if not stored.created and _occupied_by_other(store, stored):
            stored = store.store_file(path, variant_path(stored.relpath, stored.sha256))
    except OSError as exc:
        return IgnoredFile(display_name, f"unreadable ({exc.strerror or exc})")
    return StoredFile(display_name, header, stored)


def _refusal(capacity: StoreCapacity | None, store: FileStore, relpath: str, size: int) -> str | None:
    if capacity is None or not capacity.active or store.path_of(relpath).exists():
        return None  # no cap, or a duplicate (takes no room)
    return capacity.refusal(size)


# --- many files on many processes ------------------------------------------------------------------
#: Files per message between this process and a worker. Messages cost the parent (which also writes
#: the catalog, on the same cores) CPU in its pool threads: with 8 files per message ~0.18 ms per
#: file, 16 ~0.14, 32 ~0.10 (1000 CT slices, 2 workers); larger chunks leave one worker idle for
#: longer at the end and split small imports unevenly.
CHUNK_FILES = 16
_worker_store: FileStore | None = None
_worker_capacity: StoreCapacity | None = None


def _init_worker(store_root: str, fsync: str, capacity: StoreCapacity | None = None) -> None:
    global _worker_store, _worker_capacity
    # Ctrl-C reaches the whole process group. A worker interrupted while it waits for work dies
    # holding the pool's queue lock, and the parent's terminate() then waits for that lock forever;
    # the parent decides instead (Ingestion.close terminates the workers).
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_store = FileStore(store_root, fsync)
    _worker_capacity = capacity


def _work(item: tuple[str, str]) -> StoredFile | IgnoredFile:
    path, display = item
    assert _worker_store is not None
    return ingest_file(path, display, _worker_store, _worker_capacity)


class Ingestion:
    """Walk files, folders and archives and ingest every file, on ``workers`` processes.

    Work starts at construction: the pool is forked and fed at once, so a caller can build this
    *before* it sets up Django and the workers run while the catalog side starts (the CLI does:
    start-up is then hidden behind the first files). Iterating yields each file's result; the
    walk's refusals are in ``refused`` and ``seen`` counts every input once iteration is over.
    Workers never touch the database: fork this where no database connection is open.
    """

    def __init__(self, paths, work_root, limits, store: FileStore, workers: int,
                 capacity: StoreCapacity | None = None):
        from dicomflow.core.archive import InputFile, iter_input_files

        self.work_dir = Path(work_root) / f"import-{uuid.uuid4().hex}"
        self.work_dir.mkdir(parents=True)
        self.refused: list = []
        self.seen = 0
        self._store = store
        self.capacity = capacity
        self._source = iter_input_files([Path(p) for p in paths], self.work_dir, limits)
        self._input_file = InputFile
        self._pool = None
        self._writeback: BackgroundFlush | None = None
        if workers > 1:
            ctx = multiprocessing.get_context("fork")
            self._pool = ctx.Pool(workers, initializer=_init_worker, initargs=(str(store.root), store.fsync, capacity))
            self._results = self._pool.imap_unordered(_work, self._inputs(), chunksize=CHUNK_FILES)
            if store.fsync == "batch":
                self._writeback = BackgroundFlush(store.root)  # fsync batch: the catalog's syncs stay short
                self._writeback.start()
        else:
            self._results = (ingest_file(path, display, store, capacity) for path, display in self._inputs())

    def _inputs(self) -> Iterator[tuple[str, str]]:
        for entry in self._source:
            self.seen += 1
            if isinstance(entry, self._input_file):
                yield (str(entry.path), entry.display_name)
            else:
                self.refused.append(entry)

    def __iter__(self) -> Iterator[StoredFile | IgnoredFile]:
        return iter(self._results)

    def close(self) -> None:
        if self._writeback is not None:
            self._writeback.stop()
            self._writeback = None
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        shutil.rmtree(self.work_dir, ignore_errors=True)
