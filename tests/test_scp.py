"""The C-STORE/C-ECHO receiver against real DCMTK peers (storescu, echoscu), real SQLite.

What "raw" means here: the receiver writes the data set exactly as it came off the wire, after a
File Meta Information it builds from the association. storescu sends a file's data set unchanged
when the negotiated transfer syntax is the file's own, so the bytes *after* the File Meta
Information must be identical to the source file's; the meta itself differs (other
implementation UID), which is why whole-file sha256 values are compared against the stored
files, not the sources.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import subprocess
from pathlib import Path

import pydicom
import pytest
from conftest import require_tool
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from dicomflow.core.store import FileStore
from dicomflow.errors import AssociationRejectedError, InputError
from dicomflow.intake.network.common import Allowlist, parse_allow_rule, parse_node
from dicomflow.testing import synth

AET = "DFTEST"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


# --- helpers -------------------------------------------------------------------------------------
def dataset_bytes(path: Path) -> bytes:
    """The bytes after the File Meta Information (what went over the wire)."""
    data = Path(path).read_bytes()
    assert data[128:132] == b"DICM"
    tag, vr, _, group_length = struct.unpack("<I2sHI", data[132:144])
    assert tag == 0x00000002 and vr == b"UL"
    return data[144 + group_length :]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def storescu(port: int, files_or_dir, calling: str = "STORESCU", called: str = AET, host: str = "127.0.0.1",
             extra: tuple[str, ...] = ()):
    exe = require_tool("storescu")
    args = [exe, *extra, "-aet", calling, "-aec", called, host, str(port)]
    if isinstance(files_or_dir, (str, Path)) and Path(files_or_dir).is_dir():
        args += ["+sd", str(files_or_dir)]
    else:
        args += [str(p) for p in files_or_dir]
    return subprocess.run(args, env=DCMTK_ENV, capture_output=True, text=True, timeout=120)


@pytest.fixture
def series(tmp_path):
    return synth.write_image_series(tmp_path / "ct", n_slices=8, rows=32, cols=32)


@pytest.fixture(params=[True, False], ids=["fast-path", "pynetdicom"])
def receiver(request, tmp_path):
    """Factory: a running receiver on a free port, stopped (catalogue flushed) at teardown.

    Every test runs twice: with the receiver's own fast path for plain storage associations, and
    with every association served by pynetdicom — the same assertions hold for both.
    """
    from dicomflow.intake.network.scp import StorageSCP

    started = []

    def start(allow=(), aet=AET, **kw):
        kw.setdefault("fast_path", request.param)
        scp = StorageSCP(aet, 0, list(allow), host="127.0.0.1", **kw).start()
        started.append(scp)
        return scp

    start.fast_path = request.param
    yield start
    for scp in started:
        scp.stop(grace=5)


def catalogued():
    from dicomflow.catalog.models import Instance

    return {i.sop_instance_uid: i for i in Instance.objects.all()}


# --- pure parts ----------------------------------------------------------------------------------
def test_allowlist_rules():
    empty = Allowlist()
    assert empty.allows("ANY", "127.0.0.1") and empty.allows("ANY", "::1")
    assert empty.allows("ANY", "::ffff:127.0.0.1")
    assert not empty.allows("ANY", "10.1.2.3")

    rules = Allowlist(["CT1@10.0.0.5", "*@192.168.1.0/24", "PACS@*"])
    assert rules.allows("CT1", "10.0.0.5")
    assert not rules.allows("CT2", "10.0.0.5")
    assert rules.allows("WHOEVER", "192.168.1.77")
    assert not rules.allows("WHOEVER", "192.168.2.77")
    assert rules.allows("PACS", "172.16.0.1")
    assert not rules.allows("CT1", "127.0.0.1")  # an allowlist replaces the loopback default

    assert parse_allow_rule("CT1@localhost").matches("CT1", "127.0.0.1")
    for bad in ("CT1", "@10.0.0.1", "CT1@", "A_TITLE_FAR_TOO_LONG@10.0.0.1"):
        with pytest.raises(InputError):
            parse_allow_rule(bad)


def test_parse_node():
    node = parse_node("ORTHANC@10.0.0.9:4242")
    assert (node.ae_title, node.host, node.port) == ("ORTHANC", "10.0.0.9", 4242)
    v6 = parse_node("PACS@[::1]:104")
    assert (v6.host, v6.port) == ("::1", 104)
    for bad in ("ORTHANC", "ORTHANC@host", "ORTHANC@host:x", "@host:104", "X@host:70000"):
        with pytest.raises(InputError):
            parse_node(bad)


def test_store_adopt_moves_without_overwriting(tmp_path):
    store = FileStore(tmp_path / "store", fsync="never")
    first = tmp_path / "incoming-1"
    first.write_bytes(b"first version")
    result = store.adopt(first, "p/s/r/x.dcm")
    assert result.created and not first.exists()
    assert store.path_of("p/s/r/x.dcm").read_bytes() == b"first version"
    assert result.sha256 == hashlib.sha256(b"first version").hexdigest() and result.size == 13

    second = tmp_path / "incoming-2"
    second.write_bytes(b"another version")
    again = store.adopt(second, "p/s/r/x.dcm")
    assert not again.created and not second.exists()
    assert again.sha256 == hashlib.sha256(b"another version").hexdigest()
    assert store.path_of("p/s/r/x.dcm").read_bytes() == b"first version"  # never overwritten
    assert [p.name for p in store.path_of("p/s/r").iterdir()] == ["x.dcm"]  # no temp left behind


# --- real associations ---------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
@pytest.mark.dcmtk
def test_storescu_series_lands_in_catalog_raw(series, receiver):
    from django.conf import settings

    from dicomflow.intake.models import ImportRun, SourceKind

    scp = receiver()
    result = storescu(scp.port, series.paths[0].parent)
    assert result.returncode == 0, result.stderr
    scp.stop()

    rows = catalogued()
    assert set(rows) == set(series.sop_instance_uids)
    for source in series.paths:
        uid = pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID
        row = rows[uid]
        stored = Path(settings.STORE_DIR) / row.stored_path
        assert row.received_from == "dicom:STORESCU@127.0.0.1"
        assert row.sha256 == sha256(stored) and row.size == stored.stat().st_size
        assert dataset_bytes(stored) == dataset_bytes(source)  # the data set was kept byte for byte
        assert row.transfer_syntax_uid == series.transfer_syntax_uid
    run = ImportRun.objects.get()
    assert run.source_kind == SourceKind.DICOM and run.source == "STORESCU@127.0.0.1"
    assert (run.files_seen, run.instances_new, run.instances_duplicate) == (len(series.paths), len(series.paths), 0)
    assert run.finished_at is not None
    leftovers = [p for p in Path(settings.STORE_DIR).rglob("*") if p.is_file() and not p.name.endswith(".dcm")]
    assert leftovers == []
    path = "fast" if receiver.fast_path else "pynetdicom"
    assert scp.associations_by_path == {"fast": 0, "pynetdicom": 0, path: 1}


@pytest.mark.django_db(transaction=True)
@pytest.mark.dcmtk
def test_sending_twice_gives_duplicates(series, receiver):
    from dicomflow.intake.models import ImportRun

    scp = receiver()
    for _ in range(2):
        result = storescu(scp.port, series.paths)
        assert result.returncode == 0, result.stderr
    scp.stop()
    assert len(catalogued()) == len(series.paths)
    first, second = ImportRun.objects.order_by("id")
    assert (first.instances_new, first.instances_duplicate) == (len(series.paths), 0)
    assert (second.instances_new, second.instances_duplicate) == (0, len(series.paths))
    assert second.conflicts == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.dcmtk
def test_calling_aet_not_on_allowlist_is_rejected(series, receiver):
    scp = receiver(allow=["GOODSCU@127.0.0.1"])
    refused = storescu(scp.port, series.paths[:2], calling="BADSCU")
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stderr
    assert catalogued() == {}

    from dicomflow.export.scu import echo

    with pytest.raises(AssociationRejectedError):
        echo(f"{AET}@127.0.0.1:{scp.port}", our_ae_title="BADSCU")

    accepted = storescu(scp.port, series.paths[:2], calling="GOODSCU")
    assert accepted.returncode == 0, accepted.stderr
    scp.stop()
    assert len(catalogued()) == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.dcmtk
def test_host_not_on_allowlist_is_rejected(series, receiver):
    """A host no rule names is closed when it connects: nothing it sends is read (issue 14)."""
    scp = receiver(allow=["GOODSCU@192.0.2.10"])  # right AE title, wrong host
    result = storescu(scp.port, series.paths[:1], calling="GOODSCU")
    assert result.returncode != 0 and "Association Request Failed" in result.stderr
    assert "Calling AE Title Not Recognized" not in result.stderr  # never got as far as a request
    assert scp.connections_closed["host"] == 1
    assert scp.associations_by_path == {"fast": 0, "pynetdicom": 0}
    assert catalogued() == {}


def _non_loopback_address() -> str | None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent; just picks the outgoing interface
        address = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") else address


@pytest.mark.django_db(transaction=True)
@pytest.mark.dcmtk
def test_without_allowlist_only_loopback_is_accepted(series):
    from dicomflow.intake.network.scp import StorageSCP

    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    scp = StorageSCP(AET, 0, [], host="0.0.0.0").start()
    try:
        remote = storescu(scp.port, series.paths[:1], host=address)
        assert remote.returncode != 0 and "Association Request Failed" in remote.stderr
        assert scp.connections_closed["host"] == 1
        local = storescu(scp.port, series.paths[:1], host="127.0.0.1")
        assert local.returncode == 0, local.stderr
    finally:
        scp.stop()
    assert len(catalogued()) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.dcmtk
def test_wrong_called_aet_rejected_and_echo_works(receiver):
    exe = require_tool("echoscu")
    scp = receiver()
    ok = subprocess.run([exe, "-aet", "ECHOSCU", "-aec", AET, "127.0.0.1", str(scp.port)], env=DCMTK_ENV,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    wrong = subprocess.run([exe, "-aet", "ECHOSCU", "-aec", "NOTUS", "127.0.0.1", str(scp.port)], env=DCMTK_ENV,
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode != 0 and "Called AE Title Not Recognized" in wrong.stderr

    from dicomflow.intake.models import ImportRun
    from dicomflow.export.scu import echo

    assert echo(f"{AET}@127.0.0.1:{scp.port}") == 0
    scp.stop()
    assert ImportRun.objects.count() == 0  # echo-only associations leave no import record


@pytest.mark.django_db(transaction=True)
def test_unreadable_data_set_gets_cannot_understand(receiver):
    from dicomflow.intake.models import ImportRun

    scp = receiver()
    ds = Dataset()  # no Study/Series Instance UID: cannot be catalogued
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.3.4.5.6.7"
    ds.PatientID = "SECRET-ID-42"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=AET)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert status.Status == 0xC000
    scp.stop()
    assert catalogued() == {}
    run = ImportRun.objects.get()
    assert run.files_seen == 1 and run.instances_new == 0
    assert len(run.ignored) == 1 and "Study Instance UID" in run.ignored[0]["reason"]
    assert "SECRET" not in str(run.ignored)


@pytest.mark.django_db(transaction=True)
@pytest.mark.dcmtk
def test_batches_flush_by_size(series, receiver):
    scp = receiver(batch_size=3, flush_interval=30)  # only size (and release) can trigger a flush
    result = storescu(scp.port, series.paths)
    assert result.returncode == 0, result.stderr
    scp.stop()
    assert len(catalogued()) == len(series.paths)
    assert scp.batcher.batches >= len(series.paths) // 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.dcmtk
def test_compressed_data_set_is_kept_as_sent(tmp_path, receiver):
    """An RLE Lossless file goes in compressed and stays byte-identical (nothing decodes it)."""
    from django.conf import settings
    from pydicom.uid import RLELossless

    info = synth.write_image_series(tmp_path / "plain", n_slices=2, rows=32, cols=32)
    (tmp_path / "rle").mkdir()
    compressed = []
    for path in info.paths:
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        target = tmp_path / "rle" / path.name
        ds.save_as(target, enforce_file_format=True)
        compressed.append(target)
    scp = receiver()
    result = storescu(scp.port, compressed, extra=("-xr",))  # propose RLE Lossless
    assert result.returncode == 0, result.stderr
    scp.stop()
    rows = catalogued()
    assert len(rows) == 2
    for source in compressed:
        row = rows[str(pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID)]
        assert row.transfer_syntax_uid == RLELossless
        assert dataset_bytes(Path(settings.STORE_DIR) / row.stored_path) == dataset_bytes(source)


@pytest.mark.django_db(transaction=True)
def test_store_failure_answers_out_of_resources(tmp_path, receiver):
    """When the store cannot take the file the peer hears 0xA700 and nothing is catalogued."""
    from dicomflow.core.store import sanitize_component
    from dicomflow.intake.models import ImportRun

    info = synth.write_image_series(tmp_path / "ct", n_slices=1, rows=32, cols=32)
    store = FileStore(tmp_path / "blocked-store", fsync="never")
    patient_id = str(pydicom.dcmread(info.paths[0], stop_before_pixels=True).PatientID)
    store.path_of(sanitize_component(patient_id)).write_bytes(b"a file where a folder must go")
    scp = receiver(store=store)
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage, info.transfer_syntax_uid)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=AET)
    try:
        status = assoc.send_c_store(info.paths[0])
    finally:
        assoc.release()
    assert status.Status == 0xA700
    scp.stop()
    assert catalogued() == {}
    run = ImportRun.objects.get()
    assert run.instances_new == 0 and "out of resources" in run.ignored[0]["reason"]
    assert patient_id not in str(run.ignored)


@pytest.mark.django_db(transaction=True)
def test_a_store_under_its_free_space_reserve_answers_out_of_resources(tmp_path, receiver, settings):
    """DICOMFLOW_STORE_MIN_FREE_BYTES: the file is refused with the reason before it enters the store."""
    from dicomflow.intake.models import ImportRun

    settings.DICOMFLOW_STORE_MIN_FREE_BYTES = 1 << 60  # more than any disk has
    info = synth.write_image_series(tmp_path / "ct", n_slices=1, rows=32, cols=32)
    scp = receiver()
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage, info.transfer_syntax_uid)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=AET)
    try:
        status = assoc.send_c_store(info.paths[0])
    finally:
        assoc.release()
    assert status.Status == 0xA700
    scp.stop()
    assert catalogued() == {}
    run = ImportRun.objects.get()
    assert run.instances_new == 0 and "DICOMFLOW_STORE_MIN_FREE_BYTES" in run.ignored[0]["reason"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.dcmtk
def test_concurrent_associations_each_get_their_run(tmp_path, receiver):
    from dicomflow.intake.models import ImportRun

    one = synth.write_image_series(tmp_path / "a", n_slices=6, rows=32, cols=32)
    two = synth.write_image_series(tmp_path / "b", modality="MR", n_slices=6, rows=32, cols=32)
    scp = receiver(allow=["SENDERA@127.0.0.1", "SENDERB@127.0.0.1"])
    exe = require_tool("storescu")
    procs = [
        subprocess.Popen([exe, "-aet", name, "-aec", AET, "127.0.0.1", str(scp.port), "+sd", str(folder)],
                         env=DCMTK_ENV, stderr=subprocess.PIPE, text=True)
        for name, folder in (("SENDERA", tmp_path / "a"), ("SENDERB", tmp_path / "b"))
    ]
    for proc in procs:
        assert proc.wait(120) == 0, proc.stderr.read()
    scp.stop()
    rows = catalogued()
    assert set(rows) == set(one.sop_instance_uids) | set(two.sop_instance_uids)
    assert {rows[u].received_from for u in one.sop_instance_uids} == {"dicom:SENDERA@127.0.0.1"}
    assert {rows[u].received_from for u in two.sop_instance_uids} == {"dicom:SENDERB@127.0.0.1"}
    runs = {r.source: r for r in ImportRun.objects.all()}
    assert set(runs) == {"SENDERA@127.0.0.1", "SENDERB@127.0.0.1"}
    assert all(r.instances_new == 6 and r.files_seen == 6 for r in runs.values())


@pytest.mark.dcmtk
@pytest.mark.django_db(transaction=True)
def test_resend_of_imported_files_is_duplicate_and_changed_data_is_conflict(tmp_path, series, receiver):
    """Files imported from disk, then received: same data set ⇒ duplicate despite another File Meta;
    a changed data set under the same SOP Instance UID ⇒ conflict, stored copy kept."""
    from django.conf import settings

    from dicomflow.intake.models import ImportRun
    from dicomflow.intake.services import import_paths

    assert import_paths([series.paths[0].parent], workers=1).instances_new == len(series.paths)
    before = {uid: (row.sha256, (Path(settings.STORE_DIR) / row.stored_path).read_bytes()) for uid, row in catalogued().items()}

    changed = tmp_path / "changed.dcm"
    ds = pydicom.dcmread(series.paths[0])
    ds.InstitutionName = "Another Hospital"
    ds.save_as(changed, enforce_file_format=True)

    scp = receiver()
    result = storescu(scp.port, [*series.paths, changed])
    assert result.returncode == 0, result.stderr
    scp.stop()
    run = ImportRun.objects.filter(source_kind="dicom").get()
    assert (run.files_seen, run.instances_new, run.instances_duplicate) == (len(series.paths) + 1, 0, len(series.paths))
    assert len(run.conflicts) == 1 and "different content" in run.conflicts[0]["reason"]
    after = {uid: (row.sha256, (Path(settings.STORE_DIR) / row.stored_path).read_bytes()) for uid, row in catalogued().items()}
    assert after == before  # nothing overwritten, nothing added


@pytest.mark.django_db(transaction=True)
def test_stop_closes_a_connection_that_never_sent_its_request(receiver):
    """Shutdown does not wait for (or crash on) a peer that connected but sent nothing yet."""
    import time

    scp = receiver()
    sock = socket.create_connection(("127.0.0.1", scp.port), timeout=10)
    time.sleep(0.3)  # accepted and waiting for its A-ASSOCIATE-RQ
    started = time.monotonic()
    scp.stop(grace=0.5)
    stopped = time.monotonic() - started
    sock.settimeout(5)
    assert sock.recv(6) == b""  # the receiver closed it
    sock.close()
    assert stopped < 5
