"""The C-STORE sender (SCU) and C-ECHO: send stored files to a remote DICOM node, unchanged.

Files are sent as they are on disk: the presentation contexts proposed are exactly the files'
(SOP class, transfer syntax) pairs read from their File Meta Information, and pynetdicom streams
each data set from the file (``STORE_SEND_CHUNKED_DATASET``) — nothing is decoded, so pixel
bytes arrive identical and memory stays flat. A file whose pair the peer did not accept fails
with a clear reason (we never transcode). Files without File Meta Information (bare data sets)
are the one exception: they must be read to be sent.

``send_series`` / ``send_study`` pick the files from the catalogue; ``send_instances`` takes paths.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import _config
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomflow.errors import AssociationRejectedError, InputError, NetworkError
from dicomflow.intake.network.common import NoDelayAE, RemoteNode, parse_node

log = logging.getLogger(__name__)

MAX_CONTEXTS = 128  # PS3.8: at most 128 presentation contexts per association (odd IDs 1..255)
WARNING_STATUSES = {0xB000, 0xB006, 0xB007}

ProgressCallback = Callable[[int, int], None]


@dataclass
class FileResult:
    path: str
    status: int | None  # DIMSE status; None when the request never got an answer
    ok: bool
    reason: str = ""

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "status": None if self.status is None else f"0x{self.status:04X}",
            "ok": self.ok,
            "reason": self.reason,
        }


@dataclass
class SendReport:
    node: str
    files: list[FileResult] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(1 for f in self.files if f.ok)

    @property
    def failed(self) -> int:
        return sum(1 for f in self.files if not f.ok)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.files if f.ok and f.status in WARNING_STATUSES)

    def as_dict(self) -> dict:
        return {
            "node": self.node,
            "files": len(self.files),
            "sent": self.sent,
            "warnings": self.warnings,
            "failed": self.failed,
            "results": [f.as_dict() for f in self.files],
        }


def as_remote_node(node_or_params, our_ae_title: str | None = None) -> RemoteNode:
    """A RemoteNode from a DicomNode row, a RemoteNode, ``"AET@HOST:PORT"`` or a dict of fields."""
    if isinstance(node_or_params, RemoteNode):
        node = node_or_params
    elif isinstance(node_or_params, str):
        node = parse_node(node_or_params)
    elif isinstance(node_or_params, dict):
        node = RemoteNode(**node_or_params)
    else:  # a DicomNode model instance (duck-typed: no Django import needed here)
        node = RemoteNode(
            node_or_params.ae_title,
            node_or_params.host,
            int(node_or_params.port),
            getattr(node_or_params, "our_ae_title", "") or "DICOMFLOW",
        )
    if our_ae_title:
        node = RemoteNode(node.ae_title, node.host, node.port, our_ae_title)
    return node


def _make_ae(node: RemoteNode, timeout: float) -> NoDelayAE:
    ae = NoDelayAE(ae_title=node.our_ae_title)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = timeout
    return ae


def _associate(ae: NoDelayAE, node: RemoteNode, contexts):
    try:
        assoc = ae.associate(node.host, node.port, contexts, ae_title=node.ae_title, max_pdu=0)
    except (OSError, ValueError) as exc:
        raise NetworkError(f"cannot reach DICOM node {node} ({exc})") from None
    if assoc.is_rejected:
        raise AssociationRejectedError(
            f"DICOM node {node} rejected the association (check its AE title and that it allows "
            f"calling AE title {node.our_ae_title} from this host)"
        )
    if not assoc.is_established:
        raise NetworkError(f"no association with DICOM node {node} (not reachable, aborted or timed out)")
    _keep_reactor_off_responses(assoc)
    return assoc


def _keep_reactor_off_responses(assoc) -> None:
    """Only the sending thread may take DIMSE messages off this association's queue.

    pynetdicom pauses the association's reactor thread around each request with a flag that can
    be read stale, and on a busy machine the reactor then grabs the C-STORE response first
    ("Received unexpected C-STORE service message") and the sender waits for the DIMSE timeout.
    As a pure SCU we never serve requests, so the reactor simply gets nothing.
    """
    original = assoc.dimse.get_msg

    def get_msg(block: bool = False):
        if threading.current_thread() is assoc:
            return None, None
        return original(block)

    assoc.dimse.get_msg = get_msg


def echo(node_or_params, *, our_ae_title: str | None = None, timeout: float = 30.0) -> int:
    """C-ECHO the node; returns the DIMSE status (0 = success). Raises NetworkError subclasses."""
    node = as_remote_node(node_or_params, our_ae_title)
    ae = _make_ae(node, timeout)
    assoc = _associate(ae, node, [build_context(Verification)])
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if "Status" not in status:
        raise NetworkError(f"DICOM node {node} did not answer the C-ECHO")
    return int(status.Status)


@dataclass
class _Outgoing:
    path: Path
    sop_class: str
    transfer_syntax: str
    bare: bool = False  # no File Meta Information: must be read (and re-encoded) to be sent


def _describe(path: Path) -> _Outgoing:
    """SOP class and transfer syntax of a file without reading its data set (bare files: header only)."""
    try:
        meta = read_file_meta_info(path)
    except Exception:
        meta = None
    if meta is not None and "TransferSyntaxUID" in meta and "MediaStorageSOPClassUID" in meta:
        return _Outgoing(path, str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        sop_class = str(ds.SOPClassUID)
    except Exception as exc:
        raise InputError(f"{path}: not a DICOM file that can be sent ({exc.__class__.__name__})") from None
    return _Outgoing(path, sop_class, _syntax_of(ds), bare=True)


def _syntax_of(ds) -> str:
    return str(ImplicitVRLittleEndian if ds.original_encoding[0] else ExplicitVRLittleEndian)


def _read_bare(path: Path):
    """A bare data set (no File Meta Information) read whole, with the transfer syntax it was in."""
    ds = pydicom.dcmread(path, force=True)
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = _syntax_of(ds)
    return ds


def _groups(items: list[_Outgoing]) -> list[list[_Outgoing]]:
    """Split into runs needing at most 128 distinct contexts (normally: one group, one association)."""
    groups: list[list[_Outgoing]] = []
    seen: set[tuple[str, str]] = set()
    current: list[_Outgoing] = []
    for item in items:
        pair = (item.sop_class, item.transfer_syntax)
        if pair not in seen and len(seen) == MAX_CONTEXTS:
            groups.append(current)
            current, seen = [], set()
        seen.add(pair)
        current.append(item)
    if current:
        groups.append(current)
    return groups


def send_instances(
    node_or_params,
    paths: Iterable[str | os.PathLike],
    *,
    our_ae_title: str | None = None,
    timeout: float = 60.0,
    progress: ProgressCallback | None = None,
) -> SendReport:
    """C-STORE every file to the node over one association; report a status per file.

    Raises NetworkError / AssociationRejectedError when no association can be made at all;
    per-file failures (refused, not accepted by the peer, association lost) are in the report.
    """
    node = as_remote_node(node_or_params, our_ae_title)
    report = SendReport(str(node))
    items: list[_Outgoing] = []
    for p in paths:
        path = Path(p)
        try:
            items.append(_describe(path))
        except (InputError, OSError) as exc:
            report.files.append(FileResult(str(path), None, False, str(exc)))
    total = len(items) + len(report.files)
    _config.STORE_SEND_CHUNKED_DATASET = True  # stream from the file; exact context match required
    for group in _groups(items):
        pairs = sorted({(i.sop_class, i.transfer_syntax) for i in group})
        contexts = [build_context(sop_class, [syntax]) for sop_class, syntax in pairs]
        ae = _make_ae(node, timeout)
        assoc = _associate(ae, node, contexts)
        try:
            accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
            for item in group:
                report.files.append(_send_one(assoc, item, accepted))
                if progress:
                    progress(len(report.files), total)
        finally:
            if assoc.is_established:
                assoc.release()
    log.info("sent %d of %d files to %s (%d failed)", report.sent, len(report.files), node, report.failed)
    return report


def _send_one(assoc, item: _Outgoing, accepted: set[tuple[str, str]]) -> FileResult:
    path = str(item.path)
    if not assoc.is_established:
        return FileResult(path, None, False, "association lost before this file was sent")
    if (item.sop_class, item.transfer_syntax) not in accepted:
        return FileResult(
            path, None, False, "the node does not accept this SOP class in this transfer syntax (not transcoded)"
        )
    try:
        status = assoc.send_c_store(_read_bare(item.path) if item.bare else item.path)
    except (OSError, ValueError, AttributeError, RuntimeError) as exc:
        return FileResult(path, None, False, f"could not be sent ({exc.__class__.__name__})")
    if "Status" not in status:
        return FileResult(path, None, False, "no response (timeout or association aborted)")
    code = int(status.Status)
    ok = code == 0x0000 or code in WARNING_STATUSES
    return FileResult(path, code, ok, "" if ok else f"refused by the node (status 0x{code:04X})")


# --- catalogue selections (Django) ---------------------------------------------------------------------
def _catalogued_paths(**filters) -> list[Path]:
    from django.conf import settings

    from dicomflow.catalog.models import Instance

    rows = (
        Instance.objects.filter(**filters)
        .order_by("series_id", "instance_number", "sop_instance_uid")
        .values_list("stored_path", flat=True)
    )
    return [Path(settings.STORE_DIR) / rel for rel in rows]


def _uid(obj, attribute: str) -> str:
    return obj if isinstance(obj, str) else getattr(obj, attribute)


def send_series(series, node, **kwargs) -> SendReport:
    """Send every catalogued instance of a series (a Series row or its Series Instance UID)."""
    uid = _uid(series, "series_instance_uid")
    paths = _catalogued_paths(series__series_instance_uid=uid)
    if not paths:
        raise InputError("no catalogued instances for the given series UID")
    return send_instances(node, paths, **kwargs)


def send_study(study, node, **kwargs) -> SendReport:
    """Send every catalogued instance of a study (a Study row or its Study Instance UID)."""
    uid = _uid(study, "study_instance_uid")
    paths = _catalogued_paths(series__study__study_instance_uid=uid)
    if not paths:
        raise InputError("no catalogued instances for the given study UID")
    return send_instances(node, paths, **kwargs)
