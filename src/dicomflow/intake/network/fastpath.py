"""A narrow C-STORE receive path beside pynetdicom, for plain storage associations.

Why: pynetdicom's association reactor polls its queues with 1 ms sleeps and turns every PDU into
several Python objects; a bare pynetdicom storage SCP reaches ~0.37× DCMTK ``storescp`` on the
benchmark machine, and dicomflow's receiver sat at that ceiling. Nearly every association a
receiver sees is the same simple thing: propose storage (and verification) contexts, send
C-STORE-RQs one after the other, release. This module serves exactly that case with a blocking
socket loop: the P-DATA-TF bytes of a data set go straight from the socket buffer to a temporary
file (no decode, no copy into Python objects), and each C-STORE-RSP is a few dozen hand-encoded bytes.

What it does not do is left to pynetdicom, which stays the fallback and the test oracle:

- The decision is made on the *peeked* A-ASSOCIATE-RQ (``MSG_PEEK``: nothing is consumed), so an
  association the fast path declines reaches pynetdicom byte for byte as the peer sent it. The
  receiver peeks every connection's request this way (:func:`peek_request`, bounded in time and
  size) before either path sees it, so pynetdicom is never handed a connection still waiting.
- Declined: TLS, a called AE title that is not ours or a caller not on the allowlist (pynetdicom
  sends the A-ASSOCIATE-RJ, one implementation of rejection), any user-information item beyond
  maximum length / implementation UID / version name (user identity, role selection, extended
  negotiation, asynchronous operations), a malformed request, and more concurrent associations
  than allowed. (A request over ``MAX_ASSOCIATE_RQ`` or another PDU type is aborted by the receiver.)
- Negotiation itself uses pynetdicom's ``negotiate_as_acceptor`` and its PDU classes (once per
  association, not on the hot path), and stored files get the File Meta pynetdicom writes
  (``create_file_meta``), so a file received either way is byte-identical — the tests compare them.
- Anything unexpected once the association is established (an unknown PDU, a message on a context
  that was not accepted, a DIMSE service other than C-STORE/C-ECHO, a malformed command set) ends
  the association with an A-ABORT and discards the partial data set; nothing half-received is stored.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import logging
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# PDU types (PS3.8 9.3)
A_ASSOCIATE_RQ = 0x01
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

# DIMSE command fields (PS3.7 9.3, 9.1.5)
C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
NO_DATA_SET = 0x0101

# command set tags (group 0000)
TAG_AFFECTED_SOP_CLASS = 0x0002
TAG_COMMAND_FIELD = 0x0100
TAG_MESSAGE_ID = 0x0110
TAG_MESSAGE_ID_RESPONDED = 0x0120
TAG_DATA_SET_TYPE = 0x0800
TAG_STATUS = 0x0900
TAG_AFFECTED_SOP_INSTANCE = 0x1000

MAX_ASSOCIATE_RQ = 64 * 1024  # a longer request is refused before anyone decodes it (a real one is a few kB)
MAX_PDU_ACCEPTED = 64 * 1024 * 1024  # a P-DATA-TF beyond this is refused (A-ABORT), not buffered
MAX_COMMAND_SET = 64 * 1024  # a C-STORE-RQ command set is a few hundred bytes; beyond this: A-ABORT

# user-information sub-item types the fast path understands (PS3.8 D.1, PS3.7 D.3.3)
_PLAIN_USER_ITEMS = {0x51, 0x52, 0x55}  # maximum length, implementation class UID, version name


class ProtocolError(Exception):
    """The peer broke the protocol; the association is aborted."""


# --- the command set: a narrow parser and encoder (pydicom/pynetdicom are the oracles in tests) ----
def parse_command(data: bytes | bytearray | memoryview) -> dict[int, bytes]:
    """Elements of a group-0000 command set (Implicit VR Little Endian) as ``{element: value}``."""
    out: dict[int, bytes] = {}
    view = memoryview(data)
    offset, end = 0, len(view)
    while offset < end:
        if offset + 8 > end:
            raise ProtocolError("command set ends inside an element header")
        group, element, length = struct.unpack_from("<HHI", view, offset)
        offset += 8
        if group != 0x0000 or offset + length > end:
            raise ProtocolError("malformed command set")
        out[element] = bytes(view[offset : offset + length])
        offset += length
    return out


def command_uint16(command: dict[int, bytes], element: int) -> int:
    value = command.get(element)
    if value is None or len(value) != 2:
        raise ProtocolError(f"command set lacks (0000,{element:04X})")
    return struct.unpack("<H", value)[0]


def command_uid(command: dict[int, bytes], element: int) -> str:
    try:
        return command.get(element, b"").rstrip(b"\x00 ").decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError(f"(0000,{element:04X}) is not a UID") from None


def _element_us(element: int, value: int) -> bytes:
    return struct.pack("<HHIH", 0, element, 2, value)


def _element_ui(element: int, uid: str) -> bytes:
    raw = uid.encode("ascii")
    if len(raw) % 2:
        raw += b"\x00"
    return struct.pack("<HHI", 0, element, len(raw)) + raw


def encode_response(command_field: int, message_id: int, status: int, sop_class: str, sop_instance: str = "") -> bytes:
    """A C-STORE-RSP / C-ECHO-RSP command set, with its group length, as pynetdicom encodes it."""
    body = b"".join(
        part
        for part in (
            _element_ui(TAG_AFFECTED_SOP_CLASS, sop_class) if sop_class else b"",
            _element_us(TAG_COMMAND_FIELD, command_field),
            _element_us(TAG_MESSAGE_ID_RESPONDED, message_id),
            _element_us(TAG_DATA_SET_TYPE, NO_DATA_SET),
            _element_us(TAG_STATUS, status),
            _element_ui(TAG_AFFECTED_SOP_INSTANCE, sop_instance) if sop_instance else b"",
        )
    )
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def command_pdus(context_id: int, command: bytes, peer_max_pdu: int) -> bytes:
    """``command`` as P-DATA-TF PDUs (one PDV each) within the peer's maximum PDU length."""
    room = len(command) if peer_max_pdu == 0 else max(1, peer_max_pdu - 6)  # 6 = PDV header
    out = bytearray()
    for start in range(0, len(command), room):
        chunk = command[start : start + room]
        last = start + room >= len(command)
        out += struct.pack(">BBIIBB", P_DATA_TF, 0, len(chunk) + 6, len(chunk) + 2, context_id, 0x03 if last else 0x01)
        out += chunk
    return bytes(out)


