"""The receiver's C-STORE fast path, with pynetdicom as its oracle and DCMTK/pynetdicom/raw sockets as peers.

- The narrow command parser and response encoder agree with pydicom's decoding and pynetdicom's
  encoding of the same messages.
- A series received on the fast path is stored byte for byte as pynetdicom's path stores it.
- Associations the fast path declines reach pynetdicom intact and are served (or rejected) there.
- Protocol violations end the association with an A-ABORT and leave nothing half-received behind.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from conftest import require_tool
from pynetdicom import AE, build_context, build_role
from pynetdicom.dimse_messages import C_ECHO_RSP, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import decode
from pynetdicom.pdu import A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
    UserIdentityNegotiation,
)
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from dicomflow.intake.network import fastpath
from dicomflow.testing import synth

AET = "DFFAST"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


# --- the narrow codec against pydicom / pynetdicom -----------------------------------------------------
def _pdata_bytes(message, context_id: int = 1, max_pdu: int = 16384) -> list[bytes]:
    """pynetdicom's encoding of a DIMSE message: the P-DATA-TF PDUs, as bytes."""
    out = []
    for primitive in message.encode_msg(context_id, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        out.append(pdu.encode())
    return out


def _command_of(pdus: list[bytes]) -> bytes:
    command = bytearray()
    for raw in pdus:
        offset = 6
        while offset < len(raw):
            length = int.from_bytes(raw[offset : offset + 4], "big")
            control = raw[offset + 5]
            if control & 1:
                command += raw[offset + 6 : offset + 4 + length]
            offset += 4 + length
    return bytes(command)


@pytest.mark.parametrize("originator", [None, "MOVESCU"])
def test_command_parser_agrees_with_pydicom(originator):
    primitive = C_STORE()
    primitive.MessageID = 4321
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.12345"  # odd length: padded
    primitive.Priority = 2
    if originator:
        primitive.MoveOriginatorApplicationEntityTitle = originator
        primitive.MoveOriginatorMessageID = 9
    primitive.DataSet = io.BytesIO(b"\x08\x00\x16\x00\x00\x00\x00\x00")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    command = _command_of(_pdata_bytes(message))

    parsed = fastpath.parse_command(command)
    oracle = decode(io.BytesIO(command), True, True)
    assert set(parsed) == {elem.tag.element for elem in oracle}
    assert fastpath.command_uint16(parsed, fastpath.TAG_COMMAND_FIELD) == oracle.CommandField == 0x0001
    assert fastpath.command_uint16(parsed, fastpath.TAG_MESSAGE_ID) == oracle.MessageID == 4321
    assert fastpath.command_uint16(parsed, fastpath.TAG_DATA_SET_TYPE) == oracle.CommandDataSetType != 0x0101
    assert fastpath.command_uid(parsed, fastpath.TAG_AFFECTED_SOP_CLASS) == oracle.AffectedSOPClassUID
    assert fastpath.command_uid(parsed, fastpath.TAG_AFFECTED_SOP_INSTANCE) == oracle.AffectedSOPInstanceUID


@pytest.mark.parametrize("bad", [b"\x00\x00\x00\x01\x10\x00", b"\x08\x00\x16\x00\x02\x00\x00\x00AB",
                                 b"\x00\x00\x00\x01\xff\x00\x00\x00"])
def test_command_parser_refuses_malformed_sets(bad):
    with pytest.raises(fastpath.ProtocolError):
        fastpath.parse_command(bad)


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC000])
@pytest.mark.parametrize("peer_max", [16384, 40])
def test_store_response_is_encoded_as_pynetdicom_encodes_it(status, peer_max):
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 77
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = "1.2.3.44"
    primitive.Status = status
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    ours = fastpath.encode_response(fastpath.C_STORE_RSP, 77, status, CTImageStorage, "1.2.3.44")
    assert b"".join(_pdata_bytes(message, 3, peer_max)) == fastpath.command_pdus(3, ours, peer_max)


def test_echo_response_is_encoded_as_pynetdicom_encodes_it():
    primitive = C_ECHO()
    primitive.MessageIDBeingRespondedTo = 5
    primitive.AffectedSOPClassUID = Verification
    primitive.Status = 0x0000
    message = C_ECHO_RSP()
    message.primitive_to_message(primitive)
    ours = fastpath.encode_response(fastpath.C_ECHO_RSP, 5, 0x0000, Verification)
    assert b"".join(_pdata_bytes(message, 1)) == fastpath.command_pdus(1, ours, 16384)


