"""The Query/Retrieve SCP over the catalog against DCMTK findscu/getscu/movescu as peers.

Personas: the TPS node ``TPSA`` acts as alice (viewer of project A), ``TPSB`` as bob (project B);
``STRANGER`` is no configured node. Each finds and retrieves exactly its account's studies and is
refused the other project's; storage keeps working on the fast path next to Q/R.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pydicom
import pytest
from conftest import require_tool

from dicomflow.testing import synth

pytestmark = [pytest.mark.dcmtk, pytest.mark.django_db(transaction=True)]

AET = "DFQRSCP"
ENV = {**os.environ, "TCP_NODELAY": "1"}


@pytest.fixture
def world(tmp_path, django_user_model):
    from dicomflow.export.models import DicomNode
    from dicomflow.intake.services import import_paths
    from dicomflow.projects import services
    from dicomflow.projects.models import Role
    from dicomflow.accounts.actors import cli_operator

    op = cli_operator()
    a, b = services.create_project("qr-a", "A"), services.create_project("qr-b", "B")
    alice, bob = django_user_model.objects.create_user("alice"), django_user_model.objects.create_user("bob")
    services.add_member(op, a, alice, Role.VIEWER)
    services.add_member(op, b, bob, Role.VIEWER)
    ct_a = synth.write_image_series(tmp_path / "a", synth.PatientSpec("SUBJ-A-01", "SUBJ-A-01", "F", ""),
                                    n_slices=4, rows=16, cols=16)
    ct_b = synth.write_image_series(tmp_path / "b", synth.PatientSpec("SUBJ-B-01", "SUBJ-B-01", "M", ""),
                                    n_slices=3, rows=16, cols=16)
    clinical = synth.write_image_series(tmp_path / "clinical", synth.PatientSpec("CLIN-0001", "Doe^Jane", "F", ""),
                                        n_slices=2, rows=16, cols=16)
    import_paths([ct_a.paths[0].parent], workers=1, project=a)
    import_paths([ct_b.paths[0].parent], workers=1, project=b)
    import_paths([clinical.paths[0].parent], workers=1)
    DicomNode.objects.create(name="tps-a", ae_title="TPSA", host="127.0.0.1", port=1, qr_user=alice)
    DicomNode.objects.create(name="tps-b", ae_title="TPSB", host="localhost", port=1, qr_user=bob)
    DicomNode.objects.create(name="tps-off", ae_title="TPSOFF", host="127.0.0.1", port=1, qr_user=alice,
                             enabled=False)
    return {"a": ct_a, "b": ct_b, "clinical": clinical, "alice": alice, "bob": bob}


@pytest.fixture
def scp():
    from dicomflow.intake.network.scp import StorageSCP
    from dicomflow.projects.qr_scp import QueryRetrieveSCP

    server = StorageSCP(AET, 0, host="127.0.0.1", query_retrieve=QueryRetrieveSCP()).start()
    yield server
    server.stop(grace=5)


def findscu(port: int, calling: str, out: Path, *keys: str, level: str = "STUDY") -> tuple[int, list, str]:
    exe = require_tool("findscu")
    out.mkdir(parents=True, exist_ok=True)
    args = [exe, "-v", "-S", "-aet", calling, "-aec", AET, "-X", "-od", str(out), "-k", f"QueryRetrieveLevel={level}"]
    for key in keys:
        args += ["-k", key]
    result = subprocess.run([*args, "127.0.0.1", str(port)], env=ENV, capture_output=True, text=True, timeout=60)
    found = [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    return result.returncode, found, result.stdout + result.stderr


def getscu(port: int, calling: str, out: Path, study_uid: str) -> tuple[int, list[Path], str]:
    exe = require_tool("getscu")
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([exe, "-v", "-S", "-aet", calling, "-aec", AET, "-od", str(out),
                             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
                             "127.0.0.1", str(port)], env=ENV, capture_output=True, text=True, timeout=60)
    return result.returncode, sorted(p for p in out.iterdir() if p.is_file()), result.stdout + result.stderr


def refused(log: str) -> bool:
    """DCMTK's words for status 0x0124 (Refused: Not authorised)."""
    return bool(re.search(r"0x0?124\b", log, re.IGNORECASE))


refused_ = refused


def audit():
    from dicomflow.accounts.models import AuditEntry

    return list(AuditEntry.objects.filter(action="qr_serve").order_by("pk").values_list("username", "outcome", "detail"))


