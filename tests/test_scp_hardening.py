"""The receiver under attack (issue 14): nobody can block it before associating, aborted stores
leave no temporary files behind, and every C-STORE answer says what really happened.

Real sockets throughout: hostile peers are raw sockets (bound to 127.0.0.2, a loopback address
the allowlist does not name, where the attack comes "from another host"), the allowed sender is
pynetdicom or DCMTK's storescu on 127.0.0.1.
"""

from __future__ import annotations

import socket
import struct
import time

import pydicom
import pytest
from conftest import require_tool
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from test_scp_fastpath import AET, DCMTK_ENV, RawPeer, _explicit_data_set, _store_command, associate_request

from dicomflow.intake.network import fastpath
from dicomflow.testing import synth

#: the first 6 bytes of an A-ASSOCIATE-RQ claiming 10 MB: the rest never comes
OVERLONG_REQUEST_HEAD = struct.pack(">BBI", 0x01, 0, 10 * 1024 * 1024)


@pytest.fixture
def series(tmp_path):
    return synth.write_image_series(tmp_path / "ct", n_slices=4, rows=16, cols=16)


@pytest.fixture(params=[True, False], ids=["fast-path", "pynetdicom"])
def receiver(request, tmp_path):
    from dicomflow.intake.network.scp import StorageSCP

    started = []

    def start(allow=("*@127.0.0.1",), **kw):
        kw.setdefault("fast_path", request.param)
        kw.setdefault("temp_dir", tmp_path / f"incoming-{len(started)}")
        scp = StorageSCP(AET, 0, list(allow), host="127.0.0.1", **kw).start()
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop(grace=2)


def _connect(port: int, source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True when the receiver closed (or reset) the connection within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
            if data[:1] == b"\x07":  # an A-ABORT, then the close
                continue
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def _pynetdicom_store(port: int, paths) -> list[int]:
    ae = AE(ae_title="GOODSCU")
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title=AET)
    assert assoc.is_established, "the allowed sender could not associate"
    try:
        return [assoc.send_c_store(pydicom.dcmread(p)).Status for p in paths]
    finally:
        assoc.release()


def _catalogued() -> set[str]:
    from dicomflow.catalog.models import Instance

    return set(Instance.objects.values_list("sop_instance_uid", flat=True))


