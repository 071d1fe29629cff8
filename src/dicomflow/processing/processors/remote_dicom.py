"""``remote.dicom_node``: C-STORE the de-identified series to a processing node, then wait for its
result to come back through our C-STORE receiver (``dicomflow scp`` / ``serve``).

The result is recognised by the de-identified UIDs: instances that arrive after the send, in the
de-identified study, in a series other than the one sent. The receiver catalogues them like any
received data (under the project's pseudonym); they are copied from the store into the output
folder once no new instance has arrived for ``settle_seconds``; verification then checks they
reference exactly the series sent.

Template parameters: ``node`` (the name of a DICOM node a superuser configured; never an AE title,
host or port — refused when the template is saved);
``timeout_seconds`` (3600): how long to wait for the result; ``settle_seconds`` (2);
``poll_seconds`` (1).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pydicom
from django.conf import settings
from django.utils import timezone

from dicomflow.errors import ProcessingError
from dicomflow.processing.processors import ProcessorRequest

NAME = "remote.dicom_node"


def _arrived(study_uid: str, sent_series_uid: str, since) -> list[tuple[str, str]]:
    from dicomflow.catalog.models import Instance

    rows = (Instance.objects.filter(series__study__study_instance_uid=study_uid, received_at__gte=since)
            .exclude(series__series_instance_uid=sent_series_uid)
            .order_by("sop_instance_uid").values_list("sop_instance_uid", "stored_path"))
    return list(rows)


def run(request: ProcessorRequest) -> list[Path]:
    from dicomflow.export.scu import send_instances
    from dicomflow.export.selectors import destination_node
    from dicomflow.processing.results import describe

    params = request.parameters
    destination = {"type": "dicom", **{k: params[k] for k in ("node", "ae_title", "host", "port") if k in params}}
    # destination_node refuses anything but a configured node's name (ae_title/host/port included)
    timeout = float(params.get("timeout_seconds", 3600))
    settle = float(params.get("settle_seconds", 2))
    poll = float(params.get("poll_seconds", 1))
    first = pydicom.dcmread(request.paths[0], stop_before_pixels=True, specific_tags=["StudyInstanceUID",
                                                                                        "SeriesInstanceUID"])
    study_uid, series_uid = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    since = timezone.now()
    report = send_instances(destination_node(destination), request.paths, timeout=float(params.get("send_timeout", 60)))
    if report.failed:
        reason = next(f.reason for f in report.files if not f.ok)
        raise ProcessingError(f"{NAME}: {report.failed} of {len(report.files)} file(s) not accepted by "
                              f"{describe(destination)}: {reason}")
    request.log("INFO", f"{NAME}: sent {report.sent} files to {describe(destination)}; waiting for the result")
    deadline = time.monotonic() + timeout
    seen: list[tuple[str, str]] = []
    last_change = None
    while True:
        arrived = _arrived(study_uid, series_uid, since)
        if len(arrived) != len(seen):
            seen, last_change = arrived, time.monotonic()
        if seen and time.monotonic() - last_change >= settle:
            break
        if time.monotonic() > deadline:
            raise ProcessingError(f"{NAME}: no complete result from {describe(destination)} within {timeout:.0f} s "
                                  "(is our receiver running and known to the node?)")
        time.sleep(poll)
    written = []
    for sop_uid, stored in seen:
        target = request.output_dir / f"{sop_uid}.dcm"
        shutil.copyfile(Path(settings.STORE_DIR) / stored, target)
        written.append(target)
    request.log("INFO", f"{NAME}: received {len(written)} result file(s)")
    return written
