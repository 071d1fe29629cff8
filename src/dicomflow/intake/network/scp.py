"""The C-STORE / C-ECHO receiver (SCP): files land raw in the store and are catalogued in batches.

Why it is built this way:

- **Access at accept time, then at association time.** A host no allowlist rule names (no
  allowlist: any non-loopback host) is closed the moment it is accepted, before a byte is read.
  Every other connection must deliver its whole A-ASSOCIATE-RQ within ``request_timeout``
  (``DICOMFLOW_SCP_REQUEST_TIMEOUT``; the whole request, not per read) or it is closed; at most
  ``max_pending`` (``DICOMFLOW_SCP_MAX_PENDING``) may wait at once. Only complete requests reach
  pynetdicom or the fast path, so a silent or trickling peer never holds an association slot. Then
  the called AE title must be ours and the calling ``AET@host`` on the allowlist, else a proper
  A-ASSOCIATE-RJ (permanent, service user, "called/calling AE title not recognised").
- **Two receive paths, one outcome.** Plain storage associations (storage and verification
  contexts, no user identity / role selection / extended negotiation, no TLS) are served by
  :mod:`~dicomflow.intake.network.fastpath`: a blocking socket loop that streams each data set
  straight to a temporary file, ~2× pynetdicom's throughput. Everything else — rejections included —
  goes to pynetdicom, untouched (the fast path only *peeks* at the request). Either way the file on
  disk is the same: preamble, the File Meta pynetdicom would write (SOP class, instance, negotiated
  transfer syntax) and the data set exactly as the peer sent it. ``DICOMFLOW_SCP_FASTPATH=0``
  sends every association to pynetdicom.
- **No decode, no re-encode.** We read the header only (from the first bytes in memory on the
  fast path, else ``read_header``, which stops before the pixels) and *move* the file into the
  store (``FileStore.adopt``: hard link, never overwrites). A re-sent instance whose data set
  equals the stored file's counts as a duplicate even if the stored file came with another File
  Meta (imported from disk); a different data set under a known SOP Instance UID is a conflict.
- **Success means stored, and catalogued-to-be.** C-STORE answers 0x0000 only after the file is
  in the store; an unreadable data set, or one whose UIDs / Patient ID the catalog cannot hold
  (``core.dicom.catalogable``), gets 0xC000 (cannot understand), a store failure 0xA700 (out of
  resources), each with a log line that names no identifying value. A batch the database refuses
  is retried file by file (``ImportSession.record``).
- **No leftovers.** Temporary files of stores aborted mid data set are swept (:meth:`StorageSCP.sweep`)
  at start, after aborted associations and every ``sweep_interval`` seconds.
- **Batched catalogue.** One writer thread owns a database connection and records files every
  ``batch_size`` files or ``flush_interval`` seconds, and whenever an association ends, with the
  same :class:`~dicomflow.intake.sessions.ImportSession` every other source uses (new /
  duplicate / conflict). Each association that stores anything is one session with its ImportRun
  (source kind DICOM, source ``AET@host``), finished — and ``import_finished`` signalled — once
  when the association ends; instances record ``dicom:AET@host`` as received-from.
- **Durability.** With ``DICOMFLOW_FSYNC=batch`` the store is synced before each batch's rows
  commit, i.e. shortly *after* the C-STORE response; use ``always`` where a sender must be able
  to delete its copy the moment it gets success.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import queue
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomflow.core.dicom.catalogable import refusal
from dicomflow.core.dicom.fastheader import parse_plain_image_header
from dicomflow.core.dicom.header import read_header
from dicomflow.core.ingest import StoredFile, store_path_for
from dicomflow.core.store import FileStore, StoreResult, sha256_of, variant_path
from dicomflow.errors import ConfigurationError, InputError, StorageError
from dicomflow.intake.network import fastpath
from dicomflow.intake.network.common import Allowlist, NoDelayAE, NoDelayAssociationServer, check_ae_title

if TYPE_CHECKING:  # Django is loaded by the writer thread only
    from dicomflow.intake.sessions import ImportSession

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000

# A-ASSOCIATE-RJ: result 1 = rejected-permanent, source 1 = DICOM UL service-user
_REJECT_CALLING = (0x01, 0x01, 0x03)  # calling AE title not recognised
_REJECT_CALLED = (0x01, 0x01, 0x07)  # called AE title not recognised
_REJECT_NO_REASON = (0x01, 0x01, 0x01)
# result 2 = rejected-transient, source 3 = DICOM UL service-provider (presentation related function)
_REJECT_BUSY = (0x02, 0x03, 0x02)  # local limit exceeded
_REJECT_STOPPING = (0x02, 0x03, 0x01)  # temporary congestion

MAX_PDU = 256 * 1024  # what we announce: large PDUs mean fewer Python-level PDV fragments


# --- the catalogue writer thread --------------------------------------------------------------------
@dataclass
class _Run:
    """Per association: its import session and what is waiting to be recorded."""

    source: str
    session: ImportSession
    pending: list[StoredFile] = field(default_factory=list)
    closed_at: float | None = None


class CatalogBatcher(threading.Thread):
    """Owns one database connection; turns stored files into catalogue rows in batches.

    Producers (association threads) only put messages on a queue, so a slow database never
    stalls a C-STORE response for longer than the store write itself.
    """

    def __init__(self, store: FileStore, batch_size: int = 500, flush_interval: float = 0.5):
        super().__init__(name="dicomflow-scp-catalog", daemon=True)
        self.store = store
        self.batch_size = max(1, batch_size)
        self.flush_interval = flush_interval
        self._queue: queue.Queue = queue.Queue()
        self._runs: dict[int, _Run] = {}
        self._pending = 0
        self._first_pending_at: float | None = None
        self.batches = 0  # flushes that recorded something (tests, monitoring)
        self._journal: Path | None = None
        self.totals = {"associations": 0, "files": 0, "new": 0, "duplicate": 0, "conflicts": 0, "refused": 0,
                       "not_catalogued": 0}

    # producer side
    def stored(self, key: int, source: str, item: StoredFile) -> None:
        self._queue.put(("stored", key, source, item))

    def ignored(self, key: int, source: str, display: str, reason: str) -> None:
        self._queue.put(("ignored", key, source, (display, reason)))

    def close_run(self, key: int) -> None:
        self._queue.put(("close", key, "", None))

    def stop(self, timeout: float | None = 60.0) -> None:
        self._queue.put(("stop", 0, "", None))
        self.join(timeout)

    # consumer side
    @property
    def journal(self) -> Path:
        """Store paths answered with success but not catalogued (database outage): one per line."""
        if self._journal is None:
            from django.conf import settings

            self._journal = Path(settings.WORK_DIR) / "scp-uncatalogued.txt"
        return self._journal

    def _queue_for_later(self, batch: list[StoredFile]) -> None:
        try:
            self.journal.parent.mkdir(parents=True, exist_ok=True)
            with open(self.journal, "a", encoding="utf-8") as fh:
                fh.writelines(item.stored.relpath + "\n" for item in batch)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            log.error("receiver: could not queue uncatalogued files (%s)", exc.strerror or exc)

    def _catalogue_queued(self) -> None:
        """Files a database outage left uncatalogued last time: import them from the store now."""
        if not self.journal.is_file():
            return
        from dicomflow.intake.models import SourceKind
        from dicomflow.intake.services import import_paths

        relpaths = sorted({line.strip() for line in self.journal.read_text(encoding="utf-8").splitlines() if line.strip()})
        paths = [self.store.path_of(r) for r in relpaths if self.store.path_of(r).is_file()]
        try:
            if paths:
                report = import_paths(paths, source_kind=SourceKind.DICOM, received_from="dicom:queued", workers=1)
                log.info("receiver: catalogued %d queued file(s) from an earlier outage (%d new)",
                         len(paths), report.instances_new)
            self.journal.unlink()
        except Exception as exc:
            log.error("receiver: queued files could not be catalogued yet (%s)", exc.__class__.__name__)

    def run(self) -> None:
        from django.db import connection

        try:
            self._catalogue_queued()
        except Exception:
            log.exception("receiver: catalogue of queued files failed")
        try:
            while True:
                timeout = None
                if self._first_pending_at is not None:
                    timeout = max(0.0, self._first_pending_at + self.flush_interval - time.monotonic())
                try:
                    kind, key, source, payload = self._queue.get(timeout=timeout)
                except queue.Empty:
                    self._flush_all()
                    continue
                if kind == "stop":
                    break
                if kind == "close":
                    state = self._runs.get(key)
                    if state is not None:
                        self._flush(state)
                        self._finish(state)
                    self._prune()
                    continue
                state = self._runs.get(key)
                if state is None:
                    state = self._runs[key] = self._new_run(source)
                    self.totals["associations"] += 1
                state.session.report.files_seen += 1
                self.totals["files"] += 1
                if kind == "stored":
                    state.pending.append(payload)
                    self._pending += 1
                    if self._first_pending_at is None:
                        self._first_pending_at = time.monotonic()
                    if self._pending >= self.batch_size:
                        self._flush_all()
                else:
                    state.session.ignore(*payload)
                    self.totals["refused"] += 1
                if self._first_pending_at is not None and (
                    time.monotonic() - self._first_pending_at >= self.flush_interval
                ):
                    self._flush_all()
        finally:
            try:
                self._flush_all()
                for state in self._runs.values():
                    if not state.session.finished:
                        self._finish(state)
            except Exception:
                log.exception("receiver: could not finish the catalogue on shutdown")
            connection.close()

    def _new_run(self, source: str) -> _Run:
        from dicomflow.intake.models import SourceKind
        from dicomflow.intake.sessions import ImportSession

        from dicomflow.intake.filters import receiver_filter

        session = ImportSession(self.store, source_kind=SourceKind.DICOM, source=source,
                                received_from=f"dicom:{source}", intake_filter=receiver_filter())
        return _Run(source, session)

    def _flush_all(self) -> None:
        for state in list(self._runs.values()):
            if state.pending:
                self._flush(state)
        self._pending = 0
        self._first_pending_at = None

    def _flush(self, state: _Run) -> None:
        batch, state.pending = state.pending, []
        self._pending = max(0, self._pending - len(batch))
        report = state.session.report
        before = (report.instances_new, report.instances_duplicate, len(report.conflicts), len(report.ignored))
        try:
            state.session.record(batch)  # a file the database refuses is retried alone, then ignored
            if batch:
                self.batches += 1
                self.totals["new"] += report.instances_new - before[0]
                self.totals["duplicate"] += report.instances_duplicate - before[1]
                self.totals["conflicts"] += len(report.conflicts) - before[2]
                self.totals["not_catalogued"] += len(report.ignored) - before[3]
        except Exception as exc:  # a database outage must not kill the receiver
            log.error(
                "receiver: could not catalogue %d stored file(s) from %s (%s); they stay in the store, "
                "queued in %s to be catalogued when the receiver next starts",
                len(batch),
                state.source,
                exc.__class__.__name__,
                self.journal,
            )
            self._queue_for_later(batch)
            for item in batch:
                state.session.ignore(item.display_name, "stored, catalogue write failed (queued for the next start)")
            self.totals["not_catalogued"] += len(batch)
            return
        try:
            state.session.save()
        except Exception as exc:
            log.error("receiver: could not save the import record of %s (%s)", state.source, exc.__class__.__name__)

    def _finish(self, state: _Run) -> None:
        try:
            self._flush(state)
            report = state.session.finish()  # once per association: import_finished
            log.info(
                "receiver: association from %s: %d files, %d new, %d duplicate, %d conflicts, %d refused",
                state.source,
                report.files_seen,
                report.instances_new,
                report.instances_duplicate,
                len(report.conflicts),
                len(report.ignored),
            )
        except Exception as exc:
            log.error("receiver: could not close the import record of %s (%s)", state.source, exc.__class__.__name__)
        state.closed_at = time.monotonic()

    def _prune(self, keep_seconds: float = 300.0) -> None:
        """Forget runs closed a while ago (late stragglers from an abort are caught before that)."""
        now = time.monotonic()
        for key in [k for k, s in self._runs.items() if s.closed_at is not None and now - s.closed_at > keep_seconds]:
            del self._runs[key]


# --- the receiver -------------------------------------------------------------------------------------
class StorageSCP:
    """A running receiver. ``port=0`` binds a free port (see :attr:`port`).

    Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        aet: str,
        port: int,
        allow: list[str] | tuple[str, ...] = (),
        *,
        host: str = "0.0.0.0",
        store: FileStore | None = None,
        batch_size: int | None = None,
        flush_interval: float = 0.5,
        temp_dir: str | os.PathLike | None = None,
        max_pdu: int = MAX_PDU,
        fast_path: bool | None = None,
        query_retrieve=None,
        request_timeout: float | None = None,
        max_pending: int | None = None,
    ):
        """``query_retrieve``: also serve C-FIND/C-GET/C-MOVE with this provider (its ``contexts``,
        ``handlers()`` and ``wants(raw_request)``; see ``dicomflow.projects.qr_scp``), on the pynetdicom path."""
        from django.conf import settings

        self.aet = check_ae_title(aet, "receiver AE title")
        self.requested_port = port
        self.host = host
        self.allowlist = Allowlist(list(allow))
        self.store = store or FileStore(settings.STORE_DIR, settings.DICOMFLOW_FSYNC)
        self.temp_dir = Path(temp_dir) if temp_dir else None
        self.batcher = CatalogBatcher(self.store, batch_size or settings.DICOMFLOW_IMPORT_BATCH, flush_interval)
        from dicomflow.core.store_capacity import StoreCapacity

        self.reserve = StoreCapacity(self.store.root, 0, settings.DICOMFLOW_STORE_MIN_FREE_BYTES)
        self.max_pdu = max_pdu
        self.fast_path = settings.DICOMFLOW_SCP_FASTPATH if fast_path is None else fast_path
        self.request_timeout = float(request_timeout or settings.DICOMFLOW_SCP_REQUEST_TIMEOUT)
        self.max_pending = int(max_pending or settings.DICOMFLOW_SCP_MAX_PENDING)
        self._pending = 0  # connections accepted whose A-ASSOCIATE-RQ has not fully arrived yet
        #: connections closed before any association: host not allowed, too many pending, no/bad request
        self.connections_closed = {"host": 0, "pending": 0, "request": 0}
        self._warned: dict[str, tuple[float, int]] = {}
        self.sweep_interval = 60.0  # seconds between sweeps of the incoming folder
        self.swept = 0  # temporary files of aborted stores removed (tests, monitoring)
        self._sweep_wake = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._fast_sessions: set = set()
        self._stopping = False  # set by stop(): no association starts after it, on either path
        self._awaiting_request: set = set()  # fast-path candidates whose A-ASSOCIATE-RQ is awaited
        self.associations_by_path = {"fast": 0, "pynetdicom": 0}  # requests each path took (tests, monitoring)
        self._keys = itertools.count(1)
        self._assoc_keys: dict[object, tuple[int, str]] = {}
        self._lock = threading.Lock()
        self._server = None
        self._bound_port = 0
        self._thread: threading.Thread | None = None
        self._previous_tempdir: str | None = None
        self.query_retrieve = query_retrieve
        self.ae = self._make_ae()
        self._acceptor = fastpath.Acceptor(
            aet=self.aet,
            allows=self.allowlist.allows,
            supported_contexts=self.ae.supported_contexts,
            max_pdu=self.max_pdu,
            implementation_uid=self.ae.implementation_class_uid,
            implementation_version=self.ae.implementation_version_name or "",
        )

    def _make_ae(self) -> NoDelayAE:
        ae = NoDelayAE(ae_title=self.aet)
        ae.require_called_aet = True  # second line of defence behind _on_requested
        ae.maximum_pdu_size = self.max_pdu
        ae.maximum_associations = 32
        ae.network_timeout = 60
        ae.dimse_timeout = 60
        ae.acse_timeout = 30
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES[:4])
        if self.query_retrieve is not None:
            self.query_retrieve.configure(ae)
        return ae

    @property
    def port(self) -> int:
        return self._bound_port or self.requested_port

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> StorageSCP:
        _config.STORE_RECV_CHUNKED_DATASET = True  # stream data sets to disk, never decode them
        if self.temp_dir is not None:
            self.temp_dir.mkdir(parents=True, exist_ok=True)
            self._previous_tempdir = tempfile.tempdir
            tempfile.tempdir = str(self.temp_dir)  # pynetdicom's temp files: same file system as the store
        handlers = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_end),
            (evt.EVT_ABORTED, self._on_end),
            (evt.EVT_CONN_CLOSE, self._on_end),
        ]
        if self.query_retrieve is not None:
            handlers += self.query_retrieve.handlers()
        try:
            self._server = self.ae.make_server(
                (self.host, self.requested_port),
                evt_handlers=handlers,
                server_class=NoDelayAssociationServer,
            )
            self._server.admit = self._admit
            self._server.fast_path = self._serve
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on {self.host}:{self.requested_port} ({exc.strerror or exc}); "
                "choose another port with --port"
            ) from None
        self.ae._servers.append(self._server)
        self._bound_port = int(self._server.server_address[1])
        self.batcher.start()
        self._sweep_stale_folders()
        self.sweep()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="dicomflow-scp-sweep", daemon=True)
        self._sweeper.start()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="dicomflow-scp", daemon=True
        )
        self._thread.start()
        log.info(
            "receiver %s listening on %s:%d; accepting %s", self.aet, self.host, self.port, self.allowlist.describe()
        )
        return self

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, give running associations ``grace`` seconds, then flush the catalogue."""
        if self._server is None:
            return
        with self._lock:
            self._stopping = True  # a connection accepted earlier whose request comes now is rejected
        self._server.shutdown()  # no new associations; also removes it from ae._servers
        with self._lock:
            idle = list(self._awaiting_request)
        for sock in idle:  # connections that have not sent their request yet: closed at once
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while (self.ae.active_associations or self._fast_sessions) and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in self.ae.active_associations:
            log.warning("receiver: aborting an association still running at shutdown")
            if assoc.is_established:
                assoc.abort()
            else:  # still waiting for its request (Sta2): pynetdicom refuses an abort there; close it
                if assoc.dul.socket is not None:
                    assoc.dul.socket.close()
                assoc.kill()
        with self._lock:
            running = list(self._fast_sessions)
        for session in running:
            log.warning("receiver: aborting an association still running at shutdown")
            session.abort()
        while self._fast_sessions and time.monotonic() < deadline + 5:
            time.sleep(0.05)
        if self._thread is not None:
            self._thread.join(5)
        self._sweep_wake.set()
        if self._sweeper is not None:
            self._sweeper.join(5)
        self.batcher.stop()
        if self.temp_dir is not None:
            tempfile.tempdir = self._previous_tempdir
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        self._server = None
        log.info("receiver %s stopped", self.aet)

    def __enter__(self) -> StorageSCP:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- event handlers (association threads) -------------------------------------------------------
    def _on_requested(self, event) -> None:
        """Reject at association time: wrong called AE title, or calling AET@host not allowed."""
        assoc = event.assoc
        with self._lock:
            self.associations_by_path["pynetdicom"] += 1
        try:
            request = assoc.requestor.primitive
            called = (request.called_ae_title or "").strip()
            calling = (request.calling_ae_title or "").strip()
            address = assoc.requestor.address
            if called != self.aet:
                log.warning("receiver: rejected association from %s@%s: called AE title is not ours", calling, address)
                reason = _REJECT_CALLED
            elif not self.allowlist.allows(calling, address):
                log.warning("receiver: rejected association from %s@%s: not on the allowlist", calling, address)
                reason = _REJECT_CALLING
            else:
                with self._lock:  # pynetdicom's own limit check does not see the fast path's sessions
                    if self._stopping:
                        reason = _REJECT_STOPPING
                    elif self._acceptors() + len(self._fast_sessions) > self.ae.maximum_associations:
                        reason = _REJECT_BUSY
                    else:
                        return
                log.warning("receiver: rejected association from %s@%s: %s", calling, address,
                            "shutting down" if reason == _REJECT_STOPPING else "too many associations")
        except Exception as exc:  # fail closed
            log.error("receiver: rejected an association: access check failed (%s)", exc.__class__.__name__)
            reason = _REJECT_NO_REASON
        assoc.acse.send_reject(*reason)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()

    def _acceptors(self) -> int:
        """pynetdicom's running acceptor associations (one asking for admission counts itself)."""
        return sum(1 for assoc in self.ae.active_associations if assoc.is_acceptor)

    def _key(self, assoc) -> tuple[int, str]:
        with self._lock:
            known = self._assoc_keys.get(assoc)
            if known is None:
                source = f"{(assoc.requestor.ae_title or '').strip()}@{assoc.requestor.address}"
                known = self._assoc_keys[assoc] = (next(self._keys), source)
            return known

    def _on_end(self, event) -> None:
        with self._lock:
            known = self._assoc_keys.pop(event.assoc, None)
        if known is not None:
            self.batcher.close_run(known[0])
        if event.event in (evt.EVT_ABORTED, evt.EVT_CONN_CLOSE):
            self._sweep_wake.set()  # an aborted store may have left its temporary file

    def _on_store(self, event) -> int:
        """pynetdicom's C-STORE event: the data set was streamed to ``event.dataset_path``."""
        key, source = self._key(event.assoc)
        display = f"c-store message {event.request.MessageID}"
        try:
            path = event.dataset_path
        except AttributeError:
            log.error("receiver: C-STORE data set was not streamed to disk; refusing it")
            self.batcher.ignored(key, source, display, "receiver misconfigured (data set not streamed)")
            return STATUS_OUT_OF_RESOURCES
        return self._take_data_set(key, source, Path(path), display)

    def _take_data_set(
        self, key: int, source: str, path: Path, display: str, *, head: bytes | None = None,
        digest: tuple[str, int] | None = None,
    ) -> int:
        """Both receive paths end here: read the header, move the file into the store, queue its row.

        The fast path passes the file's first bytes (a plain image's header is parsed from them
        without opening the file again) and its sha256/size, computed while it was written.
        """
        try:
            fast = parse_plain_image_header(head, digest[1]) if head is not None and digest else None
            header = fast or read_header(path)
        except InputError as exc:
            log.warning("receiver: refused a C-STORE data set from %s: %s", source, exc)
            self.batcher.ignored(key, source, display, str(exc))
            return STATUS_CANNOT_UNDERSTAND
        problem = refusal(header)  # answered before storing: success only for what can be catalogued
        if problem is not None:
            log.warning("receiver: refused a C-STORE data set from %s: %s", source, problem)
            self.batcher.ignored(key, source, display, problem)
            return STATUS_CANNOT_UNDERSTAND
        relpath = store_path_for(header)
        no_room = self._over_reserve(path, relpath, digest)
        if no_room:  # the store's disk keeps its reserve (intake.diskcap): refused before it is stored
            log.error("receiver: refused a C-STORE data set from %s: %s", source, no_room)
            self.batcher.ignored(key, source, display, no_room)
            return STATUS_OUT_OF_RESOURCES
        try:
            stored = adopt_received(self.store, path, relpath, digest)
        except (StorageError, OSError) as exc:
            log.error("receiver: could not store a C-STORE data set from %s: %s", source, exc)
            self.batcher.ignored(key, source, display, "could not be stored (out of resources)")
            return STATUS_OUT_OF_RESOURCES
        self.batcher.stored(key, source, StoredFile(display, header, stored))
        return STATUS_SUCCESS

    def _over_reserve(self, path: Path, relpath: str, digest) -> str | None:
        """Why a new file may not enter the store: its disk would keep less than
        ``DICOMFLOW_STORE_MIN_FREE_BYTES`` free (the cap on the store's size is the import's)."""
        if not self.reserve.active or self.store.path_of(relpath).exists():
            return None
        try:
            size = digest[1] if digest else path.stat().st_size
        except OSError:
            return None
        return self.reserve.refusal(size)

    # --- the fast path (fastpath.py): plain storage associations, served without pynetdicom's reactor ----
    # --- admission: before anything reaches pynetdicom or the fast path ------------------------------------
    def _admit(self, sock, address) -> bool:
        """On the accepting thread, before a byte is read: is the host allowed, is there room to wait?

        A host no allowlist rule names is closed at once (whatever AE title it would claim); so is
        any connection beyond ``max_pending`` still owing its association request. Nothing here
        counts against the association limit.
        """
        host = str(address[0])
        if not self.allowlist.allows_host(host):
            self._closed("host", "receiver: closed a connection from %s: host not on the allowlist", host)
            return False
        with self._lock:
            full = self._pending >= self.max_pending
            if not full:
                self._pending += 1
        if full:
            self._closed("pending", "receiver: closed a connection from %s: %d connections already wait for "
                         "their association request", host, self.max_pending)
            return False
        return True

    def _closed(self, kind: str, message: str, *args) -> None:
        """Count a connection closed before association; log it, at most once a second per kind."""
        now = time.monotonic()
        with self._lock:
            self.connections_closed[kind] += 1
            last, suppressed = self._warned.get(kind, (0.0, 0))
            if now - last < 1.0:
                self._warned[kind] = (last, suppressed + 1)
                return
            self._warned[kind] = (now, 0)
        if suppressed:
            message += f" (and {suppressed} more like it)"
        log.warning(message, *args)

    def _serve(self, sock, address) -> bool:
        """Each admitted connection, on its own thread: wait (bounded) for a complete association
        request, then serve it on the fast path if it qualifies; False leaves it to pynetdicom,
        which then finds the whole request waiting and never holds a slot for a silent peer."""
        host = str(address[0])
        timeout = min(self.request_timeout, self.ae.acse_timeout or self.request_timeout)
        try:
            with self._lock:
                stopping = self._stopping
                if not stopping:
                    self._awaiting_request.add(sock)
            if stopping:
                _close(sock)
                return True
            try:
                raw = fastpath.peek_request(sock, timeout)
            except TimeoutError:
                # No complete association request in time: close, as ARTIM expiry does (PS3.8 AA-2).
                self._closed("request", "receiver: closed a connection from %s that sent no complete association "
                             "request in %g s", host, timeout)
                _close(sock)
                return True
            except fastpath.RequestRefused as exc:
                self._closed("request", "receiver: aborted a connection from %s: %s", host, exc)
                try:
                    sock.sendall(fastpath.abort_pdu(2, 0))
                except OSError:
                    pass
                _close(sock)
                return True
            except OSError:  # closed or reset before its request: nothing to answer
                _close(sock)
                return True
        finally:
            with self._lock:
                self._awaiting_request.discard(sock)
                self._pending -= 1
        if self._stopping:  # stop() began while it waited
            _close(sock)
            return True
        if not (self.fast_path and fastpath.is_plain_socket(sock)):
            return False
        if self.query_retrieve is not None and self.query_retrieve.wants(raw):
            return False  # a Query/Retrieve association: pynetdicom serves it
        negotiated = fastpath.negotiate(raw, host, self._acceptor)
        if negotiated is None:
            return False
        key, source = next(self._keys), f"{negotiated.calling_aet}@{host}"

        def on_data_set(received: fastpath.ReceivedDataSet) -> int:
            display = f"c-store message {received.message_id}"
            if received.path is None:  # the incoming file could not be written (disk full, folder gone)
                log.error("receiver: could not write a C-STORE data set from %s: %s", source, received.write_error)
                self.batcher.ignored(key, source, display, "could not be stored (out of resources)")
                return STATUS_OUT_OF_RESOURCES
            return self._take_data_set(
                key, source, received.path, display, head=received.head, digest=(received.sha256, received.size)
            )

        session = fastpath.StoreSession(
            sock, negotiated, on_data_set,
            temp_dir=self._incoming_dir(), max_pdu=self.max_pdu, timeout=self.ae.network_timeout or 60,
        )
        with self._lock:  # the limit check and the registration are one step: no two sessions take one slot
            if self._stopping or len(self._fast_sessions) + self._acceptors() >= self.ae.maximum_associations:
                return False  # pynetdicom sends the rejection ("temporary congestion" / "local limit exceeded")
            self._fast_sessions.add(session)
            self.associations_by_path["fast"] += 1
        try:
            session.run()
        finally:
            with self._lock:
                self._fast_sessions.discard(session)
            self.batcher.close_run(key)
            _close(sock)
        return True

    # --- the incoming folder: temporary files of aborted stores --------------------------------------
    def _incoming_dirs(self) -> list[Path]:
        from django.conf import settings

        dirs = [self.temp_dir] if self.temp_dir is not None else []
        dirs.append(Path(settings.WORK_DIR) / "scp-incoming")
        return dirs

    def sweep(self) -> int:
        """Remove temporary files no store is writing any more; returns how many.

        pynetdicom leaves the file of a data set whose association was aborted mid-transfer. In the
        receiver's own folder (``temp_dir``) every file older than this call goes when no association
        is running; otherwise, and in the shared folder, files untouched for longer than the network
        timeout (a live transfer writes more often than that, or is cut off) go.
        """
        with self._lock:
            idle = not self._fast_sessions and not self.ae.active_associations
        now = time.time()
        stale = now - (self.ae.network_timeout or 60) - 5
        removed = 0
        for folder in self._incoming_dirs():
            cutoff = now - 0.5 if (idle and folder == self.temp_dir) else stale
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
                except OSError:
                    pass
        if removed:
            self.swept += removed
            log.info("receiver: removed %d temporary file(s) of aborted stores", removed)
        return removed

    def _sweep_loop(self) -> None:
        while not self._stopping:
            woken = self._sweep_wake.wait(self.sweep_interval)
            self._sweep_wake.clear()
            if self._stopping:
                return
            if woken:  # let the association that just ended leave the active list
                for _ in range(10):
                    if self._stopping:
                        return
                    time.sleep(0.1)
            try:
                self.sweep()
            except Exception:
                log.exception("receiver: sweeping the incoming folder failed")

    def _sweep_stale_folders(self) -> None:
        """Incoming folders of receiver processes that no longer run (killed before their cleanup)."""
        from django.conf import settings

        for folder in Path(settings.WORK_DIR).glob("scp-incoming-*"):
            pid_text = folder.name.removeprefix("scp-incoming-")
            if not pid_text.isdigit() or (self.temp_dir is not None and folder == self.temp_dir):
                continue
            try:
                os.kill(int(pid_text), 0)
            except ProcessLookupError:
                shutil.rmtree(folder, ignore_errors=True)
                log.info("receiver: removed the incoming folder of a receiver that no longer runs")
            except OSError:
                pass

    def _incoming_dir(self) -> Path:
        """Where the fast path streams data sets: the receiver's temp dir, else ``$DICOMFLOW_HOME/work``."""
        if self.temp_dir is not None:
            return self.temp_dir
        from django.conf import settings

        incoming = Path(settings.WORK_DIR) / "scp-incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        return incoming