def abort_pdu(source: int = 2, reason: int = 0) -> bytes:
    """A-ABORT; source 0 = service user, 2 = service provider (reason 2 = unexpected PDU)."""
    return struct.pack(">BBIBBBB", A_ABORT, 0, 4, 0, 0, source, reason)


RELEASE_RP = struct.pack(">BBII", A_RELEASE_RP, 0, 4, 0)


# --- the decision: peek at the request, negotiate with pynetdicom's own code ---------------------------
@dataclass
class Negotiated:
    """A fast-path association after its A-ASSOCIATE-AC: what every later PDU is checked against."""

    calling_aet: str
    rq_length: int  # bytes of the A-ASSOCIATE-RQ still in the socket (peeked, not consumed)
    accept_pdu: bytes
    transfer_syntaxes: dict[int, str]  # accepted context ID -> transfer syntax UID
    peer_max_pdu: int


class RequestRefused(Exception):
    """The first bytes of a connection are not an acceptable A-ASSOCIATE-RQ (another PDU, too long)."""


_REQUEST_FIXED = 68  # protocol version, reserved, called and calling AE titles, reserved (PS3.8 9.3.2)


def peek_request(sock: socket.socket, timeout: float) -> bytes:
    """The whole A-ASSOCIATE-RQ PDU, peeked (left in the socket for whoever serves it).

    ``timeout`` bounds the whole wait, not each read: a peer trickling a byte now and then is cut
    off as surely as one that sends nothing. Raises TimeoutError when no complete request arrived
    in time (the ARTIM timer), RequestRefused when the bytes cannot be a request we serve (another
    PDU type, shorter than its fixed fields, longer than MAX_ASSOCIATE_RQ), ConnectionError when
    the peer closed or reset the connection first.
    """
    deadline = time.monotonic() + timeout
    previous = sock.gettimeout()
    want, pause = 6, 0.002
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no complete association request in time")
            sock.settimeout(remaining)
            data = sock.recv(want, socket.MSG_PEEK)
            if not data:
                raise ConnectionError("peer closed the connection before its association request")
            if want == 6 and len(data) >= 6:
                if data[0] != A_ASSOCIATE_RQ:
                    raise RequestRefused(f"PDU type 0x{data[0]:02X} where an A-ASSOCIATE-RQ was expected")
                total = 6 + int.from_bytes(data[2:6], "big")
                if total > MAX_ASSOCIATE_RQ:
                    raise RequestRefused(f"A-ASSOCIATE-RQ of {total} bytes (at most {MAX_ASSOCIATE_RQ} accepted)")
                if total < 6 + _REQUEST_FIXED:
                    raise RequestRefused("A-ASSOCIATE-RQ shorter than its fixed fields")
                want = total
                continue
            if len(data) >= want:
                return data[:want]
            # Part of it is here: wait for the rest without spinning (readiness would be immediate).
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.05)
    finally:
        try:
            sock.settimeout(previous)
        except OSError:
            pass


