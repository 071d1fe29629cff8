"""Remote processors: a DICOM processing node (a real pynetdicom peer that segments what it receives and
sends the RTSTRUCT back to our real C-STORE receiver). The HTTP server: tests/test_remote_http_protocol.py."""

from __future__ import annotations

import threading
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts

from dicomflow.catalog.models import Series
from dicomflow.core.segmentation import ct_body_lungs
from dicomflow.intake.network.common import RemoteNode
from dicomflow.intake.network.scp import StorageSCP
from dicomflow.export.models import DicomNode
from dicomflow.export.scu import send_instances
from dicomflow.intake.services import import_paths
from dicomflow.processing import services
from dicomflow.processing.models import JobStatus, LogEntry, Result, Template
from dicomflow.testing.synth import PatientSpec, write_image_series

pytestmark = pytest.mark.django_db(transaction=True)

PATIENT = PatientSpec("REMOTE-PAT-77", "Fern^Franz", "M", "19550505")
NODE_AET, OUR_AET = "SEGNODE", "DICOMFLOW"


@pytest.fixture(autouse=True)
def builtins():
    services.ensure_builtin_templates()


class SegmentationNode:
    """A processing node: stores what it receives; when the association ends, segments it with the
    built-in algorithm and C-STOREs the RTSTRUCT back to ``reply_to``."""

    def __init__(self, folder: Path, reply_to: RemoteNode, answer: bool = True):
        self.folder, self.reply_to, self.answer = folder, reply_to, answer
        self.received: list[Path] = []
        self.errors: list[BaseException] = []
        self.ae = AE(ae_title=NODE_AET)
        for cx in AllStoragePresentationContexts:
            self.ae.add_supported_context(cx.abstract_syntax)
        handlers = [(evt.EVT_C_STORE, self._store), (evt.EVT_RELEASED, self._released)]
        self.server = self.ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        self.port = self.server.server_address[1]
        self.replied = threading.Event()

    def _store(self, event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        path = self.folder / "in" / f"{ds.SOPInstanceUID}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        self.received.append(path)
        return 0x0000

    def _released(self, event):
        if self.answer and self.received:
            threading.Thread(target=self._reply, daemon=True).start()

    def _reply(self):
        try:
            written = ct_body_lungs.run(self.received, self.folder / "out")
            send_instances(self.reply_to, written, our_ae_title=NODE_AET, timeout=30)
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)
        finally:
            self.replied.set()

    def stop(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    scp = StorageSCP(OUR_AET, 0, [], host="127.0.0.1", flush_interval=0.1).start()
    yield scp
    scp.stop(grace=5)


def _ct_series(tmp_path, seed: str) -> Series:
    info = write_image_series(tmp_path / "ct", patient=PATIENT, n_slices=12, rows=32, cols=32, seed=seed)
    import_paths([tmp_path / "ct"], workers=1)
    return Series.objects.get(series_instance_uid=info.series_uid), info


def test_remote_dicom_node_result_comes_back_through_the_receiver(tmp_path, receiver):
    node = SegmentationNode(tmp_path / "node", RemoteNode(OUR_AET, "127.0.0.1", receiver.port))
    try:
        DicomNode.objects.create(name="remote-seg-node", ae_title=NODE_AET, host="127.0.0.1", port=node.port)
        Template.objects.create(name="remote-seg", definition={
            "processor": "remote.dicom_node",
            "parameters": {"node": "remote-seg-node", "timeout_seconds": 60,
                           "settle_seconds": 1, "poll_seconds": 0.2},
            "requires": {"modalities": ["CT"], "min_images": 10},
        })
        series, info = _ct_series(tmp_path, "remote-node")
        job = services.run_job_inline(services.create_job(project_key="REMOTE", series_id=series.id,
                                                          template_name="remote-seg").pk)
        assert not node.errors, node.errors
        assert job.status == JobStatus.FINISHED, job.error
    finally:
        node.stop()
    # the node only ever saw de-identified data
    sent = pydicom.dcmread(node.received[0], stop_before_pixels=True)
    assert sent.PatientID != PATIENT.patient_id and sent.SeriesInstanceUID != info.series_uid
    assert len(node.received) == 12
    [result] = Result.objects.filter(job=job)
    assert result.verified and result.reidentified
    ds = pydicom.dcmread(result.path)
    assert ds.PatientID == PATIENT.patient_id
    refs = {str(s.SeriesInstanceUID) for f in ds.ReferencedFrameOfReferenceSequence
            for st in f.RTReferencedStudySequence for s in st.RTReferencedSeriesSequence}
    assert refs == {info.series_uid}
    assert LogEntry.objects.filter(job=job, message__contains="received 1 result file(s)").exists()


def test_remote_dicom_node_without_answer_times_out(tmp_path, receiver):
    node = SegmentationNode(tmp_path / "node", RemoteNode(OUR_AET, "127.0.0.1", receiver.port), answer=False)
    try:
        DicomNode.objects.create(name="remote-silent-node", ae_title=NODE_AET, host="127.0.0.1", port=node.port)
        Template.objects.create(name="remote-silent", definition={
            "processor": "remote.dicom_node",
            "parameters": {"node": "remote-silent-node", "timeout_seconds": 2,
                           "poll_seconds": 0.2},
        })
        series, _ = _ct_series(tmp_path, "remote-silent")
        job = services.run_job_inline(services.create_job(project_key="REMOTE", series_id=series.id,
                                                          template_name="remote-silent").pk)
    finally:
        node.stop()
    assert job.status == JobStatus.FAILED and "no complete result" in job.error


# remote.http (the HTTP processing server protocol and its misbehaviours): tests/test_remote_http_protocol.py
