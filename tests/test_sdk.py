"""The SDK over real HTTP (pytest-django ``live_server``) with a REAL Celery worker importing.

Upload a generated series, read it back through the catalog calls, download it (bytes equal).
Interruptions are real failed requests: a transport that delivers a chunk and then loses the
answer, and a client that gives up half way and is resumed by another one.
"""

from __future__ import annotations

import hashlib

import httpx
import pytest

from dicomflow.intake.models import ImportRun, SourceKind, UploadFile
from dicomflow.sdk import ApiError, Client, ImportResult, Series
from dicomflow.testing.synth import PatientSpec, write_image_series, write_zip

pytestmark = pytest.mark.django_db(transaction=True)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def token(admin_user) -> str:
    from dicomflow.accounts.services import create_api_key

    return create_api_key(admin_user, admin_user, name="test")[1]


class LoseAnswers(httpx.HTTPTransport):
    """Sends every request for real, but loses the answer of chunk PUTs number ``lose`` (1-based)."""

    def __init__(self, lose: set[int], stop_after: int | None = None):
        super().__init__()
        self.lose, self.stop_after, self.puts = lose, stop_after, 0

    def handle_request(self, request):
        if request.method == "PUT":
            self.puts += 1
            if self.stop_after is not None and self.puts > self.stop_after:
                raise httpx.ConnectError("network down")
            response = super().handle_request(request)
            if self.puts in self.lose:
                response.close()
                raise httpx.ReadError("connection reset while reading the answer")
            return response
        return super().handle_request(request)


def test_upload_folder_browse_and_download_back(live_server, token, celery_worker_process, tmp_path):
    series = write_image_series(tmp_path / "in" / "CT_1", PatientSpec("SDK-1", "Sdk^Sam"), n_slices=5,
                                rows=64, cols=64, seed="sdk")
    transport = LoseAnswers(lose={2, 5})
    with Client(live_server.url, token=token, chunk_size=3000, transport=transport, retry_wait=0.01) as client:
        stages = []
        result = client.upload(tmp_path / "in", progress=lambda stage, done, total: stages.append((stage, done, total)))
        assert isinstance(result, ImportResult)
        assert (result.files_seen, result.instances_new, result.series) == (5, 5, 1)
        assert transport.puts > 5 * 2  # several chunks per file, two answers lost and recovered
        assert stages[-1][0] == "import" and ("upload", sum(p.stat().st_size for p in series.paths),
                                              sum(p.stat().st_size for p in series.paths)) in stages
        assert ImportRun.objects.get(pk=result.import_run).source_kind == SourceKind.API_UPLOAD

        patients = client.patients(patient_id="SDK-1")
        assert [p.patient_name for p in patients] == ["Sdk^Sam"]
        studies = client.studies(patient=patients[0].id)
        assert [s.study_instance_uid for s in studies] == [series.study_uid]
        listed = client.series(study_uid=series.study_uid)
        assert [s.series_instance_uid for s in listed] == [series.series_uid]
        detail = client.get_series(series.series_uid)
        assert isinstance(detail, Series) and detail.image["slices"] == 5 and detail.instance_count == 5
        assert len(client.instances(series_uid=series.series_uid)) == 5
        assert client.imports(limit=1)[0].id == result.import_run

        written = client.download_series(series.series_uid, tmp_path / "out")
        assert sorted(digest(p) for p in written) == sorted(digest(p) for p in series.paths)
        archive = client.download_series(series.series_uid, tmp_path / "series.zip")[0]
        assert archive.stat().st_size > sum(p.stat().st_size for p in series.paths)

        with pytest.raises(ApiError) as err:
            client.get_series("1.2.3.999")
        assert err.value.status == 404

        from dicomflow.catalog.models import Series as SeriesRow
        from dicomflow.processing.services import create_job

        made = create_job(project_key="SDK-PROJ", series_id=SeriesRow.objects.get(series_instance_uid=series.series_uid).pk)
        assert [(j.id, j.series_instance_uid) for j in client.jobs()] == [(made.pk, series.series_uid)]
        job = client.job(made.pk)
        assert job.status == "pending" and job.stages[0]["name"] == "uploading"
        assert [e["message"] for e in client.job_log(made.pk)] == ["job created"]


def test_interrupted_upload_is_resumed_by_another_client(live_server, token, celery_worker_process, tmp_path):
    series = write_image_series(tmp_path / "ct", PatientSpec("SDK-2", "Sdk^Sue"), n_slices=2, rows=64, cols=64,
                                seed="sdk-resume")
    archive = write_zip(tmp_path / "ct.zip", series.paths)
    dying = Client(live_server.url, token=token, chunk_size=2048, retries=0,
                   transport=LoseAnswers(lose=set(), stop_after=2))
    with pytest.raises(httpx.ConnectError):
        dying.upload(archive)
    dying.close()
    row = UploadFile.objects.get(name="ct.zip", session__status="waiting")
    assert 0 < row.received == 2 * 2048 < row.size

    with Client(live_server.url, token=token, chunk_size=2048) as client:
        result = client.upload(archive, session=str(row.session_id))
        assert (result.files_seen, result.instances_new) == (2, 2)
        written = client.download_series(series.series_uid, tmp_path / "back")
        assert sorted(digest(p) for p in written) == sorted(digest(p) for p in series.paths)
    row.refresh_from_db()
    assert row.complete and row.sha256 == digest(archive)


def test_errors_carry_the_server_message(live_server, token, tmp_path, settings):
    settings.DICOMFLOW_UPLOAD_MAX_BYTES = 10
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 100)
    with Client(live_server.url, token=token) as client:
        with pytest.raises(ApiError) as err:
            client.upload(big)
    assert err.value.status == 413 and "at most 10 bytes" in err.value.message
    with Client(live_server.url, token="not-a-token") as client, pytest.raises(ApiError) as err:
        client.patients()
    assert err.value.status == 401 and "api key" in err.value.message.lower()
    logged_in = Client.login(live_server.url, "admin", "password")
    assert logged_in.patients() == []
    logged_in.close()


class CorruptFirstChunk(httpx.HTTPTransport):
    """Flips one byte of the first chunk on its way to the server (a corrupting network or disk)."""

    def __init__(self):
        super().__init__()
        self.corrupted = 0

    def handle_request(self, request):
        if request.method == "PUT" and not self.corrupted:
            self.corrupted += 1
            body = bytearray(request.read())
            body[len(body) // 2] ^= 0xFF
            request = httpx.Request(request.method, request.url, headers=request.headers, content=bytes(body))
        return super().handle_request(request)


def test_corrupted_bytes_are_caught_by_the_checksum_and_sent_again(live_server, token, celery_worker_process, tmp_path):
    series = write_image_series(tmp_path / "ct", PatientSpec("SDK-3", "Sdk^Sid"), n_slices=1, rows=32, cols=32,
                                seed="sdk-corrupt")
    transport = CorruptFirstChunk()
    with Client(live_server.url, token=token, transport=transport) as client:
        result = client.upload(series.paths[0])
        assert transport.corrupted == 1 and result.instances_new == 1
        [back] = client.download_series(series.series_uid, tmp_path / "back")
    assert digest(back) == digest(series.paths[0])