@pytest.mark.parametrize("instance", ["1.2.3.4", "1.2.826.0.1.3680043.8.498.1234567890123456789012345"])
@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50"])
def test_file_meta_is_encoded_as_pynetdicom_writes_it(instance, syntax):
    for sop_class in (CTImageStorage, "1.2.840.10008.5.1.4.1.1.481.3"):  # even and odd lengths
        assert fastpath.file_meta_bytes(sop_class, instance, syntax) == fastpath.file_meta_bytes_pydicom(
            sop_class, instance, syntax
        )


# --- real receivers ------------------------------------------------------------------------------------
@pytest.fixture
def series(tmp_path):
    return synth.write_image_series(tmp_path / "ct", n_slices=6, rows=48, cols=48)


@pytest.fixture
def receivers(tmp_path):
    from dicomflow.intake.network.scp import StorageSCP

    started = []

    def start(**kw):
        kw.setdefault("temp_dir", tmp_path / f"incoming-{len(started)}")
        scp = StorageSCP(AET, 0, kw.pop("allow", []), host="127.0.0.1", **kw).start()
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop(grace=2)


def storescu(port, paths, *extra):
    exe = require_tool("storescu")
    args = [exe, *extra, "-aet", "STORESCU", "-aec", AET, "127.0.0.1", str(port), *map(str, paths)]
    return subprocess.run(args, env=DCMTK_ENV, capture_output=True, text=True, timeout=120)


@pytest.mark.dcmtk
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("pdu", [None, "4096"], ids=["default-pdu", "small-pdu"])
def test_fast_path_stores_the_same_bytes_as_pynetdicom(tmp_path, series, receivers, pdu):
    """The oracle: one series through each path, into separate stores, must give identical files."""
    from dicomflow.core.store import FileStore
    from dicomflow.intake.models import ImportRun

    extra = ("--max-send-pdu", pdu) if pdu else ()
    stores = {}
    for fast in (True, False):
        store = FileStore(tmp_path / f"store-{fast}", fsync="never")
        scp = receivers(store=store, fast_path=fast)
        result = storescu(scp.port, series.paths, *extra)
        assert result.returncode == 0, result.stderr
        scp.stop()
        assert scp.associations_by_path == {"fast": int(fast), "pynetdicom": int(not fast)}
        stores[fast] = {p.relative_to(store.root): p.read_bytes() for p in store.root.rglob("*.dcm")}
    assert len(stores[True]) == len(series.paths)
    assert stores[True] == stores[False]
    first, second = ImportRun.objects.order_by("id")  # same SOP UIDs and sha256 twice: duplicates, no conflict
    assert (first.instances_new, second.instances_duplicate, second.conflicts) == (len(series.paths),) * 2 + ([],)


@pytest.mark.django_db(transaction=True)
def test_plain_pynetdicom_requestor_takes_the_fast_path(series, receivers):
    from dicomflow.catalog.models import Instance

    scp = receivers()
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage, series.transfer_syntax_uid)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=AET)
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000
        statuses = [assoc.send_c_store(p).Status for p in series.paths]
    finally:
        assoc.release()
    scp.stop()
    assert statuses == [0x0000] * len(series.paths)
    assert scp.associations_by_path == {"fast": 1, "pynetdicom": 0}
    assert Instance.objects.count() == len(series.paths)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("negotiation", ["user-identity", "role-selection"])
def test_associations_with_extended_negotiation_are_served_by_pynetdicom(series, receivers, negotiation):
    from dicomflow.catalog.models import Instance

    scp = receivers()
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage, series.transfer_syntax_uid)
    if negotiation == "user-identity":
        item = UserIdentityNegotiation()
        item.user_identity_type = 1
        item.primary_field = b"someone"
        ext = [item]
    else:
        ext = [build_role(CTImageStorage, scu_role=True)]
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=AET, ext_neg=ext)
    assert assoc.is_established
    try:
        assert assoc.send_c_store(series.paths[0]).Status == 0x0000
    finally:
        assoc.release()
    scp.stop()
    assert scp.associations_by_path == {"fast": 0, "pynetdicom": 1}
    assert Instance.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_callers_not_allowed_are_rejected_by_pynetdicom(series, receivers):
    scp = receivers(allow=["GOOD@127.0.0.1"])
    ae = AE(ae_title="BAD")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=AET)
    assert assoc.is_rejected
    scp.stop()
    assert scp.associations_by_path == {"fast": 0, "pynetdicom": 1}