def _user_item_types(raw: bytes) -> list[int] | None:
    """Sub-item types inside the request's User Information item (0x50), read from the raw PDU."""
    offset = 6 + 68  # PDU header + fixed fields (protocol version, reserved, AE titles, reserved)
    while offset + 4 <= len(raw):
        item_type, item_len = raw[offset], int.from_bytes(raw[offset + 2 : offset + 4], "big")
        if item_type == 0x50:
            types, sub, end = [], offset + 4, offset + 4 + item_len
            while sub + 4 <= end:
                types.append(raw[sub])
                sub += 4 + int.from_bytes(raw[sub + 2 : sub + 4], "big")
            return types
        offset += 4 + item_len
    return None


@dataclass(frozen=True)
class Acceptor:
    """What the receiver accepts: its AE title, its allowlist check, contexts and identity."""

    aet: str
    allows: Callable[[str, str], bool]  # (calling AE title, peer address) -> allowed
    supported_contexts: list
    max_pdu: int
    implementation_uid: str
    implementation_version: str


def negotiate(raw: bytes, address: str, acceptor: Acceptor) -> Negotiated | None:
    """Accept ``raw`` (an A-ASSOCIATE-RQ) on the fast path, or None to leave it to pynetdicom.

    Any error while reading the peer's bytes also means None: pynetdicom answers a malformed
    request its own way (an A-ABORT), instead of the connection being dropped without a word.
    """
    try:
        return _negotiate(raw, address, acceptor)
    except Exception as exc:
        log.debug("receiver: fast path declined an A-ASSOCIATE-RQ it could not read (%s)", exc.__class__.__name__)
        return None


def _negotiate(raw: bytes, address: str, acceptor: Acceptor) -> Negotiated | None:
    from pynetdicom.pdu import A_ASSOCIATE_AC as AcceptPDU
    from pynetdicom.pdu import A_ASSOCIATE_RQ as RequestPDU
    from pynetdicom.pdu_primitives import (
        A_ASSOCIATE,
        ImplementationClassUIDNotification,
        ImplementationVersionNameNotification,
        MaximumLengthNotification,
    )
    from pynetdicom.presentation import negotiate_as_acceptor

    types = _user_item_types(raw)
    if types is None or not set(types) <= _PLAIN_USER_ITEMS:
        return None
    try:
        pdu = RequestPDU()
        pdu.decode(raw)
        request = pdu.to_primitive()
    except Exception:  # malformed: pynetdicom answers it the way it answers everything malformed
        return None
    calling = (request.calling_ae_title or "").strip()
    if (request.called_ae_title or "").strip() != acceptor.aet or not acceptor.allows(calling, address):
        return None
    peer_max = request.maximum_length_received
    results, _ = negotiate_as_acceptor(request.presentation_context_definition_list, acceptor.supported_contexts, None)

    accept = A_ASSOCIATE()
    accept.application_context_name = request.application_context_name
    accept.calling_ae_title = request.calling_ae_title
    accept.called_ae_title = request.called_ae_title
    accept.result = 0x00
    accept.result_source = 0x01
    accept.presentation_context_definition_results_list = results
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = acceptor.max_pdu
    impl_uid = ImplementationClassUIDNotification()
    impl_uid.implementation_class_uid = acceptor.implementation_uid
    impl_version = ImplementationVersionNameNotification()
    impl_version.implementation_version_name = acceptor.implementation_version
    accept.user_information = [max_length, impl_uid, impl_version]
    ac = AcceptPDU()
    ac.from_primitive(accept)
    accepted = [cx for cx in results if cx.result == 0x00]
    return Negotiated(
        calling_aet=calling,
        rq_length=len(raw),
        accept_pdu=ac.encode(),
        transfer_syntaxes={cx.context_id: str(cx.transfer_syntax[0]) for cx in accepted},
        peer_max_pdu=int(peer_max or 0),
    )


