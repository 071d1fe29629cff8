"""The C-STORE sender against a real DCMTK storescp, a restricted pynetdicom peer and our own
receiver; the ``send`` and ``echo`` commands as subprocesses."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from conftest import require_tool
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from dicomflow.errors import InputError, NetworkError
from dicomflow.intake.network.common import RemoteNode
from dicomflow.export.scu import echo, send_instances
from dicomflow.testing import synth

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
PEER_AET = "STORESCP"


pytestmark = pytest.mark.dcmtk


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dataset_bytes(path: Path) -> bytes:
    data = Path(path).read_bytes()
    _, _, _, group_length = struct.unpack("<I2sHI", data[132:144])
    return data[144 + group_length :]


@pytest.fixture
def storescp(tmp_path):
    """A real DCMTK storescp writing into a folder; yields (node, folder)."""
    exe = require_tool("storescp")
    echoscu = require_tool("echoscu")
    out = tmp_path / "storescp-out"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [exe, "-aet", PEER_AET, "+xa", "-od", str(out), str(port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while True:
        ok = subprocess.run([echoscu, "-aec", PEER_AET, "127.0.0.1", str(port)], capture_output=True, env=DCMTK_ENV)
        if ok.returncode == 0:
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"storescp did not start: {proc.stderr.read().decode(errors='replace')}")
        time.sleep(0.1)
    yield RemoteNode(PEER_AET, "127.0.0.1", port, "DFSEND"), out
    proc.terminate()
    proc.wait(10)


def received(folder: Path) -> dict[str, Path]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in folder.iterdir()}


def test_send_to_storescp_keeps_pixel_bytes(tmp_path, storescp):
    node, out = storescp
    series = synth.write_image_series(tmp_path / "ct", n_slices=6, rows=48, cols=48)
    assert echo(node) == 0
    report = send_instances(node, series.paths)
    assert (report.sent, report.failed) == (len(series.paths), 0)
    assert all(f.status == 0 for f in report.files)
    got = received(out)
    assert set(got) == set(series.sop_instance_uids)
    for source in series.paths:
        original = pydicom.dcmread(source)
        copy = got[str(original.SOPInstanceUID)]
        assert pydicom.dcmread(copy).PixelData == original.PixelData  # raw bytes, never decoded
        assert pydicom.dcmread(copy).file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID


def test_peer_without_a_context_fails_per_file(tmp_path):
    """A peer that only takes CT: the CT goes, the RT objects fail with a reason (no transcoding)."""
    study = synth.write_rt_study(tmp_path / "rt", n_slices=4, rows=32, cols=32, with_mr=False)
    got: list[str] = []
    ae = AE(ae_title="CTONLY")
    ae.add_supported_context(CTImageStorage)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda e: got.append(e.request.AffectedSOPInstanceUID) or 0)]
    )
    try:
        report = send_instances(RemoteNode("CTONLY", "127.0.0.1", server.server_address[1]), study.paths)
    finally:
        server.shutdown()
    assert report.sent == len(study.ct.paths) and sorted(got) == sorted(study.ct.sop_instance_uids)
    failed = [f for f in report.files if not f.ok]
    assert len(failed) == len(study.paths) - len(study.ct.paths)
    assert all("does not accept" in f.reason for f in failed)


def test_unreachable_node_raises():
    with pytest.raises(NetworkError):
        echo(RemoteNode("NOBODY", "127.0.0.1", free_port()), timeout=5)


@pytest.mark.django_db(transaction=True)
def test_round_trip_our_sender_to_our_receiver(tmp_path):
    from django.conf import settings

    from dicomflow.catalog.models import Instance
    from dicomflow.intake.network.scp import StorageSCP

    series = synth.write_image_series(tmp_path / "mr", modality="MR", n_slices=5, rows=32, cols=32)
    scp = StorageSCP("DFRECV", 0, ["DFSEND@127.0.0.1"], host="127.0.0.1").start()
    try:
        report = send_instances(RemoteNode("DFRECV", "127.0.0.1", scp.port, "DFSEND"), series.paths)
    finally:
        scp.stop()
    assert report.sent == len(series.paths)
    rows = {i.sop_instance_uid: i for i in Instance.objects.all()}
    assert set(rows) == set(series.sop_instance_uids)
    for source in series.paths:
        uid = str(pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID)
        stored = Path(settings.STORE_DIR) / rows[uid].stored_path
        assert dataset_bytes(stored) == dataset_bytes(source)  # sender streams, receiver writes raw
        assert rows[uid].received_from == "dicom:DFSEND@127.0.0.1"


@pytest.mark.django_db(transaction=True)
def test_send_study_from_catalog(tmp_path, storescp):
    from dicomflow.export.scu import send_series, send_study
    from dicomflow.intake.services import import_paths

    node, out = storescp
    study = synth.write_rt_study(tmp_path / "rt", n_slices=5, rows=32, cols=32, with_mr=True)
    report = import_paths([study.out_dir], workers=1)
    assert report.instances_new == len(study.paths)

    sent = send_study(study.study_uid, node)
    in_study = [p for p in study.paths if p not in (study.mr.paths if study.mr else [])]
    assert (sent.sent, sent.failed) == (len(in_study), 0)  # the MR lives in another study
    got = received(out)
    expected = set(study.ct.sop_instance_uids) | {o.sop_instance_uid for o in study.rt_objects}
    assert set(got) == expected

    only_ct = send_series(study.ct.series_uid, node)
    assert only_ct.sent == len(study.ct.paths)
    with pytest.raises(InputError):
        send_series("1.2.3.999", node)


def _cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DICOMFLOW_HOME": str(home), "DICOMFLOW_FSYNC": "never"}
    env.pop("DATABASE_URL", None)  # the commands' own catalog in their home, whatever the suite runs on
    result = subprocess.run(
        [sys.executable, "-m", "dicomflow.cli", *args], env=env, capture_output=True, text=True, timeout=180
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_send_and_echo_commands(tmp_path, storescp):
    node, out = storescp
    home = tmp_path / "home"
    series = synth.write_image_series(tmp_path / "ct", n_slices=4, rows=32, cols=32)
    _cli(home, "import", str(tmp_path / "ct"), "--json")

    target = f"{node.ae_title}@{node.host}:{node.port}"
    echoed = json.loads(_cli(home, "echo", target, "--json").stdout)
    assert echoed["ok"] is True and echoed["status"] == "0x0000"

    doc = json.loads(_cli(home, "send", "--series", series.series_uid, "--to", target, "--json").stdout)
    assert (doc["files"], doc["sent"], doc["failed"]) == (4, 4, 0)
    assert set(received(out)) == set(series.sop_instance_uids)

    closed = _cli(home, "echo", f"NOBODY@127.0.0.1:{free_port()}", "--json", "--timeout", "5", check=False)
    assert closed.returncode != 0 and "error" in json.loads(closed.stdout)
    neither = _cli(home, "send", "--to", target, "--json", check=False)
    assert neither.returncode != 0