# --- raw peers: fragmentation and protocol violations ----------------------------------------------------
def associate_request(max_pdu: int = 16384, contexts=((1, CTImageStorage),)) -> bytes:
    """A plain A-ASSOCIATE-RQ (the kind the fast path serves), encoded by pynetdicom."""
    request = A_ASSOCIATE()
    request.application_context_name = "1.2.840.10008.3.1.1.1"
    request.calling_ae_title = "RAWSCU"
    request.called_ae_title = AET
    request.presentation_context_definition_list = [build_context(uid, "1.2.840.10008.1.2.1") for _, uid in contexts]
    for (cid, _), cx in zip(contexts, request.presentation_context_definition_list):
        cx.context_id = cid
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = max_pdu
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = "1.2.3.4.5"
    request.user_information = [max_length, impl]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(request)
    return pdu.encode()


class RawPeer:
    """A hand-driven association requestor: every byte on the wire is the test's choice."""

    def __init__(self, port: int, *, max_pdu: int = 16384, contexts=((1, CTImageStorage),), sock=None):
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(associate_request(max_pdu, contexts))
        kind, _ = self.read_pdu()
        assert kind == 0x02, "association not accepted"

    def read_pdu(self) -> tuple[int, bytes]:
        head = self._exact(6)
        return head[0], self._exact(int.from_bytes(head[2:6], "big"))

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def send_pdvs(self, pdvs: list[tuple[int, int, bytes]]) -> None:
        """One P-DATA-TF holding ``(context_id, control, value)`` PDVs."""
        items = b"".join(struct.pack(">IBB", len(v) + 2, cid, ctl) + v for cid, ctl, v in pdvs)
        self.sock.sendall(struct.pack(">BBI", 0x04, 0, len(items)) + items)

    def response(self) -> dict[int, bytes]:
        command = b""
        while True:
            kind, body = self.read_pdu()
            assert kind == 0x04, f"expected P-DATA-TF, got PDU 0x{kind:02X}"
            offset, last = 0, False
            while offset < len(body):
                length = int.from_bytes(body[offset : offset + 4], "big")
                command += body[offset + 6 : offset + 4 + length]
                last = bool(body[offset + 5] & 2)
                offset += 4 + length
            if last:
                return fastpath.parse_command(command)

    def close(self):
        self.sock.close()


def _store_command(ds, message_id: int = 1) -> bytes:
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = ds.SOPClassUID
    primitive.AffectedSOPInstanceUID = ds.SOPInstanceUID
    primitive.Priority = 0
    primitive.DataSet = io.BytesIO(b"")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    return _command_of(_pdata_bytes(message))


def _explicit_data_set(path: Path) -> bytes:
    ds = pydicom.dcmread(path)
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=False, little_endian=True)  # data set only, Explicit VR LE
    return buffer.getvalue()


@pytest.mark.django_db(transaction=True)
def test_fragmented_messages_and_tiny_peer_pdu(series, receivers):
    """Command split over PDVs in two PDUs, data set in 1000-byte PDVs (several per PDU), a peer
    that takes 32-byte PDUs: the response is fragmented, the stored data set equals what was sent."""
    from django.conf import settings

    from dicomflow.catalog.models import Instance

    scp = receivers()
    peer = RawPeer(scp.port, max_pdu=32)
    ds = pydicom.dcmread(series.paths[0], stop_before_pixels=True)
    command, data = _store_command(ds, 11), _explicit_data_set(series.paths[0])
    peer.send_pdvs([(1, 0x01, command[:20]), (1, 0x01, command[20:40])])
    peer.send_pdvs([(1, 0x03, command[40:])])
    chunks = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    for start in range(0, len(chunks), 3):
        group = chunks[start : start + 3]
        peer.send_pdvs([(1, 0x02 if start + i == len(chunks) - 1 else 0x00, c) for i, c in enumerate(group)])
    response = peer.response()
    assert fastpath.command_uint16(response, fastpath.TAG_STATUS) == 0x0000
    assert fastpath.command_uint16(response, fastpath.TAG_MESSAGE_ID_RESPONDED) == 11
    peer.sock.sendall(struct.pack(">BBII", 0x05, 0, 4, 0))
    assert peer.read_pdu()[0] == 0x06  # A-RELEASE-RP
    peer.close()
    scp.stop()
    row = Instance.objects.get()
    stored = (Path(settings.STORE_DIR) / row.stored_path).read_bytes()
    assert stored.endswith(data) and stored[128:132] == b"DICM"
    assert scp.associations_by_path["fast"] == 1