# --- the established association ------------------------------------------------------------------
@dataclass
class ReceivedDataSet:
    """A complete received file (preamble, File Meta, data set), handed over before the response."""

    path: Path | None  # None when it could not be written (see ``write_error``)
    sop_class: str
    sop_instance: str
    message_id: int
    head: bytes  # the first bytes of the file: the header is parsed from memory when it fits
    size: int
    sha256: str  # of the whole file, computed while it was written
    write_error: str = ""  # the incoming file could not be written (disk full, folder gone): answer 0xA700


#: Moves the file into the store (or leaves it to be deleted) and returns the DIMSE status.
DataSetHandler = Callable[[ReceivedDataSet], int]

HEAD_BYTES = 64 * 1024  # enough for the header of a plain image; RT objects are re-read from the file
_file_numbers = itertools.count(1)


def file_meta_bytes_pydicom(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """Preamble, ``DICM`` and File Meta exactly as pynetdicom writes them (the oracle of the next)."""
    from pydicom.uid import UID
    from pynetdicom.dsutils import create_file_meta, write_file_meta_info

    buffer = io.BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(
        buffer,  # type: ignore[arg-type]
        create_file_meta(
            sop_class_uid=UID(sop_class), sop_instance_uid=UID(sop_instance), transfer_syntax=UID(transfer_syntax)
        ),
    )
    return buffer.getvalue()


def _meta_short(element: int, vr: bytes, raw: bytes, pad: bytes) -> bytes:
    if len(raw) % 2:
        raw += pad
    return struct.pack("<HH2sH", 0x0002, element, vr, len(raw)) + raw


def file_meta_bytes(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """The same bytes as :func:`file_meta_bytes_pydicom`, encoded by hand: ~100× cheaper per file."""
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

    body = b"".join(
        (
            struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01",
            _meta_short(0x0002, b"UI", sop_class.encode("ascii"), b"\x00"),
            _meta_short(0x0003, b"UI", sop_instance.encode("ascii"), b"\x00"),
            _meta_short(0x0010, b"UI", transfer_syntax.encode("ascii"), b"\x00"),
            _meta_short(0x0012, b"UI", str(PYNETDICOM_IMPLEMENTATION_UID).encode("ascii"), b"\x00"),
            _meta_short(0x0013, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii"), b" "),
        )
    )
    return b"\x00" * 128 + b"DICM" + struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body


class StoreSession:
    """One accepted association, served on the calling thread until release, abort or error."""

    def __init__(
        self,
        sock: socket.socket,
        negotiated: Negotiated,
        on_data_set: DataSetHandler,
        *,
        temp_dir: Path,
        max_pdu: int,
        timeout: float,
    ):
        self.sock = sock
        self.cx = negotiated
        self.on_data_set = on_data_set
        self.temp_dir = temp_dir
        self.timeout = timeout
        self._buffer = bytearray(max(max_pdu, 64 * 1024))
        self._command = bytearray()
        self._command_cx: int | None = None
        self._pending: dict[int, bytes] | None = None  # C-STORE command waiting for its data set
        self._file = None
        self._path: Path | None = None
        self._write_error = ""
        self._head = bytearray()
        self._digest = None
        self._size = 0

    # socket helpers
    def _recv_into(self, view: memoryview) -> None:
        got, want = 0, len(view)
        while got < want:
            n = self.sock.recv_into(view[got:], want - got)
            if n == 0:
                raise ConnectionError("peer closed the connection")
            got += n

    def run(self) -> None:
        """Answer the request (already negotiated) and serve P-DATA until the association ends."""
        sock = self.sock
        sock.settimeout(self.timeout)
        try:
            self._recv_into(memoryview(bytearray(self.cx.rq_length)))  # consume the peeked request
            sock.sendall(self.cx.accept_pdu)
            header = memoryview(bytearray(6))
            while True:
                self._recv_into(header)
                pdu_type, length = header[0], int.from_bytes(header[2:6], "big")
                if pdu_type == P_DATA_TF:
                    self._p_data(length)
                elif pdu_type == A_RELEASE_RQ:
                    if length != 4:
                        raise ProtocolError("A-RELEASE-RQ of the wrong length")
                    self._recv_into(memoryview(bytearray(length)))
                    sock.sendall(RELEASE_RP)
                    return
                elif pdu_type == A_ABORT:
                    return
                else:
                    raise ProtocolError(f"unexpected PDU type 0x{pdu_type:02X}")
        except ProtocolError as exc:
            log.warning("receiver: aborting an association from %s: %s", self.cx.calling_aet, exc)
            self._send_quietly(abort_pdu(2, 2))
        except (OSError, ConnectionError) as exc:  # timeout, reset, closed: nothing to answer
            log.warning("receiver: association from %s ended: %s", self.cx.calling_aet, exc.__class__.__name__)
        except Exception as exc:  # a bug of ours: the peer hears an A-ABORT, the receiver goes on
            log.error("receiver: aborting an association from %s after an internal error (%s)",
                      self.cx.calling_aet, exc.__class__.__name__)
            log.debug("receiver: internal error", exc_info=True)
            self._send_quietly(abort_pdu(2, 0))
        finally:
            self._discard_partial()

    def abort(self) -> None:
        """From another thread (shutdown): tell the peer, then close the socket under the loop."""
        self._send_quietly(abort_pdu(0, 0))
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send_quietly(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    # P-DATA-TF
    def _recv_growing(self, length: int) -> memoryview:
        """``length`` bytes in a buffer that grows as they arrive (as pynetdicom reads): a PDU
        longer than we announced costs the memory the peer actually sends, not what it claims."""
        data = bytearray()
        while len(data) < length:
            chunk = self.sock.recv(min(length - len(data), 1024 * 1024))
            if not chunk:
                raise ConnectionError("peer closed the connection")
            data += chunk
        return memoryview(data)

    def _p_data(self, length: int) -> None:
        if length > len(self._buffer):
            if length > MAX_PDU_ACCEPTED:
                raise ProtocolError(f"P-DATA-TF of {length} bytes exceeds any sensible maximum")
            body = self._recv_growing(length)  # not kept: the next PDU is back within our maximum
        else:
            body = memoryview(self._buffer)[:length]
            self._recv_into(body)
        offset = 0
        while offset < length:
            if offset + 6 > length:
                raise ProtocolError("PDV item header cut off")
            item_length = int.from_bytes(body[offset : offset + 4], "big")
            if item_length < 2 or offset + 4 + item_length > length:
                raise ProtocolError("PDV item length out of range")
            context_id, control = body[offset + 4], body[offset + 5]
            value = body[offset + 6 : offset + 4 + item_length]
            offset += 4 + item_length
            if context_id not in self.cx.transfer_syntaxes:
                raise ProtocolError(f"PDV on presentation context {context_id}, which was not accepted")
            if control & 0x01:
                self._command_fragment(context_id, value, last=bool(control & 0x02))
            else:
                self._data_fragment(context_id, value, last=bool(control & 0x02))

    def _command_fragment(self, context_id: int, value: memoryview, last: bool) -> None:
        if self._pending is not None:
            raise ProtocolError("command received while a data set was expected")
        if self._command_cx not in (None, context_id):
            raise ProtocolError("command fragments on different presentation contexts")
        self._command_cx = context_id
        if len(self._command) + len(value) > MAX_COMMAND_SET:
            raise ProtocolError("command set longer than any C-STORE/C-ECHO request")
        self._command += value
        if not last:
            return
        command = parse_command(self._command)
        self._command = bytearray()
        self._command_cx = None
        field = command_uint16(command, TAG_COMMAND_FIELD)
        message_id = command_uint16(command, TAG_MESSAGE_ID)
        has_data = command_uint16(command, TAG_DATA_SET_TYPE) != NO_DATA_SET
        if field == C_ECHO_RQ and not has_data:
            sop_class = command_uid(command, TAG_AFFECTED_SOP_CLASS)
            self.sock.sendall(
                command_pdus(context_id, encode_response(C_ECHO_RSP, message_id, 0x0000, sop_class), self.cx.peer_max_pdu)
            )
        elif field == C_STORE_RQ and has_data:
            self._start_data_set(context_id, command)
        else:
            raise ProtocolError(f"DIMSE command 0x{field:04X} is not served here")

    def _start_data_set(self, context_id: int, command: dict[int, bytes]) -> None:
        sop_class = command_uid(command, TAG_AFFECTED_SOP_CLASS)
        sop_instance = command_uid(command, TAG_AFFECTED_SOP_INSTANCE)
        if not sop_class or not sop_instance:
            raise ProtocolError("C-STORE-RQ without affected SOP class or instance")
        self._pending = command
        self._command_cx = context_id
        self._write_error = ""
        self._path = self.temp_dir / f"fast-{os.getpid()}-{next(_file_numbers)}.part"
        meta = file_meta_bytes(sop_class, sop_instance, self.cx.transfer_syntaxes[context_id])
        try:
            self._file = open(self._path, "xb")
            self._file.write(meta)
        except OSError as exc:  # only the incoming file is touched here, never the socket
            self._write_failed(exc)
        self._head = bytearray(meta)
        self._digest = hashlib.sha256(meta)
        self._size = len(meta)

    def _data_fragment(self, context_id: int, value: memoryview, last: bool) -> None:
        if self._pending is None:
            raise ProtocolError("data set fragment without a C-STORE-RQ")
        if context_id != self._command_cx:
            raise ProtocolError("data set on another presentation context than its command")
        if self._file is not None:
            try:
                self._file.write(value)
            except OSError as exc:
                self._write_failed(exc)
        self._digest.update(value)  # type: ignore[union-attr]
        self._size += len(value)
        if len(self._head) < HEAD_BYTES:
            self._head += value[: HEAD_BYTES - len(self._head)]
        if last:
            self._finish_data_set(context_id)

    def _finish_data_set(self, context_id: int) -> None:
        if self._file is not None:
            try:
                self._file.close()  # flushes: a full disk may show only now
            except OSError as exc:
                self._write_failed(exc)
        command, path, error = self._pending, self._path, self._write_error
        self._pending, self._file, self._path, self._command_cx = None, None, None, None
        assert command is not None
        sop_class = command_uid(command, TAG_AFFECTED_SOP_CLASS)
        sop_instance = command_uid(command, TAG_AFFECTED_SOP_INSTANCE)
        message_id = command_uint16(command, TAG_MESSAGE_ID)
        received = ReceivedDataSet(
            None if error else path, sop_class, sop_instance, message_id, bytes(self._head), self._size,
            self._digest.hexdigest(), error,  # type: ignore[union-attr]
        )
        self._head, self._digest, self._write_error = bytearray(), None, ""
        try:
            status = self.on_data_set(received)
        finally:
            if path is not None:
                path.unlink(missing_ok=True)  # moved into the store (a link) or refused: the temp name goes
        rsp = encode_response(C_STORE_RSP, message_id, status, sop_class, sop_instance)
        self.sock.sendall(command_pdus(context_id, rsp, self.cx.peer_max_pdu))

    def _write_failed(self, exc: OSError) -> None:
        """The incoming file cannot be written: drop it, read the rest of the data set, answer 0xA700."""
        if not self._write_error:
            self._write_error = exc.strerror or exc.__class__.__name__
        self._drop_file()

    def _discard_partial(self) -> None:
        self._drop_file()
        self._path = self._pending = None

    def _drop_file(self) -> None:
        """Close and remove the incoming file (a failing flush must not keep it from being removed)."""
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:
                pass
        if self._path is not None:
            self._path.unlink(missing_ok=True)


def is_plain_socket(sock) -> bool:
    return isinstance(sock, socket.socket) and not isinstance(sock, ssl.SSLSocket)
