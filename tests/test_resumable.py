"""Resumable uploads through the REST API (Django test client, real DB, real files).

Interrupted and resumed uploads keep every byte; wrong offsets, checksum mismatches, limits and
state errors are refused with clear JSON; the import runs on a REAL Celery worker.
"""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.test import APIClient

from dicomflow.catalog.models import Instance
from dicomflow.intake import resumable
from dicomflow.intake.models import ImportRun, SourceKind, UploadFile, UploadSession, UploadSessionStatus
from dicomflow.testing.synth import PatientSpec, write_image_series, write_multi_patient_zip
from fixtures_celery import wait_for

CHUNK = 8 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def api(admin_user):
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


@pytest.fixture(scope="module")
def zip_bytes(tmp_path_factory):
    info = write_multi_patient_zip(tmp_path_factory.mktemp("z") / "two.zip", n_patients=2, n_slices=6,
                                   rows=64, cols=64, seed="resumable")
    return info, info.path.read_bytes()


def create(api, files, **extra) -> dict:
    response = api.post("/api/uploads/", {"files": files, **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def put(api, session_id, index, offset, data):
    return api.put(f"/api/uploads/{session_id}/files/{index}/", data=data, content_type="application/octet-stream",
                   HTTP_UPLOAD_OFFSET=str(offset))


@pytest.mark.django_db
def test_interrupted_upload_resumes_from_the_server_offset_and_keeps_every_byte(api, zip_bytes):
    _, data = zip_bytes
    assert len(data) > 4 * CHUNK
    session = create(api, [{"name": "export/two.zip", "size": len(data), "sha256": sha(data)}])
    sid = session["id"]
    assert session["files"][0]["received"] == 0 and session["status"] == "waiting"

    for offset in range(0, 2 * CHUNK, CHUNK):  # the client sends two chunks, then "dies"
        r = put(api, sid, 0, offset, data[offset:offset + CHUNK])
        assert r.status_code == 200, r.content
        assert r["Upload-Offset"] == str(offset + CHUNK)

    # a new client learns where to resume from the session
    state = api.get(f"/api/uploads/{sid}/").json()
    resume_at = state["files"][0]["received"]
    assert resume_at == 2 * CHUNK and state["received_size"] == 2 * CHUNK

    # a chunk past the offset is refused with the offset to resume from
    r = put(api, sid, 0, resume_at + CHUNK, data[resume_at + CHUNK:resume_at + 2 * CHUNK])
    assert r.status_code == 409
    body = r.json()
    assert body["offset"] == resume_at and "resume from" in body["detail"] and body["code"] == "UploadOffsetError"

    # a retried chunk (same bytes, already held) is harmless; different bytes are refused
    r = put(api, sid, 0, CHUNK, data[CHUNK:2 * CHUNK])
    assert r.status_code == 200 and r.json()["received"] == resume_at
    r = put(api, sid, 0, CHUNK, b"\0" * CHUNK)
    assert r.status_code == 409 and r.json()["offset"] == resume_at

    # a chunk overlapping held bytes appends only the new part
    r = put(api, sid, 0, resume_at - 10, data[resume_at - 10:resume_at + CHUNK])
    assert r.status_code == 200 and r.json()["received"] == resume_at + CHUNK

    offset = resume_at + CHUNK
    while offset < len(data):
        r = put(api, sid, 0, offset, data[offset:offset + CHUNK])
        assert r.status_code == 200, r.content
        offset = r.json()["received"]
    final = r.json()
    assert final["complete"] and final["sha256"] == sha(data)

    row = UploadFile.objects.get(session_id=sid, index=0)
    stored = resumable.file_path(row.session, 0).read_bytes()
    assert stored == data  # bytes equal after the interruption
    assert row.complete and row.sha256 == sha(data)
    r = put(api, sid, 0, 0, data[:CHUNK])  # a late retry of the first chunk changes nothing
    assert r.status_code == 200 and r.json()["received"] == len(data)
    assert resumable.file_path(row.session, 0).read_bytes() == data


@pytest.mark.django_db
def test_checksum_mismatch_discards_the_file_and_asks_for_it_again(api):
    data = bytes(range(256)) * 100
    sid = create(api, [{"name": "a.dcm", "size": len(data), "sha256": sha(b"something else")}])["id"]
    r = put(api, sid, 0, 0, data)
    assert r.status_code == 422
    assert "sha256 differs" in r.json()["detail"] and "offset 0" in r.json()["detail"]
    state = api.get(f"/api/uploads/{sid}/").json()
    assert state["files"][0] == state["files"][0] | {"received": 0, "complete": False}
    assert state["received_size"] == 0
    r = api.post(f"/api/uploads/{sid}/finalize/")
    assert r.status_code == 409 and "1 of 1 files are not complete" in r.json()["detail"]

    # the same in two chunks (the file is re-read and hashed once complete)
    assert put(api, sid, 0, 0, data[:1000]).status_code == 200
    r = put(api, sid, 0, 1000, data[1000:])
    assert r.status_code == 422 and "sha256 differs" in r.json()["detail"]
    row = UploadFile.objects.get(session_id=sid, index=0)
    assert (row.received, row.complete) == (0, False) and not resumable.file_path(row.session, 0).exists()
    assert UploadSession.objects.get(pk=sid).received_size == 0


@pytest.mark.django_db
def test_undeclared_checksum_is_computed_and_empty_files_complete_at_once(api):
    data = b"x" * 1000
    session = create(api, [{"name": "a", "size": len(data)}, {"name": "empty", "size": 0}])
    assert session["files"][1]["complete"] and session["files"][1]["sha256"] == sha(b"")
    r = put(api, session["id"], 0, 0, data)
    assert r.json()["sha256"] == sha(data)


@pytest.mark.django_db
def test_clear_errors_for_bad_requests(api, settings):
    sid = create(api, [{"name": "a", "size": 10}])["id"]
    r = api.put(f"/api/uploads/{sid}/files/0/", data=b"0123", content_type="application/octet-stream")
    assert r.status_code == 400 and "Upload-Offset" in r.json()["detail"]
    r = put(api, sid, 5, 0, b"0123")
    assert r.status_code == 400 and "no file number 5" in r.json()["detail"]
    r = put(api, sid, 0, 0, b"0123456789AB")
    assert r.status_code == 400 and "beyond the declared size" in r.json()["detail"]
    r = api.post("/api/uploads/", {"files": []}, format="json")
    assert r.status_code == 400
    r = api.post("/api/uploads/", {"files": [{"name": "a", "size": 1, "sha256": "xyz"}]}, format="json")
    assert r.status_code == 400 and r.json()["detail"].startswith("files[0].sha256: ")
    assert r.json()["code"] == "ValidationError" and "sha256" in json.dumps(r.json()["errors"])
    r = api.post("/api/uploads/", {"files": [{"name": "a", "size": -1}]}, format="json")
    assert r.status_code == 400 and r.json()["detail"].startswith("files[0].size: ")

    settings.DICOMFLOW_UPLOAD_MAX_BYTES = 100
    r = api.post("/api/uploads/", {"files": [{"name": "a", "size": 60}, {"name": "b", "size": 60}]}, format="json")
    assert r.status_code == 413 and "at most 100 bytes" in r.json()["detail"]
    settings.DICOMFLOW_UPLOAD_MAX_CHUNK = 4
    r = put(api, sid, 0, 0, b"01234")
    assert r.status_code == 413 and "at most 4 bytes" in r.json()["detail"]
    settings.DICOMFLOW_UPLOAD_MAX_FILES = 1
    r = api.post("/api/uploads/", {"files": [{"name": "a", "size": 1}, {"name": "b", "size": 1}]}, format="json")
    assert r.status_code == 413 and "at most 1 per upload" in r.json()["detail"]

    # cancel: no more data accepted, bytes removed
    settings.DICOMFLOW_UPLOAD_MAX_CHUNK = 8 * 1024 * 1024
    put(api, sid, 0, 0, b"0123")
    session = UploadSession.objects.get(pk=sid)
    assert resumable.file_path(session, 0).exists()
    r = api.delete(f"/api/uploads/{sid}/")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert not resumable.session_dir(session).exists()
    r = put(api, sid, 0, 4, b"4567")
    assert r.status_code == 409 and "cancelled" in r.json()["detail"]


@pytest.mark.django_db
def test_sessions_are_private_and_need_the_upload_permission(api, django_user_model):
    sid = create(api, [{"name": "a", "size": 3}])["id"]
    anonymous = APIClient()
    assert anonymous.post("/api/uploads/", {"files": [{"name": "a", "size": 1}]}, format="json").status_code in (401, 403)
    assert anonymous.get(f"/api/uploads/{sid}/").status_code in (401, 403)

    carol = django_user_model.objects.create_user("carol", password="pw-carol-123")
    client = APIClient()
    client.force_authenticate(carol)
    r = client.post("/api/uploads/", {"files": [{"name": "a", "size": 1}]}, format="json")
    assert r.status_code == 403 and "permission" in r.json()["detail"]
    carol.user_permissions.add(Permission.objects.get(codename="add_uploadsession"))
    carol = User.objects.get(pk=carol.pk)  # fresh permission cache
    client.force_authenticate(carol)
    own = client.post("/api/uploads/", {"files": [{"name": "a", "size": 1}]}, format="json")
    assert own.status_code == 201
    assert client.get(f"/api/uploads/{sid}/").status_code == 404  # the admin's session is not hers
    assert put(client, sid, 0, 0, b"abc").status_code == 404
    assert [s["id"] for s in client.get("/api/uploads/").json()["results"]] == [own.json()["id"]]
    assert client.get(f"/api/uploads/{uuid.uuid4()}/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_finalized_upload_is_imported_by_a_real_celery_worker(api, zip_bytes, celery_worker_process, tmp_path):
    info, data = zip_bytes
    series = write_image_series(tmp_path / "single", patient=PatientSpec("RES-1", "Single^File"), n_slices=1,
                                rows=16, cols=16, seed="single")
    single = series.paths[0].read_bytes()
    junk = b"this is not DICOM"
    session = create(api, [
        {"name": "export/two.zip", "size": len(data), "sha256": sha(data)},
        {"name": "export/one.dcm", "size": len(single), "sha256": sha(single)},
        {"name": "export/notes.txt", "size": len(junk)},
    ])
    sid = session["id"]
    for index, payload in enumerate((data, single, junk)):
        offset = 0
        while offset < len(payload):
            offset = put(api, sid, index, offset, payload[offset:offset + 256 * 1024]).json()["received"]
    r = api.post(f"/api/uploads/{sid}/finalize/")
    assert r.status_code == 202 and r.json()["status"] in ("pending", "running", "finished")
    assert api.post(f"/api/uploads/{sid}/finalize/").status_code == 202  # idempotent

    done = wait_for(lambda: UploadSession.objects.filter(pk=sid, status__in=["finished", "failed"]).first(),
                    timeout=90, worker=celery_worker_process, what="the upload's import")
    assert done.status == UploadSessionStatus.FINISHED, done.error
    result = done.result
    assert result["files_seen"] == info.n_files + 2
    assert result["instances_new"] == info.n_files + 1
    assert result["patients"] == 3 and result["series"] == 3
    assert [e["path"] for e in result["ignored"]] == ["export/notes.txt"]  # the client's name, not ours
    assert done.done == done.total == result["files_seen"]
    run = ImportRun.objects.get(pk=done.import_run_id)
    assert run.source_kind == SourceKind.API_UPLOAD and run.instances_new == result["instances_new"]
    assert Instance.objects.filter(sop_instance_uid=series.sop_instance_uids[0]).exists()
    assert not resumable.session_dir(done).exists()  # the uploaded bytes are gone once imported
    state = api.get(f"/api/uploads/{sid}/?files=0").json()
    assert state["finished"] and state["files"] is None and state["result"]["instances_new"] == result["instances_new"]
    assert put(api, sid, 0, 0, data[:10]).status_code == 409


@pytest.mark.django_db
def test_idle_sessions_are_purged(api):
    import datetime

    from django.utils import timezone

    idle = create(api, [{"name": "a", "size": 10}])["id"]
    busy = create(api, [{"name": "b", "size": 10}])["id"]
    for sid in (idle, busy):
        assert put(api, sid, 0, 0, b"01234").status_code == 200
    UploadSession.objects.filter(pk=idle).update(updated_at=timezone.now() - datetime.timedelta(days=8))
    assert resumable.purge_stale() == 1
    idle_row = UploadSession.objects.get(pk=idle)
    assert idle_row.status == UploadSessionStatus.CANCELLED and not resumable.session_dir(idle_row).exists()
    busy_row = UploadSession.objects.get(pk=busy)
    assert busy_row.status == UploadSessionStatus.WAITING and resumable.file_path(busy_row, 0).exists()