# --- the pre-association flood ------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
@pytest.mark.dcmtk
def test_flood_from_a_host_not_on_the_allowlist_does_not_block_allowed_senders(series, receiver):
    """40 connections from 127.0.0.2 (not allowed), each with 6 bytes of an over-long request and
    then silence: they are closed when accepted, never reach pynetdicom, and an allowed sender
    stores with pynetdicom and with storescu while the attackers hold their sockets open."""
    scp = receiver(allow=["*@127.0.0.1"], request_timeout=30)
    hostile = []
    for _ in range(40):
        sock = _connect(scp.port, "127.0.0.2")
        try:
            sock.sendall(OVERLONG_REQUEST_HEAD)
        except OSError:
            pass  # already closed: fine
        hostile.append(sock)
    try:
        assert _pynetdicom_store(scp.port, series.paths[:2]) == [0x0000, 0x0000]
        storescu = require_tool("storescu")
        import subprocess

        done = subprocess.run(
            [storescu, "-aet", "GOODSCU", "-aec", AET, "127.0.0.1", str(scp.port), *map(str, series.paths[2:])],
            env=DCMTK_ENV, capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert all(_closed_by_peer(sock, 2) for sock in hostile)
    finally:
        for sock in hostile:
            sock.close()
    assert scp.connections_closed["host"] == 40
    scp.stop()
    assert scp.associations_by_path["pynetdicom"] + scp.associations_by_path["fast"] == 2  # the allowed ones only
    assert _catalogued() == {synth_uid(p) for p in series.paths}


def synth_uid(path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@pytest.mark.django_db(transaction=True)
def test_flood_from_an_allowed_host_is_cut_off_and_holds_no_association_slot(series, receiver):
    """From the allowed host itself: 40 connections that send an over-long request's 6 bytes are
    aborted at once; 40 that send part of a genuine request and stall wait outside the association
    limit (8 here: 40 > 8, yet the sender gets a slot) and are closed after the request timeout."""
    scp = receiver(request_timeout=4)
    scp.ae.maximum_associations = 8
    overlong = [_connect(scp.port, "127.0.0.1") for _ in range(40)]
    for sock in overlong:
        sock.sendall(OVERLONG_REQUEST_HEAD)
    stalled = [_connect(scp.port, "127.0.0.1") for _ in range(40)]
    partial = associate_request()[:40]
    for sock in stalled:
        sock.sendall(partial)
    started = time.monotonic()
    try:
        assert all(_closed_by_peer(sock, 5) for sock in overlong)
        assert _pynetdicom_store(scp.port, series.paths[:1]) == [0x0000]
        if time.monotonic() - started < 3.5:  # (a loaded machine may take longer: then this is moot)
            assert scp._pending == 40, "the stalled connections were still waiting while the sender stored"
        assert all(_closed_by_peer(sock, 15) for sock in stalled)
    finally:
        for sock in overlong + stalled:
            sock.close()
    assert scp.connections_closed["request"] == 80
    assert scp.associations_by_path["pynetdicom"] + scp.associations_by_path["fast"] == 1
    scp.stop()
    assert len(_catalogued()) == 1


@pytest.mark.django_db(transaction=True)
def test_connections_waiting_for_their_request_have_their_own_cap(receiver):
    """Beyond ``max_pending`` connections still owing their request, a new one is closed at once."""
    scp = receiver(max_pending=5, request_timeout=10)
    waiting = [_connect(scp.port, "127.0.0.1") for _ in range(5)]
    deadline = time.monotonic() + 5
    while scp._pending < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    extra = _connect(scp.port, "127.0.0.1")
    try:
        assert _closed_by_peer(extra, 3)
        assert not any(_closed_by_peer(sock, 0.2) for sock in waiting)  # those keep their (bounded) wait
    finally:
        for sock in waiting + [extra]:
            sock.close()
    assert scp.connections_closed["pending"] == 1


@pytest.mark.django_db(transaction=True)
def test_a_request_trickled_byte_by_byte_is_cut_off_at_the_deadline(receiver):
    """The timeout bounds the whole request, not each read: a byte every 0.2 s does not extend it."""
    scp = receiver(request_timeout=1.0)
    sock = _connect(scp.port, "127.0.0.1")
    started = time.monotonic()
    closed = False
    try:
        for byte in associate_request()[:30]:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.2)
            if time.monotonic() - started > 4:
                break
        closed = closed or _closed_by_peer(sock, 2)
    finally:
        sock.close()
    assert closed
    assert time.monotonic() - started < 4.5
    assert scp.connections_closed["request"] == 1


# --- temporary files of aborted stores -----------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_temporary_file_of_an_aborted_store_is_swept(series, receiver, tmp_path):
    """A C-STORE cut off mid data set (the peer aborts): pynetdicom leaves its temporary file; the
    receiver's sweep removes it once the association is gone (the fast path never leaves one)."""
    scp = receiver()
    scp.sweep_interval = 0.3
    peer = RawPeer(scp.port)
    ds = pydicom.dcmread(series.paths[0], stop_before_pixels=True)
    data = _explicit_data_set(series.paths[0])
    peer.send_pdvs([(1, 0x03, _store_command(ds, 1))])
    peer.send_pdvs([(1, 0x00, data[:300])])
    deadline = time.monotonic() + 5
    while not list(scp.temp_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(scp.temp_dir.iterdir()), "no temporary file was being written"
    peer.sock.sendall(fastpath.abort_pdu(0, 0))
    peer.close()
    deadline = time.monotonic() + 10
    while list(scp.temp_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(scp.temp_dir.iterdir()) == []
    stray = scp.temp_dir / "tmpleftover.dcm"  # e.g. from before a crash: swept too
    stray.write_bytes(b"x")
    import os

    os.utime(stray, (time.time() - 10, time.time() - 10))
    scp.sweep()
    assert not stray.exists()
    assert _catalogued() == set()


@pytest.mark.django_db
def test_incoming_folder_of_a_dead_receiver_process_is_removed_at_start(tmp_path, settings):
    from dicomflow.intake.network.scp import StorageSCP

    settings.WORK_DIR = str(tmp_path)
    dead = tmp_path / "scp-incoming-999999999"  # no such process
    dead.mkdir()
    (dead / "tmpabc.dcm").write_bytes(b"partial")
    alive = tmp_path / f"scp-incoming-{__import__('os').getpid()}"
    alive.mkdir()
    scp = StorageSCP(AET, 0, [], host="127.0.0.1", temp_dir=tmp_path / "mine").start()
    try:
        assert not dead.exists()
        assert alive.exists()  # a running process's folder is not ours to remove
    finally:
        scp.stop()