def adopt_received(store, path: Path, relpath: str, digest: tuple[str, int] | None = None) -> StoreResult:
    """Move a file received over the network into the store at ``relpath``: a duplicate of the
    stored data set when it is one, else beside a different file that already holds the name."""
    stored = same_data_set_as_stored(store, path, relpath)
    if stored is not None:
        return stored
    if store.path_of(relpath).exists():  # different bytes hold the name: ours go beside them
        sha, size = digest or sha256_of(path)
        digest, relpath = (sha, size), variant_path(relpath, sha)
    return store.adopt(path, relpath, digest=digest)


def same_data_set_as_stored(store, path: Path, relpath: str) -> StoreResult | None:
    """A re-sent instance whose data set equals the stored file's, whatever their File Meta.

    Our File Meta is built from the association, so a file imported from disk earlier and received
    now (C-STORE, C-GET) differs in its meta (and whole-file sha256) even when every data set byte
    is the same. Such a file counts as a duplicate of the stored one (same sha256 reported), not as
    a conflict. Only costs a read when the store path is already taken.
    """
    existing = store.path_of(relpath)
    if not existing.is_file():
        return None
    try:
        if _data_set_digest(path) != _data_set_digest(existing):
            return None
        sha, size = sha256_of(existing)
    except (OSError, ValueError, EOFError):
        return None
    return StoreResult(relpath, sha, size, created=False)