def _leftovers(scp) -> list[Path]:
    return [p for p in Path(scp.temp_dir).iterdir()] if Path(scp.temp_dir).exists() else []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "violation",
    ["unaccepted-context", "c-find", "non-ascii-uid", "data-without-command", "unknown-pdu", "abort-mid-data-set", "close-mid-data-set"],
)
def test_protocol_violations_abort_and_leave_nothing_behind(series, receivers, violation):
    from dicomflow.catalog.models import Instance

    scp = receivers()
    peer = RawPeer(scp.port)
    ds = pydicom.dcmread(series.paths[0], stop_before_pixels=True)
    data = _explicit_data_set(series.paths[0])
    expect_abort = True
    if violation == "unaccepted-context":
        peer.send_pdvs([(9, 0x03, _store_command(ds))])
    elif violation == "c-find":
        command = bytearray(_store_command(ds))
        at = command.index(struct.pack("<HHIH", 0, 0x0100, 2, 0x0001))
        command[at + 8 : at + 10] = struct.pack("<H", 0x0020)  # C-FIND-RQ on a storage context
        peer.send_pdvs([(1, 0x03, bytes(command))])
    elif violation == "non-ascii-uid":
        command = bytearray(_store_command(ds))
        at = command.index(str(ds.SOPInstanceUID).encode())
        command[at] = 0xFF
        peer.send_pdvs([(1, 0x03, bytes(command))])
    elif violation == "data-without-command":
        peer.send_pdvs([(1, 0x02, data[:100])])
    elif violation == "unknown-pdu":
        peer.sock.sendall(struct.pack(">BBI", 0x09, 0, 2) + b"\x00\x00")
    else:
        peer.send_pdvs([(1, 0x03, _store_command(ds)), (1, 0x00, data[: len(data) // 2])])
        expect_abort = False
        if violation == "abort-mid-data-set":
            peer.sock.sendall(fastpath.abort_pdu(0, 0))
        peer.sock.shutdown(socket.SHUT_WR)
    if expect_abort:
        kind, body = peer.read_pdu()
        assert kind == 0x07 and body[2:4] == b"\x02\x02"  # A-ABORT: service provider, unexpected PDU
    with pytest.raises((ConnectionError, OSError)):
        peer.read_pdu()  # and the connection is closed
    peer.close()
    deadline = time.monotonic() + 5
    while scp._fast_sessions and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _leftovers(scp) == []  # the partial data set was discarded
    scp.stop()
    assert Instance.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_stop_aborts_a_fast_association_that_does_not_end(receivers):
    scp = receivers()
    peer = RawPeer(scp.port)
    started = time.monotonic()
    scp.stop(grace=0.5)
    assert time.monotonic() - started < 5
    kind, _ = peer.read_pdu()
    assert kind == 0x07  # A-ABORT on shutdown
    peer.close()


# --- admission: the association limit across both paths, requests during shutdown -----------------------
@pytest.mark.django_db(transaction=True)
def test_association_limit_counts_both_paths(receivers):
    """Fast-path associations count against ``maximum_associations`` when pynetdicom decides too:
    the request the fast path declines for the limit is rejected (transient, local limit exceeded)."""
    scp = receivers()
    scp.ae.maximum_associations = 2
    peers = [RawPeer(scp.port), RawPeer(scp.port)]
    assert scp.associations_by_path == {"fast": 2, "pynetdicom": 0}
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=AET)
    try:
        assert assoc.is_rejected
        rejection = assoc.acceptor.primitive
        assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x02, 0x03, 0x02)
    finally:
        if assoc.is_established:
            assoc.abort()
        for peer in peers:
            peer.close()
    scp.stop()
    assert scp.associations_by_path == {"fast": 2, "pynetdicom": 1}


@pytest.mark.django_db(transaction=True)
def test_a_request_arriving_after_shutdown_is_not_served(receivers):
    """A connection accepted before stop() whose A-ASSOCIATE-RQ comes later must not start an
    association on a receiver whose catalogue writer and temp dir are gone: stop() closed it."""
    scp = receivers()
    sock = socket.create_connection(("127.0.0.1", scp.port), timeout=10)
    time.sleep(0.3)  # accepted: its connection thread is waiting for the request
    scp.stop(grace=0.5)
    try:
        sock.sendall(associate_request())
        head = sock.recv(6)
    except ConnectionError:
        head = b""
    sock.close()
    assert head == b"", "a request after stop() was answered"
    assert scp.associations_by_path == {"fast": 0, "pynetdicom": 0}


# --- allocations the peer controls ------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_pdu_length_claimed_by_the_peer_is_not_allocated_up_front(receivers):
    """A P-DATA-TF header claiming 60 MB, followed by a few bytes: memory follows what arrives."""
    import tracemalloc

    scp = receivers()
    peer = RawPeer(scp.port)
    tracemalloc.start()
    try:
        peer.sock.sendall(struct.pack(">BBI", 0x04, 0, 60 * 1024 * 1024) + b"\x00" * 10)
        peer.sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 5
        while scp._fast_sessions and time.monotonic() < deadline:
            time.sleep(0.02)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    peer.close()
    assert not scp._fast_sessions
    assert peak < 8 * 1024 * 1024


@pytest.mark.django_db(transaction=True)
def test_a_command_set_that_never_ends_is_aborted(receivers):
    """Command fragments without a last one are not buffered forever: past a sane size, A-ABORT."""
    scp = receivers()
    peer = RawPeer(scp.port)
    for _ in range(3):  # 96 kB of "command", none of it the last fragment
        peer.send_pdvs([(1, 0x01, b"\x00" * 32768)])
    kind, body = peer.read_pdu()
    peer.close()
    assert kind == 0x07 and body[2] == 2


@pytest.mark.django_db(transaction=True)
def test_a_local_write_failure_answers_out_of_resources_and_the_association_goes_on(series, receivers):
    """The incoming file cannot be created (its folder is gone, as after a cleaner; a full disk
    behaves alike): the data set is read to its end and answered 0xA700, nothing is catalogued,
    and the next C-STORE on the same association succeeds once the folder is back."""
    import shutil

    from dicomflow.catalog.models import Instance
    from dicomflow.intake.models import ImportRun

    scp = receivers()
    peer = RawPeer(scp.port)
    shutil.rmtree(scp.temp_dir)
    statuses = []
    for number, path in enumerate(series.paths[:2], start=1):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        data = _explicit_data_set(path)
        peer.send_pdvs([(1, 0x03, _store_command(ds, number))])
        peer.send_pdvs([(1, 0x00, data[:500]), (1, 0x02, data[500:])])
        statuses.append(fastpath.command_uint16(peer.response(), fastpath.TAG_STATUS))
        scp.temp_dir.mkdir(exist_ok=True)
    peer.sock.sendall(struct.pack(">BBII", 0x05, 0, 4, 0))
    assert peer.read_pdu()[0] == 0x06
    peer.close()
    assert list(scp.temp_dir.iterdir()) == []  # nothing half-written left behind
    scp.stop()
    assert statuses == [0xA700, 0x0000]
    assert Instance.objects.count() == 1
    run = ImportRun.objects.get()
    assert run.files_seen == 2 and run.instances_new == 1
    assert [i["reason"] for i in run.ignored] == ["could not be stored (out of resources)"]


@pytest.mark.django_db(transaction=True)
def test_a_malformed_request_the_fast_path_cannot_read_is_left_to_pynetdicom(receivers):
    """User Information item longer than the PDU: pynetdicom answers it (A-ABORT) as it answers any
    undecodable request; the fast path must not drop the connection with a traceback."""
    scp = receivers()
    raw = bytearray(associate_request())
    at = raw.index(b"\x50\x00", 74)
    raw[at + 2 : at + 4] = (int.from_bytes(raw[at + 2 : at + 4], "big") + 8).to_bytes(2, "big")
    sock = socket.create_connection(("127.0.0.1", scp.port), timeout=10)
    sock.sendall(raw)
    head = sock.recv(6)
    sock.close()
    scp.stop(grace=0.5)
    assert head[:1] == b"\x07"


@pytest.mark.django_db(transaction=True)
def test_a_connection_that_sends_no_request_is_closed_after_the_acse_timeout(receivers):
    """ARTIM expiry (PS3.8 AA-2): closed once after the ACSE timeout, not waited out twice."""
    scp = receivers()
    scp.ae.acse_timeout = 0.5
    sock = socket.create_connection(("127.0.0.1", scp.port), timeout=10)
    started = time.monotonic()
    assert sock.recv(6) == b""  # closed by the receiver, nothing sent
    waited = time.monotonic() - started
    sock.close()
    scp.stop()
    assert 0.4 < waited < 3
    assert scp.associations_by_path == {"fast": 0, "pynetdicom": 0}