def test_findscu_finds_only_the_peer_accounts_studies(world, scp, tmp_path):
    a, b = world["a"], world["b"]
    rc, found, log = findscu(scp.port, "TPSA", tmp_path / "fa", "StudyInstanceUID", "PatientID",
                             "ModalitiesInStudy", "NumberOfStudyRelatedInstances")
    assert rc == 0, log
    assert [str(d.StudyInstanceUID) for d in found] == [a.study_uid]
    assert found[0].PatientID == "SUBJ-A-01"
    assert found[0].ModalitiesInStudy == "CT" and int(found[0].NumberOfStudyRelatedInstances) == 4

    rc, found, log = findscu(scp.port, "TPSB", tmp_path / "fb", "StudyInstanceUID", "PatientID=SUBJ-*")
    assert rc == 0, log
    assert [str(d.StudyInstanceUID) for d in found] == [b.study_uid]

    # asking for project A's study by UID as bob: no match (not "forbidden": nothing is revealed)
    rc, found, _ = findscu(scp.port, "TPSB", tmp_path / "fb2", f"StudyInstanceUID={a.study_uid}")
    assert rc == 0 and found == []
    # the clinical pool is outside both accounts' scope
    rc, found, _ = findscu(scp.port, "TPSA", tmp_path / "fa2", "PatientID=CLIN*", "StudyInstanceUID")
    assert found == []

    rc, found, _ = findscu(scp.port, "TPSA", tmp_path / "fs", f"StudyInstanceUID={a.study_uid}",
                           "SeriesInstanceUID", "NumberOfSeriesRelatedInstances", level="SERIES")
    assert [str(d.SeriesInstanceUID) for d in found] == [a.series_uid]
    assert int(found[0].NumberOfSeriesRelatedInstances) == 4

    for stranger in ("STRANGER", "TPSOFF"):  # unknown, and configured but disabled
        rc, found, log = findscu(scp.port, stranger, tmp_path / f"fx-{stranger}", "StudyInstanceUID")
        assert found == []
        assert refused(log), log


def test_getscu_retrieves_a_catalogued_study_and_is_refused_another_projects(world, scp, tmp_path):
    from dicomflow.catalog.models import Instance

    a, b = world["a"], world["b"]
    rc, files, log = getscu(scp.port, "TPSA", tmp_path / "ga", a.study_uid)
    assert rc == 0, log
    got = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    assert got == set(a.sop_instance_uids)
    stored = Instance.objects.get(sop_instance_uid=a.sop_instance_uids[0])
    received = next(p for p in files if pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
                    == a.sop_instance_uids[0])
    assert pydicom.dcmread(received).PixelData == pydicom.dcmread(
        Path(__import__("django.conf").conf.settings.STORE_DIR) / stored.stored_path).PixelData

    rc, files, log = getscu(scp.port, "TPSA", tmp_path / "gb", b.study_uid)  # project B's study as alice
    assert files == []
    assert refused(log), log
    rc, files, log = getscu(scp.port, "STRANGER", tmp_path / "gx", a.study_uid)
    assert files == []

    entries = audit()
    assert entries[0][:2] == ("alice", "ok") and "4 instances of 1 series" in entries[0][2]
    assert entries[1][:2] == ("alice", "denied")
    assert entries[2][1] == "denied" and entries[2][0] == "dicom:STRANGER@127.0.0.1"
    assert all(a.study_uid not in d and b.study_uid not in d for _, _, d in entries)


def test_move_to_a_configured_node_only(world, scp, tmp_path):
    """C-MOVE sends to a configured destination node (a DCMTK storescp); unknown destinations: 0xA801."""
    import time

    from dicomflow.export.models import DicomNode

    storescp, movescu = require_tool("storescp"), require_tool("movescu")
    out = tmp_path / "dest"
    out.mkdir()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dest_port = s.getsockname()[1]
    dest = subprocess.Popen([storescp, "-aet", "VIEWER", "-od", str(out), str(dest_port)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        DicomNode.objects.create(name="viewer", ae_title="VIEWER", host="127.0.0.1", port=dest_port)
        time.sleep(0.5)

        def move(calling: str, destination: str, study: str):
            return subprocess.run([movescu, "-v", "-S", "-aet", calling, "-aec", AET, "-aem", destination,
                                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                                   "127.0.0.1", str(scp.port)], env=ENV, capture_output=True, text=True, timeout=60)

        result = move("TPSB", "VIEWER", world["b"].study_uid)
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 20
        while len(list(out.iterdir())) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        moved = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in out.iterdir()}
        assert moved == set(world["b"].sop_instance_uids)

        unknown = move("TPSB", "NOWHERE", world["b"].study_uid)
        assert "MoveDestinationUnknown" in unknown.stderr or re.search(r"0xa801", unknown.stderr, re.I), unknown.stderr
        refused = move("TPSB", "VIEWER", world["a"].study_uid)
        assert refused_(refused.stdout + refused.stderr), refused.stdout + refused.stderr
        assert len(list(out.iterdir())) == 3
    finally:
        dest.terminate()
        dest.wait(10)


def test_storage_keeps_the_fast_path_next_to_query_retrieve(world, scp, tmp_path):
    from dicomflow.catalog.models import Instance

    series = synth.write_image_series(tmp_path / "push", n_slices=3, rows=16, cols=16)
    exe = require_tool("storescu")
    result = subprocess.run([exe, "-aet", "MODALITY", "-aec", AET, "127.0.0.1", str(scp.port), *map(str, series.paths)],
                            env=ENV, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    import time

    deadline = time.monotonic() + 20
    while Instance.objects.filter(sop_instance_uid__in=series.sop_instance_uids).count() < 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert scp.associations_by_path["fast"] >= 1
