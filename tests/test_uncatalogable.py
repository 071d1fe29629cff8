"""Values the catalog cannot hold (issue 14): over-long UIDs / Patient IDs and NUL characters.

On PostgreSQL such a value used to abort the whole CLI import (0 of 21 catalogued) and, over
C-STORE, drop the whole batch after success had been answered. Now each such file is ignored with a
reason on every database, every good file is catalogued, and C-STORE answers failure for the bad
ones only. Run on SQLite and on PostgreSQL (DATABASE_URL=postgres://…).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import require_tool

from dicomflow.testing.hostile import write_uncatalogable_set

AET = "DFBAD"


@pytest.fixture
def corpus(tmp_path):
    return write_uncatalogable_set(tmp_path / "in")


def _uids(paths) -> set[str]:
    import pydicom

    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}


def _test_database_url() -> str:
    from django.db import connection

    conf = connection.settings_dict
    if connection.vendor == "postgresql":
        auth = conf["USER"] + (f":{quote(conf['PASSWORD'], safe='')}" if conf["PASSWORD"] else "")
        return f"postgres://{auth}@{conf['HOST'] or '127.0.0.1'}:{conf['PORT'] or 5432}/{conf['NAME']}"
    name = str(conf["NAME"])
    if not name or name == ":memory:" or "mode=memory" in name:
        pytest.skip("the CLI subprocess needs a file-based test database")
    return f"sqlite:///{name}"


def test_refusal_names_the_attribute_and_never_the_value():
    from dicomflow.core.dicom.catalogable import refusal
    from dicomflow.core.dicom.header import InstanceHeader

    ok = InstanceHeader("1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2.4", "1.2.5", patient_id="PAT001",
                        study_description="thorax\x00")
    assert refusal(ok) is None and ok.study_description == "thorax"  # NUL dropped from descriptive text
    too_long = InstanceHeader("1.2.840.10008.5.1.4.1.1.2", "1." * 33, "1.2.4", "1.2.5")
    assert refusal(too_long) == "SOP Instance UID is 66 characters long; the catalog holds at most 64"
    secret = InstanceHeader("1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2.4", "1.2.5", patient_id="SECRET\x00ID")
    reason = refusal(secret)
    assert reason == "Patient ID contains NUL or control characters" and "SECRET" not in reason
    multi = InstanceHeader("1.2.840.10008.5.1.4.1.1.2", "1.2.3\\1.2.4", "1.2.4", "1.2.5")
    assert "SOP Instance UID contains characters" in refusal(multi)


def test_column_widths_match_the_catalog():
    from dicomflow.catalog.models import Instance, Patient, Series, Study
    from dicomflow.core.dicom.catalogable import ID_FIELDS, UID_FIELDS

    columns = {
        "sop_instance_uid": Instance._meta.get_field("sop_instance_uid"),
        "sop_class_uid": Instance._meta.get_field("sop_class_uid"),
        "transfer_syntax_uid": Instance._meta.get_field("transfer_syntax_uid"),
        "study_instance_uid": Study._meta.get_field("study_instance_uid"),
        "series_instance_uid": Series._meta.get_field("series_instance_uid"),
        "frame_of_reference_uid": Series._meta.get_field("frame_of_reference_uid"),
        "patient_id": Patient._meta.get_field("patient_id"),
        "issuer_of_patient_id": Patient._meta.get_field("issuer_of_patient_id"),
    }
    for _, attr, width in UID_FIELDS + ID_FIELDS:
        assert columns[attr].max_length == width, attr


@pytest.mark.django_db(transaction=True)
def test_cli_import_catalogues_every_good_file_and_ignores_the_bad_with_reasons(corpus, tmp_path):
    """The real ``dicomflow import`` on the test database (SQLite or PostgreSQL)."""
    from dicomflow.catalog.models import Instance, Series

    home = tmp_path / "home"
    env = {**os.environ, "DICOMFLOW_HOME": str(home), "DATABASE_URL": _test_database_url(),
           "DICOMFLOW_FSYNC": "never", "DICOMFLOW_IMPORT_WORKERS": "2"}
    result = subprocess.run([sys.executable, "-m", "dicomflow.cli", "import", str(tmp_path / "in"), "--json"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert report["files_seen"] == 21
    assert report["instances_new"] == 16
    reasons = {Path(i["path"]).name: i["reason"] for i in report["ignored"]}
    assert reasons.keys() == {p.name for p in corpus.bad}
    for path, attribute in corpus.bad.items():
        assert reasons[path.name].startswith(attribute), reasons[path.name]
    assert set(Instance.objects.values_list("sop_instance_uid", flat=True)) == _uids(corpus.good)
    assert Series.objects.count() == 1  # the slice with NUL in its description is among the good ones


@pytest.mark.django_db(transaction=True)
def test_a_batch_the_database_refuses_is_retried_file_by_file(corpus, monkeypatch):
    """Defence behind the check: a value that slips past it (a 100-character Patient ID planted
    after the check) costs its own file only. PostgreSQL refuses it, the batch is retried file by
    file and only that file is ignored; SQLite holds it, and everything is catalogued."""
    from django.db import connection

    from dicomflow.catalog import services
    from dicomflow.catalog.models import Instance, Patient
    from dicomflow.intake.services import import_paths

    original = services.CatalogWriter._insert

    def insert_with_poison(self, items, outcome):
        for item in items:
            if item.header.instance_number == 10:
                item.header.patient_id = "P" * 100
        return original(self, items, outcome)

    monkeypatch.setattr(services.CatalogWriter, "_insert", insert_with_poison)
    report = import_paths(list(corpus.good), workers=1)
    assert report.files_seen == 16
    if connection.vendor == "postgresql":
        assert report.instances_new == 15
        assert [i["reason"] for i in report.ignored] == [
            "could not be catalogued (the database refused a value: DataError)"
        ]
    else:
        assert report.instances_new == 16 and report.ignored == []
    assert Instance.objects.count() == report.instances_new
    assert Patient.objects.filter(patient_id="P" * 100).count() == (
        0 if connection.vendor == "postgresql" else 1
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.dcmtk
def test_c_store_answers_failure_for_the_bad_files_and_success_for_the_good(corpus):
    from dicomflow.catalog.models import Instance
    from dicomflow.intake.models import ImportRun
    from dicomflow.intake.network.scp import StorageSCP

    storescu = require_tool("storescu")
    files = sorted([*corpus.good, *corpus.bad], key=lambda p: p.name)
    scp = StorageSCP(AET, 0, [], host="127.0.0.1", batch_size=500).start()
    try:
        sent = subprocess.run(
            [storescu, "-v", "-nh", "-aet", "MODALITY", "-aec", AET, "127.0.0.1", str(scp.port), *map(str, files)],
            env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, text=True, timeout=120,
        )
    finally:
        scp.stop()
    statuses = re.findall(r"Received Store Response \(([^)]*)\)", sent.stdout + sent.stderr)
    assert len(statuses) == 21, sent.stdout + sent.stderr
    by_file = dict(zip([p.name for p in files], statuses))
    for path in corpus.good:
        assert by_file[path.name] == "Success", path.name
    for path in corpus.bad:
        assert by_file[path.name] != "Success", path.name
    assert set(Instance.objects.values_list("sop_instance_uid", flat=True)) == _uids(corpus.good)
    run = ImportRun.objects.get()
    assert run.instances_new == 16 and run.files_seen == 21
    assert sorted(i["reason"].split(" ")[0] for i in run.ignored) == sorted(
        reason.split(" ")[0] for reason in corpus.bad.values()
    )


@pytest.mark.django_db(transaction=True)
def test_files_answered_success_during_a_database_outage_are_queued_and_catalogued_at_next_start(
    corpus, monkeypatch, tmp_path, settings
):
    """Success was answered (the file is in the store) but the catalogue write failed: the store
    path is queued durably and the next receiver start catalogues it."""
    import pydicom
    from django.db import OperationalError
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    from dicomflow.catalog.models import Instance
    from dicomflow.intake import sessions
    from dicomflow.intake.network.scp import StorageSCP

    settings.WORK_DIR = str(tmp_path / "work")
    original = sessions.ImportSession.record

    def outage(self, batch):
        if batch:
            raise OperationalError("server closed the connection unexpectedly")
        return original(self, batch)

    monkeypatch.setattr(sessions.ImportSession, "record", outage)
    scp = StorageSCP(AET, 0, [], host="127.0.0.1").start()
    try:
        ae = AE(ae_title="MOD")
        ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", scp.port, ae_title=AET)
        assert assoc.is_established
        statuses = [assoc.send_c_store(pydicom.dcmread(p)).Status for p in corpus.good[:3]]
        assoc.release()
    finally:
        scp.stop()
    assert statuses == [0, 0, 0]
    assert Instance.objects.count() == 0
    assert len(scp.batcher.journal.read_text().split()) == 3

    monkeypatch.setattr(sessions.ImportSession, "record", original)
    again = StorageSCP(AET, 0, [], host="127.0.0.1").start()
    again.stop()
    assert set(Instance.objects.values_list("sop_instance_uid", flat=True)) == _uids(corpus.good[:3])
    assert not again.batcher.journal.exists()