def _close(sock) -> None:
    try:
        sock.close()
    except OSError:
        pass


def _data_set_digest(path: Path) -> str:
    """sha256 of the bytes after the File Meta Information (the part that travels over DIMSE)."""
    _, offset = split_dataset(Path(path))
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(offset)
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


# --- foreground entry point (CLI ``dicomflow scp``, ``dicomflow serve`` subprocess) ------------------
def run_scp(
    aet: str | None = None,
    port: int | None = None,
    allow: list[str] | tuple[str, ...] | None = None,
    *,
    host: str = "0.0.0.0",
    grace: float = 10.0,
    stop_event: threading.Event | None = None,
    on_ready=None,
    query_retrieve=None,
) -> dict:
    """Run the receiver until SIGINT/SIGTERM (or ``stop_event``), then stop cleanly.

    Defaults come from ``DICOMFLOW_SCP_AET``, ``DICOMFLOW_SCP_PORT`` and ``DICOMFLOW_SCP_ALLOW``
    (comma-separated ``AET@HOST`` entries). Meant to own its process: it points the temporary-file
    directory at ``$DICOMFLOW_HOME/work`` so received files are moved, not copied, into the store.
    ``on_ready(scp)`` is called once the port is listening. Returns what the run received:
    ``{"aet", "port", "associations", "files", "new", "duplicate", "conflicts", "refused",
    "not_catalogued"}`` (associations that stored or were refused a file; echoes do not count).
    """
    _ensure_django()
    from django.conf import settings

    scp = StorageSCP(
        aet or settings.DICOMFLOW_SCP_AET,
        settings.DICOMFLOW_SCP_PORT if port is None else port,
        list(settings.DICOMFLOW_SCP_ALLOW if allow is None else allow),
        host=host,
        temp_dir=Path(settings.WORK_DIR) / f"scp-incoming-{os.getpid()}",
        query_retrieve=query_retrieve,
    )
    stop = stop_event or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        scp.start()
        if on_ready is not None:
            on_ready(scp)
        while not stop.wait(1.0):
            pass
        log.info("receiver: stopping (finishing running associations, flushing the catalogue)")
    finally:
        scp.stop(grace=grace)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return {"aet": scp.aet, "port": scp.port, **scp.batcher.totals}


def _ensure_django() -> None:
    from django.apps import apps

    if not apps.ready:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dicomflow.settings")
        import django

        django.setup()
